//! CloudEvents attributes beyond the required ones: `datacontenttype`, `dataschema`,
//! `data_base64`, and extension attributes (`traceparent`, `tracestate`, anything a producer
//! adds), checked once when an event is accepted so handlers can rely on them.
//!
//! The rules follow the CloudEvents 1.0 JSON format: `data` and `data_base64` are exclusive;
//! `data_base64` carries bytes, decoded here when `datacontenttype` says they are JSON (so a
//! JSON payload looks the same to handlers whichever way it came); extension values are strings,
//! numbers or booleans, under lower-case alphanumeric names.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::EventError;

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
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
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
            Some(_) => return Err(EventError(format!("`{name}` must be a string"))),
        }
    }
    let content_type = attrs
        .get("datacontenttype")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let json = content_type.as_deref().is_none_or(is_json);

    if let Some(encoded) = attrs.get("data_base64") {
        if attrs.contains_key("data") {
            return Err(EventError(
                "`data` and `data_base64` are both present; send the payload in one of them".into(),
            ));
        }
        let Value::String(encoded) = encoded else {
            return Err(EventError(
                "`data_base64` must be a string of base64".into(),
            ));
        };
        let bytes = BASE64
            .decode(encoded)
            .map_err(|e| EventError(format!("`data_base64` is not valid base64: {e}")))?;
        // Bytes of unknown type stay bytes; JSON bytes become `data`, as binary mode makes them.
        if content_type.as_deref().is_some_and(is_json) {
            let data: Value = serde_json::from_slice(&bytes).map_err(|e| {
                EventError(format!(
                    "`data_base64` does not hold JSON although `datacontenttype` is {:?}: {e}",
                    content_type.as_deref().unwrap_or_default()
                ))
            })?;
            attrs.remove("data_base64");
            attrs.insert("data".into(), data);
        }
    } else if !json && attrs.get("data").is_some_and(|d| !d.is_string()) {
        return Err(EventError(format!(
            "`data` must be a string when `datacontenttype` is {:?} (not JSON); send bytes as `data_base64`",
            content_type.as_deref().unwrap_or_default()
        )));
    }

    if rules == Rules::Stored {
        return Ok(());
    }
    let mut extensions = 0;
    for (name, value) in attrs.iter() {
        if CORE.contains(&name.as_str()) {
            continue;
        }
        extensions += 1;
        if extensions > MAX_EXTENSIONS {
            return Err(EventError(format!(
                "the event carries more than {MAX_EXTENSIONS} extension attributes"
            )));
        }
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(EventError(format!(
                "extension attribute {:?}: names are lower-case letters and digits (at most 64)",
                truncated(name)
            )));
        }
        match value {
            Value::String(s) if s.len() > MAX_EXTENSION_BYTES => {
                return Err(EventError(format!(
                    "extension attribute `{name}` is {} bytes long; the most is {MAX_EXTENSION_BYTES}",
                    s.len()
                )));
            }
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {}
            _ => {
                return Err(EventError(format!(
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
            return Err(EventError(
                "extension attribute `traceparent` is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
                    .into(),
            ));
        }
    }
    if attrs.get("tracestate").is_some_and(|t| !t.is_string()) {
        return Err(EventError(
            "extension attribute `tracestate` must be a string".into(),
        ));
    }
    Ok(())
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
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
