//! The CloudEvents 1.0 HTTP protocol binding for `POST /v1/events`: which mode a request is in,
//! and the events it carries.
//!
//! | mode | how it is recognised | what it carries |
//! |---|---|---|
//! | structured | `content-type: application/cloudevents+json`, or a JSON object as `application/json` | one event in the JSON format |
//! | binary | `ce-specversion` header (and no structured content type) | attributes in `ce-*` headers, the body as `data`, `content-type` as `datacontenttype` |
//! | batch | `content-type: application/cloudevents-batch+json` | a JSON array of events; each is accepted or refused on its own |
//! | array | a JSON array as `application/json` (hookwasm's own form, kept) | all events, or none if one is invalid |
//!
//! Any other content type, or none, is refused with 415 naming these, before the body is read.
//!
//! The W3C `traceparent`/`tracestate` headers give the trace context of events that carry none
//! as extension attributes; it is stored with them (see [`crate::trace`]). Every error names the
//! mode and the attribute or header at fault.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::registry::{Refusal, Registry};
use crate::event::{Event, is_json};
use crate::trace::{IngestSpan, TraceParent};

/// Most events one request may carry.
pub const MAX_BATCH: usize = 1_000;

/// Longest header value read as a CloudEvents attribute, in bytes.
const MAX_HEADER_BYTES: usize = 8 << 10;

/// The structured-mode content type (JSON event format).
const STRUCTURED: &str = "application/cloudevents+json";
/// The batched-mode content type.
const BATCH: &str = "application/cloudevents-batch+json";

/// How a request carried its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One event, JSON event format in the body.
    Structured,
    /// One event, attributes in `ce-*` headers, `data` in the body.
    Binary,
    /// Many events, each accepted or refused on its own.
    Batch,
    /// Many events as a plain JSON array: all or none.
    Array,
}

impl Mode {
    /// The mode's name in answers and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Structured => "structured",
            Mode::Binary => "binary",
            Mode::Batch => "batch",
            Mode::Array => "array",
        }
    }
}

/// Why a request, or one event of a batch, was refused; answered as 400 with these fields.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// One sentence: what is wrong and what to do.
    pub error: String,
    /// The mode the request was read in.
    pub mode: Mode,
    /// Where a schema check failed: JSON pointer within the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The schema rule it broke: JSON pointer within the schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The HTTP status to answer with: 400, or 415 for a content type hookwasm does not read.
    #[serde(skip)]
    pub status: StatusCode,
}

