//! CloudEvents attributes beyond the required ones: `datacontenttype`, `dataschema`,
//! `data_base64`, and extension attributes (`traceparent`, `tracestate`, anything a producer
//! adds), checked once when an event is accepted so handlers can rely on them.
//!
//! The rules follow the CloudEvents 1.0 JSON format: `data` and `data_base64` are exclusive;
//! `data_base64` carries bytes, decoded here when `datacontenttype` says they are JSON (so a
//! JSON payload looks the same to handlers whichever way it came); extension values are strings,
//! numbers or booleans, under lower-case alphanumeric names.
//!
//! A new event also follows the rules a lax reader let through (issue 17): the CloudEvents
//! `String` rule (no control characters, no noncharacters) for every string attribute, `time` in
//! RFC 3339 proper (offsets within ±23:59), a media-type `datacontenttype` that is JSON for the
//! typed events, a bounded `type`, and objects wherever a typed payload has a record. Each check
//! reads the attributes already parsed: none parses the body again.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::{EventError, Kind};

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

/// Longest extension attribute value, in bytes (a `tracestate` is at most 512 bytes).
pub const MAX_EXTENSION_BYTES: usize = 4096;
/// Most extension attributes one event may carry.
pub const MAX_EXTENSIONS: usize = 64;

/// Whether a `datacontenttype` (or HTTP `content-type`) denotes JSON: `application/json`,
/// `text/json`, or any `+json` media type, whatever its parameters.
pub fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rules {
    /// An event being accepted: every rule.
    New,
    /// An event read back from the outbox: accepted once, perhaps under looser rules of an
    /// earlier version, so its extension attributes are delivered as they are.
    Stored,
}

