//! The host's CloudEvents attribute rules (host/src/event/attributes.rs), for native tests:
//! `datacontenttype`, `data_base64`, `time`, the CloudEvents string rule, extension attributes,
//! and typed payloads' records as objects. Same rules and messages;
//! `host/src/sdk_agreement.rs` checks both on the same inputs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::from_json::{Kind, kind_of};

/// The attributes the specification defines; every other one is an extension.
const CORE: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];
const MAX_EXTENSION_BYTES: usize = 4096;
const MAX_EXTENSIONS: usize = 64;

fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Checks the optional and extension attributes in place, as the host does for a new event;
/// decodes JSON `data_base64` into `data`.
pub(super) fn check(attrs: &mut Map<String, Value>) -> Result<(), String> {
    for name in ["datacontenttype", "dataschema"] {
        match attrs.get(name) {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(format!("`{name}` must be a string")),
        }
    }
    let content_type = attrs
        .get("datacontenttype")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Named before the payload is read by it (RFC 2046: type/subtype).
    if let Some(content_type) = content_type.as_deref()
        && !media_type(content_type)
    {
        return Err(format!(
            "`datacontenttype` {:?} is not a media type (RFC 2046): write type/subtype, e.g. application/json",
            truncated(content_type)
        ));
    }
    let typed = attrs
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| kind_of(t).is_some_and(|k| k != Kind::Custom));
    if let (Some(event_type), Some(content_type)) = (typed, content_type.as_deref())
        && essence(content_type) != "application/json"
    {
        return Err(format!(
            "`datacontenttype` is {:?} but the `data` of a {event_type} event is JSON: send application/json or leave it out",
            truncated(content_type)
        ));
    }
    let json = content_type.as_deref().is_none_or(is_json);
    if let Some(encoded) = attrs.get("data_base64") {
        if attrs.contains_key("data") {
            return Err(
                "`data` and `data_base64` are both present; send the payload in one of them".into(),
            );
        }
        let Value::String(encoded) = encoded else {
            return Err("`data_base64` must be a string of base64".into());
        };
        let bytes = BASE64
            .decode(encoded)
            .map_err(|e| format!("`data_base64` is not valid base64: {e}"))?;
        if content_type.as_deref().is_some_and(is_json) {
            let data: Value = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "`data_base64` does not hold JSON although `datacontenttype` is {:?}: {e}",
                    content_type.as_deref().unwrap_or_default()
                )
            })?;
            attrs.remove("data_base64");
            attrs.insert("data".into(), data);
        }
    } else if !json && attrs.get("data").is_some_and(|d| !d.is_string()) {
        return Err(format!(
            "`data` must be a string when `datacontenttype` is {:?} (not JSON); send bytes as `data_base64`",
            content_type.as_deref().unwrap_or_default()
        ));
    }
    for name in ["source", "type", "subject", "datacontenttype", "dataschema"] {
        if let Some(Value::String(text)) = attrs.get(name) {
            cloudevents_string(name, text)?;
        }
    }
    let event_type = attrs.get("type").and_then(Value::as_str);
    if let Some(event_type) = event_type.filter(|t| t.len() > MAX_TYPE_BYTES) {
        return Err(format!(
            "`type` is {} bytes long; the most is {MAX_TYPE_BYTES}: keep it short, e.g. com.example.order.placed",
            event_type.len()
        ));
    }
    if let Some(time) = attrs.get("time").and_then(Value::as_str)
        && !rfc3339(time)
    {
        return Err(format!(
            "`time` {:?} is not an RFC 3339 timestamp: write YYYY-MM-DDThh:mm:ss, an optional \
             .fraction, then Z or an offset ±hh:mm (hours 00-23)",
            truncated(time)
        ));
    }
    if let Some(event_type) = event_type
        && let Some(kind) = kind_of(event_type).filter(|k| *k != Kind::Custom)
        && let Some(data) = attrs.get("data")
    {
        records(kind, event_type, data)?;
    }
    let mut extensions = 0;
    for (name, value) in attrs.iter() {
        if CORE.contains(&name.as_str()) {
            continue;
        }
        extensions += 1;
        if extensions > MAX_EXTENSIONS {
            return Err(format!(
                "the event carries more than {MAX_EXTENSIONS} extension attributes"
            ));
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "extension attribute {:?}: names are lower-case letters and digits (at most 64)",
                truncated(name)
            ));
        }
        match value {
            Value::String(s) if s.len() > MAX_EXTENSION_BYTES => {
                return Err(format!(
                    "extension attribute `{name}` is {} bytes long; the most is {MAX_EXTENSION_BYTES}",
                    s.len()
                ));
            }
            Value::String(s) => cloudevents_string(name, s)?,
            Value::Bool(_) | Value::Number(_) => {}
            _ => {
                return Err(format!(
                    "extension attribute `{name}` must be a string, a number or a boolean"
                ));
            }
        }
    }
    if let Some(traceparent) = attrs.get("traceparent")
        && !traceparent.as_str().is_some_and(valid_traceparent)
    {
        return Err(
            "extension attribute `traceparent` is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
                .into(),
        );
    }
    if attrs.get("tracestate").is_some_and(|t| !t.is_string()) {
        return Err("extension attribute `tracestate` must be a string".into());
    }
    Ok(())
}