impl Refused {
    fn new(mode: Mode, error: impl Into<String>) -> Refused {
        Refused {
            error: format!("{} mode: {}", mode.as_str(), error.into()),
            mode,
            pointer: None,
            rule: None,
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// A request whose `content-type` is not one hookwasm reads (415).
    fn unsupported(content_type: &str) -> Refused {
        let said = match content_type {
            "" => "the request has no content-type".to_owned(),
            other => format!(
                "content-type {:?} is not an event format hookwasm reads",
                clip(other, 100)
            ),
        };
        Refused {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..Refused::new(
                Mode::Structured,
                format!(
                    "{said}; send {STRUCTURED} (one event), \
                     {BATCH} (a batch), application/json (one event or an array of them), or binary \
                     mode (a ce-specversion header, the other attributes in ce-* headers, the data \
                     as the body)"
                ),
            )
        }
    }
}

/// One event of a request, accepted for dispatch (with its ingest span running) or refused.
#[derive(Debug)]
pub enum Item {
    /// Valid: to be submitted.
    Accepted(Event, IngestSpan),
    /// Refused; nothing of it is stored.
    Refused {
        /// Its `id`, when it had one.
        id: Option<String>,
        /// Why.
        refused: Refused,
    },
}

/// What one request carries.
#[derive(Debug)]
pub struct Request {
    /// How it carried its events.
    pub mode: Mode,
    /// Its events, in order.
    pub items: Vec<Item>,
}

/// Reads a request's events as its mode prescribes, checks each (CloudEvents rules, then the
/// registry), and starts an ingest span for each valid one. A request that cannot be read at
/// all is refused as a whole; so is an array (or a structured or binary event) with any
/// invalid event. A batch keeps its invalid events as refused items.
pub fn read(headers: &HeaderMap, body: &[u8], registry: &Registry) -> Result<Request, Refused> {
    let content_type =
        single_header(headers, "content-type").map_err(|e| Refused::new(Mode::Structured, e))?;
    let essence = content_type
        .as_deref()
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    // The event formats first (the HTTP binding: a structured content type wins over ce-*
    // headers), then binary mode, whose content-type is the data's, then hookwasm's own JSON.
    let binary = headers.contains_key("ce-specversion");
    let (mode, values) = if essence == BATCH {
        (Mode::Batch, array(Mode::Batch, body)?)
    } else if essence == STRUCTURED {
        (Mode::Structured, vec![object(Mode::Structured, body)?])
    } else if essence.starts_with("application/cloudevents") {
        return Err(Refused::unsupported(&essence));
    } else if binary {
        (
            Mode::Binary,
            vec![binary_event(headers, content_type.as_deref(), body)?],
        )
    } else if essence == "application/json" {
        match body.trim_ascii_start().first() {
            Some(b'[') => (Mode::Array, array(Mode::Array, body)?),
            _ => (Mode::Structured, vec![object(Mode::Structured, body)?]),
        }
    } else {
        return Err(Refused::unsupported(&essence));
    };
    let header_trace = header_trace(headers);
    let mut items = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let item = accept(mode, value, header_trace.as_ref(), registry);
        if let Item::Refused { refused, .. } = &item
            && mode != Mode::Batch
        {
            let mut refused = refused.clone();
            if mode == Mode::Array {
                refused.error = format!("event [{index}]: {}", refused.error);
            }
            return Err(refused);
        }
        items.push(item);
    }
    Ok(Request { mode, items })
}

/// Checks one event, fills in its trace context, and starts its ingest span.
fn accept(mode: Mode, value: Value, header: Option<&TraceParent>, registry: &Registry) -> Item {
    let Value::Object(mut attrs) = value else {
        return Item::Refused {
            id: None,
            refused: Refused::new(mode, "an event must be a JSON object (a CloudEvent)"),
        };
    };
    let id = attrs.get("id").and_then(Value::as_str).map(str::to_owned);
    let own = attrs
        .get("traceparent")
        .and_then(Value::as_str)
        .and_then(TraceParent::parse)
        .map(|t| t.with_state(attrs.get("tracestate").and_then(Value::as_str)));
    let parent = own.clone().or_else(|| header.cloned());
    // Read before the event is checked: clipped, so a refused event's megabyte of `source`
    // does not travel into the exported span.
    let span_attrs: Vec<(&str, &str)> = ["id", "type", "source"]
        .into_iter()
        .filter_map(|k| Some((k, clip(attrs.get(k)?.as_str()?, SPAN_TEXT_BYTES))))
        .collect();
    let span = IngestSpan::start(parent.as_ref(), mode.as_str(), &span_attrs);
    if !attrs.contains_key("traceparent") {
        // The request's context, else (when spans are exported) this ingest span's: stored with
        // the event, so a delivery made later joins the same trace.
        if let Some(trace) = header.cloned().or_else(|| span.context()) {
            attrs.insert("traceparent".into(), Value::String(trace.to_string()));
            if let Some(state) = trace.state() {
                attrs.insert("tracestate".into(), Value::String(state.to_owned()));
            }
        }
    }
    let refuse = |span: IngestSpan, refused: Refused| {
        span.end(Some(&refused.error));
        Item::Refused {
            id: id.clone(),
            refused,
        }
    };
    let event = match Event::from_json(Value::Object(attrs)) {
        Ok(event) => event,
        Err(e) => return refuse(span, Refused::new(mode, format!("invalid event: {e}"))),
    };
    match registry.check(&event) {
        Ok(()) => Item::Accepted(event, span),
        Err(refusal) => {
            let mut refused = Refused::new(mode, refusal.to_string());
            if let Refusal::Invalid { pointer, rule, .. } = refusal {
                refused.pointer = Some(pointer);
                refused.rule = Some(rule);
            }
            refuse(span, refused)
        }
    }
}

/// Longest attribute copied into an ingest span, in bytes.
const SPAN_TEXT_BYTES: usize = 256;

/// `text` cut to at most `max` bytes, at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn parse_json(mode: Mode, body: &[u8]) -> Result<Value, Refused> {
    serde_json::from_slice(body)
        .map_err(|e| Refused::new(mode, format!("the body is not valid JSON: {e}")))
}