/// Checks the optional and extension attributes in place; decodes JSON `data_base64` into
/// `data`.
pub(super) fn check(attrs: &mut Map<String, Value>, rules: Rules) -> Result<(), EventError> {
    for name in ["datacontenttype", "dataschema"] {
        match attrs.get(name) {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(EventError::invalid(format!("`{name}` must be a string"))),
        }
    }
    let content_type = attrs
        .get("datacontenttype")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Named before the payload is read by it (RFC 2046: type/subtype).
    if rules == Rules::New
        && let Some(content_type) = content_type.as_deref()
        && !media_type(content_type)
    {
        return Err(EventError::invalid(format!(
            "`datacontenttype` {:?} is not a media type (RFC 2046): write type/subtype, e.g. application/json",
            truncated(content_type)
        )));
    }
    let typed = attrs
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| super::kind_of(t).is_some_and(|k| k != Kind::Custom));
    if rules == Rules::New
        && let (Some(event_type), Some(content_type)) = (typed, content_type.as_deref())
        && essence(content_type) != "application/json"
    {
        return Err(EventError::invalid(format!(
            "`datacontenttype` is {:?} but the `data` of a {event_type} event is JSON: send application/json or leave it out",
            truncated(content_type)
        )));
    }
    let json = content_type.as_deref().is_none_or(is_json);

    if let Some(encoded) = attrs.get("data_base64") {
        if attrs.contains_key("data") {
            return Err(EventError::invalid(
                "`data` and `data_base64` are both present; send the payload in one of them",
            ));
        }
        let Value::String(encoded) = encoded else {
            return Err(EventError::invalid(
                "`data_base64` must be a string of base64",
            ));
        };
        let bytes = BASE64.decode(encoded).map_err(|e| {
            EventError::decode(format!("`data_base64` is not valid base64: {e}"), e)
        })?;
        // Bytes of unknown type stay bytes; JSON bytes become `data`, as binary mode makes them.
        if content_type.as_deref().is_some_and(is_json) {
            let data: Value = serde_json::from_slice(&bytes).map_err(|e| {
                let message = format!(
                    "`data_base64` does not hold JSON although `datacontenttype` is {:?}: {e}",
                    content_type.as_deref().unwrap_or_default()
                );
                EventError::json(message, e)
            })?;
            attrs.remove("data_base64");
            attrs.insert("data".into(), data);
        }
    } else if !json && attrs.get("data").is_some_and(|d| !d.is_string()) {
        return Err(EventError::invalid(format!(
            "`data` must be a string when `datacontenttype` is {:?} (not JSON); send bytes as `data_base64`",
            content_type.as_deref().unwrap_or_default()
        )));
    }

    if rules == Rules::Stored {
        return Ok(());
    }
    for name in ["source", "type", "subject", "datacontenttype", "dataschema"] {
        if let Some(Value::String(text)) = attrs.get(name) {
            cloudevents_string(name, text)?;
        }
    }
    let event_type = attrs.get("type").and_then(Value::as_str);
    if let Some(event_type) = event_type.filter(|t| t.len() > MAX_TYPE_BYTES) {
        return Err(EventError::invalid(format!(
            "`type` is {} bytes long; the most is {MAX_TYPE_BYTES}: keep it short, e.g. com.example.order.placed",
            event_type.len()
        )));
    }
    if let Some(time) = attrs.get("time").and_then(Value::as_str)
        && !rfc3339(time)
    {
        return Err(EventError::invalid(format!(
            "`time` {:?} is not an RFC 3339 timestamp: write YYYY-MM-DDThh:mm:ss, an optional \
             .fraction, then Z or an offset ±hh:mm (hours 00-23)",
            truncated(time)
        )));
    }
    if let Some(event_type) = event_type
        && let Some(kind) = super::kind_of(event_type).filter(|k| *k != Kind::Custom)
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
            return Err(EventError::invalid(format!(
                "the event carries more than {MAX_EXTENSIONS} extension attributes"
            )));
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(EventError::invalid(format!(
                "extension attribute {:?}: names are lower-case letters and digits (at most 64)",
                truncated(name)
            )));
        }
        match value {
            Value::String(s) if s.len() > MAX_EXTENSION_BYTES => {
                return Err(EventError::invalid(format!(
                    "extension attribute `{name}` is {} bytes long; the most is {MAX_EXTENSION_BYTES}",
                    s.len()
                )));
            }
            Value::String(s) => cloudevents_string(name, s)?,
            Value::Bool(_) | Value::Number(_) => {}
            _ => {
                return Err(EventError::invalid(format!(
                    "extension attribute `{name}` must be a string, a number or a boolean"
                )));
            }
        }
    }
    if let Some(traceparent) = attrs.get("traceparent") {
        let valid = traceparent
            .as_str()
            .is_some_and(|t| crate::trace::TraceParent::parse(t).is_some());
        if !valid {
            return Err(EventError::invalid(
                "extension attribute `traceparent` is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
            ));
        }
    }
    if attrs.get("tracestate").is_some_and(|t| !t.is_string()) {
        return Err(EventError::invalid(
            "extension attribute `tracestate` must be a string",
        ));
    }
    Ok(())
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Longest `type` accepted, in bytes: it names spans and is matched by every handler's `events`.
pub const MAX_TYPE_BYTES: usize = 256;