/// The W3C `traceparent` rules the host applies.
fn valid_traceparent(text: &str) -> bool {
    let mut parts = text.trim().split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    lower_hex(version, 2)
        && version != "ff"
        && lower_hex(flags, 2)
        && !(version == "00" && parts.next().is_some())
        && lower_hex(trace, 32)
        && lower_hex(span, 16)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0')
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Longest `type` accepted, in bytes: it names spans and is matched by every handler's `events`.
const MAX_TYPE_BYTES: usize = 256;

/// The CloudEvents `String` rule: no control characters (U+0000-U+001F, U+007F-U+009F) and no
/// Unicode noncharacters. (JSON text cannot carry unpaired surrogates into a Rust string.)
fn cloudevents_string(name: &str, text: &str) -> Result<(), String> {
    let noncharacter = |c: char| {
        let c = u32::from(c);
        (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
    };
    match text.chars().find(|&c| c.is_control() || noncharacter(c)) {
        None => Ok(()),
        Some(bad) => Err(format!(
            "`{name}` contains U+{:04X}: CloudEvents strings may not hold control characters or Unicode noncharacters",
            u32::from(bad)
        )),
    }
}

/// Whether `time` is an RFC 3339 `date-time`: `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`, hours
/// 00-23 in the time and the offset alike (a parser that reads ISO 8601 more loosely would take
/// `+25:00`, a week date or a missing offset). The calendar itself is checked when it is parsed.
fn rfc3339(time: &str) -> bool {
    let b = time.as_bytes();
    let number = |at: usize, len: usize, max: u32| {
        b.get(at..at + len).is_some_and(|digits| {
            digits.iter().all(u8::is_ascii_digit)
                && digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')) <= max
        })
    };
    let at = |i: usize, expected: &[u8]| b.get(i).is_some_and(|c| expected.contains(c));
    let date_time = number(0, 4, 9999)
        && at(4, b"-")
        && number(5, 2, 12)
        && at(7, b"-")
        && number(8, 2, 31)
        && at(10, b"Tt")
        && number(11, 2, 23)
        && at(13, b":")
        && number(14, 2, 59)
        && at(16, b":")
        && number(17, 2, 60);
    if !date_time {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] if rest.len() == 6 => {
            let offset = b.len() - 5;
            number(offset, 2, 23) && at(offset + 2, b":") && number(offset + 3, 2, 59)
        }
        _ => false,
    }
}

/// A media type's `type/subtype`, lower-case, without parameters.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether `content_type` starts with a `type/subtype` of RFC 6838 restricted names.
fn media_type(content_type: &str) -> bool {
    let name = |part: &str| {
        let bytes = part.as_bytes();
        (1..=127).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    essence(content_type)
        .split_once('/')
        .is_some_and(|(top, sub)| name(top) && name(sub))
}

/// The fields of a typed payload that hold a record (`name`) or a list of records (`name[]`).
fn record_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::ProxyAction(..) => &["repository", "user", "steps[]", "commits[]"],
        Kind::RefUpdate(..) | Kind::PushRejected => &["repository", "pusher"],
        Kind::Custom => &[],
    }
}

/// Where a typed payload holds a record (a struct in `from_json.rs`), its JSON must be an object:
/// serde reads a list as the record's fields in order, so `"repository": ["x"]` would pass as
/// a repository whose URL is `x`. Other mistakes are left to serde, which names them.
fn records(kind: Kind, event_type: &str, data: &Value) -> Result<(), String> {
    let list = |path: &str| {
        format!(
            "`data` of a {event_type} event: {path} is a list where an object is expected; run `hookwasm events` for the schema"
        )
    };
    if data.is_array() {
        return Err(list("`data`"));
    }
    for field in record_fields(kind) {
        match field.strip_suffix("[]") {
            None if data.get(field).is_some_and(Value::is_array) => {
                return Err(list(&format!("`{field}`")));
            }
            None => {}
            Some(name) => {
                let items = data.get(name).and_then(Value::as_array);
                if let Some(at) = items.and_then(|i| i.iter().position(Value::is_array)) {
                    return Err(list(&format!("`{name}[{at}]`")));
                }
            }
        }
    }
    Ok(())
}

/// A custom event's payload as handlers get it: `data` as JSON, or the JSON string of the
/// base64 of bytes.
pub(super) fn custom_payload(attrs: &Map<String, Value>) -> String {
    match (attrs.get("data"), attrs.get("data_base64")) {
        (Some(data), _) => data.to_string(),
        (None, Some(encoded)) => encoded.to_string(),
        (None, None) => Value::Null.to_string(),
    }
}