fn object(mode: Mode, body: &[u8]) -> Result<Value, Refused> {
    match parse_json(mode, body)? {
        value @ Value::Object(_) => Ok(value),
        Value::Array(_) => Err(Refused::new(
            mode,
            format!("the body holds a list; send one event, or several as {BATCH}"),
        )),
        _ => Err(Refused::new(
            mode,
            "the body must be a JSON object (a CloudEvent)",
        )),
    }
}

fn array(mode: Mode, body: &[u8]) -> Result<Vec<Value>, Refused> {
    let Value::Array(items) = parse_json(mode, body)? else {
        return Err(Refused::new(
            mode,
            "the body must be a JSON array of CloudEvents",
        ));
    };
    if items.is_empty() {
        return Err(Refused::new(
            mode,
            "the batch is empty; send at least one event",
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(Refused::new(
            mode,
            format!(
                "the batch holds {} events; send at most {MAX_BATCH} per request",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// A header that may appear at most once, as text.
fn single_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let more = values.count();
    if more > 0 {
        return Err(format!(
            "header `{name}` appears {} times; send it once",
            more + 1
        ));
    }
    if value.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "header `{name}` is {} bytes long; the most is {MAX_HEADER_BYTES}",
            value.len()
        ));
    }
    let text = percent_decode(value.as_bytes())
        .ok_or_else(|| format!("header `{name}` is not valid UTF-8 (after percent-decoding)"))?;
    Ok(Some(text))
}

/// Decodes `%XX` escapes (the binding percent-encodes characters a header cannot hold) and
/// checks the result is UTF-8. A `%` not followed by two hex digits stays as it is.
fn percent_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h)? * 16 + hex(l)?) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A binary-mode event: every `ce-*` header is an attribute, `content-type` is
/// `datacontenttype`, and the body is `data` (JSON when the content type says so, text when it
/// is UTF-8, else `data_base64`).
fn binary_event(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, Refused> {
    let refuse = |e: String| Refused::new(Mode::Binary, e);
    let mut attrs = Map::new();
    for name in headers.keys() {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if attribute.is_empty()
            || !attribute
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(refuse(format!(
                "header `{name}`: attribute names are lower-case letters and digits"
            )));
        }
        if matches!(attribute, "data" | "datacontenttype") {
            return Err(refuse(format!(
                "header `{name}` is not allowed: the body is the data and `content-type` its type"
            )));
        }
        let value = single_header(headers, name.as_str())
            .map_err(refuse)?
            .unwrap_or_default();
        attrs.insert(attribute.to_owned(), Value::String(value));
    }
    if let Some(content_type) = content_type {
        attrs.insert(
            "datacontenttype".into(),
            Value::String(content_type.to_owned()),
        );
    }
    if !body.is_empty() {
        if content_type.is_none_or(is_json) {
            let data = serde_json::from_slice(body).map_err(|e| {
                refuse(format!(
                    "the body is not valid JSON although content-type is {}: {e}",
                    content_type.unwrap_or("absent (JSON is assumed)")
                ))
            })?;
            attrs.insert("data".into(), data);
        } else {
            match std::str::from_utf8(body) {
                Ok(text) => attrs.insert("data".into(), Value::String(text.to_owned())),
                Err(_) => attrs.insert("data_base64".into(), Value::String(BASE64.encode(body))),
            };
        }
    }
    Ok(Value::Object(attrs))
}

/// The `traceparent` (and `tracestate`) request headers, when valid. An invalid or repeated
/// `traceparent` is ignored, as W3C Trace Context requires: the events then start a new trace.
fn header_trace(headers: &HeaderMap) -> Option<TraceParent> {
    let traceparent = single_header(headers, "traceparent").ok()??;
    let parsed = TraceParent::parse(&traceparent);
    if parsed.is_none() {
        tracing::debug!("ignoring an invalid traceparent header");
    }
    let state: Vec<String> = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let state = (!state.is_empty()).then(|| state.join(","));
    parsed.map(|t| t.with_state(state.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use serde_json::json;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        map
    }

    fn json_headers() -> HeaderMap {
        headers(&[("content-type", b"application/json")])
    }

    fn accepted(request: &Request) -> Vec<&Event> {
        request
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Accepted(event, _) => Some(event),
                Item::Refused { .. } => None,
            })
            .collect()
    }

    fn read_ok(headers: &HeaderMap, body: &[u8]) -> Request {
        read(headers, body, &Registry::default()).unwrap_or_else(|e| panic!("{}", e.error))
    }

    #[test]
    fn binary_and_structured_modes_give_the_same_event() {
        let binary = read_ok(
            &headers(&[
                ("ce-specversion", b"1.0"),
                ("ce-id", b"b1"),
                ("ce-source", b"https://idp.example.com"),
                ("ce-type", b"acme.user.created"),
                ("ce-time", b"2026-11-22T10:00:00Z"),
                ("ce-subject", b"caf%C3%A9%20ada"),
                ("ce-partition", b"7"),
                ("content-type", b"application/json"),
            ]),
            br#"{"login": "ada"}"#,
        );
        assert_eq!(binary.mode, Mode::Binary);
        let structured = read_ok(
            &headers(&[(
                "content-type",
                b"application/cloudevents+json; charset=utf-8",
            )]),
            json!({
                "specversion": "1.0", "id": "b1", "source": "https://idp.example.com",
                "type": "acme.user.created", "time": "2026-11-22T10:00:00Z",
                "subject": "café ada", "partition": "7",
                "datacontenttype": "application/json", "data": {"login": "ada"}
            })
            .to_string()
            .as_bytes(),
        );
        assert_eq!(structured.mode, Mode::Structured);
        let (b, s) = (accepted(&binary), accepted(&structured));
        assert_eq!(b[0].json(), s[0].json());
        assert_eq!(format!("{:?}", b[0].wit()), format!("{:?}", s[0].wit()));
    }

    #[test]
    fn data_base64_with_json_content_is_the_same_as_data() {
        let encoded = BASE64.encode(br#"{"login":"ada"}"#);
        let request = read_ok(
            &json_headers(),
            json!({
                "specversion": "1.0", "id": "x", "source": "s", "type": "acme.user.created",
                "datacontenttype": "application/json", "data_base64": encoded
            })
            .to_string()
            .as_bytes(),
        );
        let event = accepted(&request)[0];
        assert_eq!(event.json()["data"], json!({"login": "ada"}));
        assert!(event.json().get("data_base64").is_none());
        // Bytes of another type stay bytes.
        let request = read_ok(
            &headers(&[
                ("ce-specversion", b"1.0"),
                ("ce-id", b"bin"),
                ("ce-source", b"s"),
                ("ce-type", b"acme.blob.stored"),
                ("content-type", b"application/octet-stream"),
            ]),
            &[0xff, 0x00, 0xfe],
        );
        let event = accepted(&request)[0];
        assert_eq!(event.json()["data_base64"], "/wD+");
        assert!(matches!(&event.wit().payload, crate::wit::Payload::Custom(p) if p == "\"/wD+\""));
        // Text stays text, with its type.
        let request = read_ok(
            &headers(&[
                ("ce-specversion", b"1.0"),
                ("ce-id", b"txt"),
                ("ce-source", b"s"),
                ("ce-type", b"acme.note.written"),
                ("content-type", b"text/plain; charset=utf-8"),
            ]),
            "{not json} café".as_bytes(),
        );
        let text = accepted(&request)[0];
        assert_eq!(text.json()["data"], "{not json} café");
        assert_eq!(text.json()["datacontenttype"], "text/plain; charset=utf-8");
        assert_eq!(event.json()["datacontenttype"], "application/octet-stream");
    }

    #[test]
    fn a_batch_answers_for_each_event_and_an_array_for_all() {
        let body = json!([
            {"specversion": "1.0", "id": "ok", "source": "s", "type": "acme.a.b"},
            {"specversion": "1.0", "source": "s", "type": "acme.a.b"},
        ])
        .to_string();
        let batch = read_ok(
            &headers(&[("content-type", BATCH.as_bytes())]),
            body.as_bytes(),
        );
        assert_eq!(batch.mode, Mode::Batch);
        assert!(matches!(&batch.items[0], Item::Accepted(..)));
        let Item::Refused { refused, .. } = &batch.items[1] else {
            panic!("accepted an event without id")
        };
        assert_eq!(refused.error, "batch mode: invalid event: `id` is missing");
        let array =
            read(&json_headers(), body.as_bytes(), &Registry::default()).expect_err("all or none");
        assert_eq!(
            array.error,
            "event [1]: array mode: invalid event: `id` is missing"
        );
    }

    #[test]
    fn the_traceparent_header_is_stored_with_events_that_have_none() {
        let body = json!([
            {"specversion": "1.0", "id": "a", "source": "s", "type": "acme.a.b"},
            {"specversion": "1.0", "id": "b", "source": "s", "type": "acme.a.b",
             "traceparent": "00-11111111111111111111111111111111-2222222222222222-01"},
        ])
        .to_string();
        let request = read_ok(
            &headers(&[
                ("content-type", BATCH.as_bytes()),
                ("traceparent", TRACEPARENT.as_bytes()),
                ("tracestate", b"congo=t61rcWkgMzE"),
            ]),
            body.as_bytes(),
        );
        let events = accepted(&request);
        assert_eq!(events[0].json()["traceparent"], TRACEPARENT);
        assert_eq!(events[0].json()["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(
            events[1].trace_parent().expect("own").trace_id(),
            "11111111111111111111111111111111"
        );
    }

    /// Every malformed header or attribute is a 400 naming the mode and what is wrong; none
    /// panics.
    #[test]
    fn malformed_headers_and_attributes_are_refused_with_a_reason() {
        let base = |extra: &[(&str, &[u8])]| {
            let mut pairs: Vec<(&str, &[u8])> = vec![
                ("ce-specversion", b"1.0"),
                ("ce-source", b"s"),
                ("ce-type", b"acme.a.b"),
            ];
            pairs.extend_from_slice(extra);
            headers(&pairs)
        };
        let huge = vec![b'a'; MAX_HEADER_BYTES + 1];
        let cases: Vec<(HeaderMap, Vec<u8>, &str)> = vec![
            (
                base(&[("ce-id", b"1"), ("ce-id", b"2")]),
                vec![],
                "binary mode: header `ce-id` appears 2 times",
            ),
            (
                base(&[("ce-id", b"caf%FF")]),
                vec![],
                "binary mode: header `ce-id` is not valid UTF-8",
            ),
            (
                base(&[("ce-id", &[0xc3, 0x28])]),
                vec![],
                "binary mode: header `ce-id` is not valid UTF-8",
            ),
            (
                base(&[("ce-id", &huge)]),
                vec![],
                "binary mode: header `ce-id` is 8193 bytes long",
            ),
            (
                base(&[("ce-id", b"1"), ("ce-time", b"yesterday")]),
                vec![],
                "binary mode: invalid event: `time` \"yesterday\" is not an RFC 3339 timestamp",
            ),
            (
                base(&[("ce-id", b"1"), ("ce-Foo_Bar", b"x")]),
                vec![],
                "binary mode: header `ce-foo_bar`: attribute names are lower-case letters and digits",
            ),
            (
                base(&[("ce-id", b"1"), ("content-type", b"application/json")]),
                b"{not json".to_vec(),
                "binary mode: the body is not valid JSON although content-type is application/json",
            ),
            (
                base(&[("ce-id", b"1"), ("ce-traceparent", b"00-zz")]),
                vec![],
                "binary mode: invalid event: extension attribute `traceparent` is not a W3C traceparent",
            ),
            (
                headers(&[("content-type", b"application/json"), ("content-type", b"text/plain")]),
                b"{}".to_vec(),
                "structured mode: header `content-type` appears 2 times",
            ),
            (
                headers(&[("content-type", STRUCTURED.as_bytes())]),
                br#"{"specversion": "1.0", "id": 5, "source": "s", "type": "a.b"}"#.to_vec(),
                "structured mode: invalid event: `id` must be a string",
            ),
            (
                json_headers(),
                br#"{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "ext": {"x": 1}}"#
                    .to_vec(),
                "structured mode: invalid event: extension attribute `ext` must be a string, a number or a boolean",
            ),
            (
                json_headers(),
                format!(
                    r#"{{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "ext": "{}"}}"#,
                    "x".repeat(5000)
                )
                .into_bytes(),
                "structured mode: invalid event: extension attribute `ext` is 5000 bytes long",
            ),
            (
                json_headers(),
                br#"{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "data": 1, "data_base64": "AA=="}"#
                    .to_vec(),
                "structured mode: invalid event: `data` and `data_base64` are both present",
            ),
            (
                json_headers(),
                br#"{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "data_base64": "***"}"#
                    .to_vec(),
                "structured mode: invalid event: `data_base64` is not valid base64",
            ),
            (
                json_headers(),
                br#"{"specversion": "1.0", "id": "1", "source": "s", "type": "a.b", "datacontenttype": "text/plain", "data": {"a": 1}}"#
                    .to_vec(),
                "structured mode: invalid event: `data` must be a string when `datacontenttype` is \"text/plain\"",
            ),
            (
                headers(&[("content-type", BATCH.as_bytes())]),
                b"{}".to_vec(),
                "batch mode: the body must be a JSON array of CloudEvents",
            ),
            (
                headers(&[("content-type", STRUCTURED.as_bytes())]),
                b"[]".to_vec(),
                "structured mode: the body holds a list",
            ),
            (
                headers(&[("content-type", b"application/cloudevents+avro")]),
                b"x".to_vec(),
                "structured mode: content-type \"application/cloudevents+avro\" is not an event format hookwasm reads",
            ),
            (
                json_headers(),
                vec![0xff, 0xfe, b'{'],
                "structured mode: the body is not valid JSON",
            ),
        ];
        for (headers, body, expected) in cases {
            let refused = read(&headers, &body, &Registry::default()).expect_err(expected);
            assert!(
                refused.error.starts_with(expected),
                "expected {expected:?}, got {:?}",
                refused.error
            );
        }
    }

    /// Only the CloudEvents content types, `application/json` and binary mode are read; any
    /// other content type (or none) is a 415 naming them all, and nothing is parsed.
    #[test]
    fn content_types_other_than_the_accepted_ones_are_a_415() {
        let event = br#"{"specversion": "1.0", "id": "ct", "source": "s", "type": "acme.a.b"}"#;
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("text/json"),
            Some("application/cloudevents+avro"),
        ] {
            let map = match content_type {
                Some(c) => headers(&[("content-type", c.as_bytes())]),
                None => HeaderMap::new(),
            };
            let refused = read(&map, event, &Registry::default()).expect_err("refused");
            assert_eq!(
                refused.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
            for named in [STRUCTURED, BATCH, "application/json", "binary mode"] {
                assert!(refused.error.contains(named), "{}", refused.error);
            }
            assert!(!refused.error.contains('\n'));
        }
        for content_type in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/cloudevents+json; charset=UTF-8",
        ] {
            let request = read_ok(
                &headers(&[("content-type", content_type.as_bytes())]),
                event,
            );
            assert_eq!(accepted(&request).len(), 1, "{content_type}");
        }
        // In binary mode the content type is the data's: any media type is read.
        let request = read_ok(
            &headers(&[
                ("ce-specversion", b"1.0"),
                ("ce-id", b"bin"),
                ("ce-source", b"s"),
                ("ce-type", b"acme.note.written"),
                ("content-type", b"text/plain"),
            ]),
            b"hello",
        );
        assert_eq!(accepted(&request)[0].json()["data"], "hello");
    }

    /// The ingest span gets at most [`SPAN_TEXT_BYTES`] of each attribute, cut on a character.
    #[test]
    fn clipped_text_stays_within_its_bound_and_valid() {
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(
            clip(&"é".repeat(200), SPAN_TEXT_BYTES).len(),
            SPAN_TEXT_BYTES
        );
        assert_eq!(clip("aé", 2), "a");
    }

    /// A bounded random loop: random header sets and bodies never panic, and every refusal
    /// names its mode.
    #[test]
    fn random_requests_never_panic() {
        let mut rng = fastrand::Rng::with_seed(16);
        let names = [
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-time",
            "ce-subject",
            "ce-traceparent",
            "ce-dataschema",
            "ce-x",
            "content-type",
            "traceparent",
            "tracestate",
        ];
        fn bytes(
            rng: &mut fastrand::Rng,
            max: usize,
            range: std::ops::RangeInclusive<u8>,
        ) -> Vec<u8> {
            let len = rng.usize(0..max);
            (0..len).map(|_| rng.u8(range.clone())).collect()
        }
        fn pick(rng: &mut fastrand::Rng) -> Vec<u8> {
            match rng.u8(0..6) {
                0 => b"1.0".to_vec(),
                1 => TRACEPARENT.as_bytes().to_vec(),
                2 => b"application/cloudevents-batch+json".to_vec(),
                3 => bytes(rng, 64, 0x20..=0x7e),
                4 => b"%C3%A9%ZZ%".to_vec(),
                _ => bytes(rng, 32, 0x80..=0xff),
            }
        }
        for _ in 0..2_000 {
            let mut map = HeaderMap::new();
            for _ in 0..rng.usize(0..8) {
                let name = names[rng.usize(0..names.len())];
                if let Ok(value) = HeaderValue::from_bytes(&pick(&mut rng)) {
                    map.append(name, value);
                }
            }
            let body: Vec<u8> = match rng.u8(0..4) {
                0 => Vec::new(),
                1 => json!({"specversion": "1.0", "id": "r", "source": "s", "type": "acme.r.x",
                            "data": rng.u64(..)})
                .to_string()
                .into_bytes(),
                2 => bytes(&mut rng, 128, 0..=255),
                _ => br#"[{"specversion": "1.0", "id": 1}, 2, "x", null]"#.to_vec(),
            };
            match read(&map, &body, &Registry::default()) {
                Ok(request) => {
                    for item in &request.items {
                        if let Item::Refused { refused, .. } = item {
                            assert!(refused.error.contains(" mode: "), "{}", refused.error);
                        }
                    }
                }
                Err(refused) => assert!(refused.error.contains(" mode: "), "{}", refused.error),
            }
        }
    }
}