/// The CloudEvents `String` rule: no control characters (U+0000-U+001F, U+007F-U+009F) and no
/// Unicode noncharacters. (JSON text cannot carry unpaired surrogates into a Rust string.)
fn cloudevents_string(name: &str, text: &str) -> Result<(), EventError> {
    let noncharacter = |c: char| {
        let c = u32::from(c);
        (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
    };
    match text.chars().find(|&c| c.is_control() || noncharacter(c)) {
        None => Ok(()),
        Some(bad) => Err(EventError::invalid(format!(
            "`{name}` contains U+{:04X}: CloudEvents strings may not hold control characters or Unicode noncharacters",
            u32::from(bad)
        ))),
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

/// Where a typed payload holds a record (a struct in `event.rs`), its JSON must be an object:
/// serde reads a list as the record's fields in order, so `"repository": ["x"]` would pass as
/// a repository whose URL is `x`. Other mistakes are left to serde, which names them.
fn records(kind: Kind, event_type: &str, data: &Value) -> Result<(), EventError> {
    let list = |path: &str| {
        EventError::invalid(format!(
            "`data` of a {event_type} event: {path} is a list where an object is expected; run `hookwasm events` for the schema"
        ))
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

/// The payload handlers of a custom event get as JSON text: `data` as JSON, or, for bytes,
/// the JSON string of their base64.
pub(super) fn custom_payload(attrs: &Map<String, Value>) -> String {
    match (attrs.get("data"), attrs.get("data_base64")) {
        (Some(data), _) => data.to_string(),
        (None, Some(encoded)) => encoded.to_string(),
        (None, None) => Value::Null.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_is_rfc_3339_and_offsets_stay_within_a_day() {
        for good in [
            "2026-11-22T10:00:00Z",
            "2026-11-22t10:00:00z",
            "2026-11-22T10:00:00.123456789+01:00",
            "2026-11-22T23:59:60-23:59",
            "2026-11-22T10:00:00-00:00",
        ] {
            assert!(rfc3339(good), "{good}");
        }
        for bad in [
            "2026-11-22T10:00:00+25:00",
            "2026-11-22T10:00:00+24:00",
            "2026-11-22T10:00:00+01:60",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00",
            "2026-11-22 10:00:00Z",
            "2026-11-22T10:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0100",
            "2026-11-22T10:00:00+01",
            "2026-11-22T10:00:00+01:00:00",
            "2026-13-22T10:00:00Z",
            "+002026-11-22T10:00:00Z",
            "2026-W47-7T10:00:00Z",
            "2026-11-22T10:00:00Z[Europe/Paris]",
            "",
        ] {
            assert!(!rfc3339(bad), "{bad}");
        }
    }

    /// What passes the grammar is a time the host reads, leap second and unknown offset included;
    /// an event stored under the earlier, looser rules is still delivered.
    #[test]
    fn rfc_3339_times_parse_and_stored_events_keep_their_old_form() {
        use super::super::Event;
        for time in [
            "2026-11-22t10:00:00.5z",
            "2026-12-31T23:59:60Z",
            "2026-11-22T10:00:00-00:00",
        ] {
            let event = json!({"specversion": "1.0", "id": "t", "source": "s", "type": "acme.a.b", "time": time});
            assert!(Event::from_json(event).is_ok(), "{time}");
        }
        let old = json!({"specversion": "1.0", "id": "evt.1", "source": "s", "type": "acme.a.b",
                         "time": "2026-11-22T10:00:00+25:00", "subject": "a\nb"});
        assert!(Event::from_json(old.clone()).is_err());
        assert!(Event::from_stored(old.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn media_types_are_type_slash_subtype() {
        for good in [
            "application/json",
            "text/plain; charset=utf-8",
            "Application/Vnd.Acme+JSON",
        ] {
            assert!(media_type(good), "{good}");
        }
        for bad in [
            "json",
            "",
            "application/",
            "/json",
            "text/plain/x",
            "a b/c",
            "*/*",
        ] {
            assert!(!media_type(bad), "{bad}");
        }
    }

    /// The list of record fields is the data model's: every field whose schema is a struct (or
    /// a list of structs), and no other.
    #[test]
    fn record_fields_are_the_structs_of_the_payload_types() {
        use super::super::{ProxyActionData, PushRejectedData, RefUpdateData, wit};
        let structs = |schema: schemars::Schema| -> Vec<String> {
            let schema = schema.to_value();
            let is_struct = |s: &Value| {
                s.get("$ref").is_some()
                    || s.get("anyOf")
                        .and_then(Value::as_array)
                        .is_some_and(|any| any.iter().any(|a| a.get("$ref").is_some()))
            };
            let mut fields: Vec<String> = schema["properties"]
                .as_object()
                .expect("properties")
                .iter()
                .filter_map(|(name, s)| {
                    if is_struct(s) {
                        Some(name.clone())
                    } else if s["type"] == "array" && is_struct(&s["items"]) {
                        Some(format!("{name}[]"))
                    } else {
                        None
                    }
                })
                .collect();
            fields.sort();
            fields
        };
        let listed = |kind: Kind| {
            let mut fields: Vec<String> =
                record_fields(kind).iter().map(|f| f.to_string()).collect();
            fields.sort();
            fields
        };
        assert_eq!(
            structs(schemars::schema_for!(ProxyActionData)),
            listed(Kind::ProxyAction(wit::Operation::Push, wit::Phase::Started))
        );
        assert_eq!(
            structs(schemars::schema_for!(RefUpdateData)),
            listed(Kind::RefUpdate(
                wit::RefKind::Branch,
                wit::RefChange::Created
            ))
        );
        assert_eq!(
            structs(schemars::schema_for!(PushRejectedData)),
            listed(Kind::PushRejected)
        );
    }

    fn checked(mut event: Value) -> Result<(), String> {
        let attrs = event.as_object_mut().expect("object");
        check(attrs, Rules::New).map_err(|e| e.to_string())
    }

    #[test]
    fn typed_events_carry_records_as_objects_and_their_data_as_json() {
        let push = |data: Value, content_type: Option<&str>| {
            let mut event = json!({"specversion": "1.0", "id": "p", "source": "s",
                                   "type": "push.started", "data": data});
            if let Some(c) = content_type {
                event["datacontenttype"] = json!(c);
            }
            checked(event)
        };
        let good = json!({"actionId": "a", "repository": {"url": "u"}, "steps": [{"name": "n", "passed": true}]});
        assert_eq!(push(good.clone(), None), Ok(()));
        assert_eq!(
            push(good.clone(), Some("application/json; charset=utf-8")),
            Ok(())
        );
        let refused = push(good, Some("application/vnd.acme+json")).expect_err("not JSON");
        assert!(refused.starts_with("`datacontenttype` is \"application/vnd.acme+json\" but the `data` of a push.started event is JSON"), "{refused}");
        for (data, at) in [
            (json!(["a", {"url": "u"}]), "`data`"),
            (
                json!({"actionId": "a", "repository": ["x"]}),
                "`repository`",
            ),
            (
                json!({"actionId": "a", "repository": {"url": "u"}, "user": ["ada"]}),
                "`user`",
            ),
            (
                json!({"actionId": "a", "repository": {"url": "u"}, "steps": [{"name": "n", "passed": true}, ["n", true]]}),
                "`steps[1]`",
            ),
            (
                json!({"actionId": "a", "repository": {"url": "u"}, "commits": [["m"]]}),
                "`commits[0]`",
            ),
        ] {
            assert_eq!(
                push(data, None),
                Err(format!(
                    "`data` of a push.started event: {at} is a list where an object is expected; run `hookwasm events` for the schema"
                ))
            );
        }
        // A custom event's data is its own business.
        let custom = json!({"specversion": "1.0", "id": "c", "source": "s", "type": "acme.a.b",
                            "datacontenttype": "application/vnd.acme+json", "data": {"repository": ["x"]}});
        assert_eq!(checked(custom), Ok(()));
    }

    #[test]
    fn strings_hold_no_control_characters_or_noncharacters() {
        let base = json!({"specversion": "1.0", "id": "x", "source": "s", "type": "acme.a.b"});
        for (name, value, shown) in [
            ("subject", "a\nb", "U+000A"),
            ("source", "s\u{85}", "U+0085"),
            ("type", "acme.\u{7f}", "U+007F"),
            ("subject", "x\u{FFFE}", "U+FFFE"),
            ("subject", "x\u{FDD0}", "U+FDD0"),
            ("ext", "tab\there", "U+0009"),
        ] {
            let mut event = base.clone();
            event[name] = json!(value);
            let refused = checked(event).expect_err(name);
            assert!(
                refused.starts_with(&format!("`{name}` contains {shown}: CloudEvents strings")),
                "{refused}"
            );
        }
        let mut fine = base.clone();
        fine["subject"] = json!("café 🚀 refs/heads/main");
        assert_eq!(checked(fine), Ok(()));
        let mut long = base;
        long["type"] = json!("a".repeat(MAX_TYPE_BYTES + 1));
        assert!(
            checked(long)
                .expect_err("long")
                .starts_with("`type` is 257 bytes long")
        );
    }
}
