//! The host's CloudEvents attribute rules (host/src/event/attributes.rs), for native tests:
//! `datacontenttype`, `data_base64`, extension attributes. Same rules and messages;
//! `host/src/sdk_agreement.rs` checks both on the same inputs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

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
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
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
                name.chars().take(40).collect::<String>()
            ));
        }
        match value {
            Value::String(s) if s.len() > MAX_EXTENSION_BYTES => {
                return Err(format!(
                    "extension attribute `{name}` is {} bytes long; the most is {MAX_EXTENSION_BYTES}",
                    s.len()
                ));
            }
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {}
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

/// A custom event's payload as handlers get it: `data` as JSON, or the JSON string of the
/// base64 of bytes.
pub(super) fn custom_payload(attrs: &Map<String, Value>) -> String {
    match (attrs.get("data"), attrs.get("data_base64")) {
        (Some(data), _) => data.to_string(),
        (None, Some(encoded)) => encoded.to_string(),
        (None, None) => Value::Null.to_string(),
    }
}
