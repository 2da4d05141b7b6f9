//! Events: the CloudEvents envelope, the taxonomy of known types, and the one conversion from
//! JSON to the WIT record handlers receive.
//!
//! An [`Event`] is built once when the host accepts it and is immutable afterwards: handlers get
//! copies of its WIT form (the component model copies values into each sandbox), so nothing a
//! handler does can change what anyone else sees.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wit;

mod attributes;
pub mod registry;

pub use attributes::is_json;

/// An accepted event: its JSON as given (plus a `time` when the producer sent none) and the typed
/// WIT record built from it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Event(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    json: Value,
    wit: wit::Event,
}

/// Why a JSON document is not an acceptable event. The message names the attribute or payload
/// field at fault.
///
/// The message is the whole sentence a producer reads, the cause's text included, because API
/// answers and logs print it alone; the cause, where there is one, is kept as
/// [`source`](std::error::Error::source). Causes are shared so the error stays `Clone`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventError {
    /// The document, or `data` for its event type, is not the JSON it must be.
    Json {
        /// What is wrong, and where.
        message: String,
        /// serde_json's error.
        source: Arc<serde_json::Error>,
    },
    /// An attribute's value cannot be decoded (`time`, `data_base64`).
    Decode {
        /// What is wrong, and where.
        message: String,
        /// The decoder's error.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// An attribute or field breaks a rule of the event model.
    Invalid {
        /// What is wrong, and where.
        message: String,
    },
}

impl EventError {
    /// A broken rule, with no lower error behind it.
    pub(crate) fn invalid(message: impl Into<String>) -> EventError {
        EventError::Invalid {
            message: message.into(),
        }
    }

    /// JSON that does not parse or does not fit its type.
    pub(crate) fn json(message: impl Into<String>, source: serde_json::Error) -> EventError {
        EventError::Json {
            message: message.into(),
            source: Arc::new(source),
        }
    }

    /// A value that does not decode.
    pub(crate) fn decode(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> EventError {
        EventError::Decode {
            message: message.into(),
            source: Arc::new(source),
        }
    }

    /// The message, as the display shows it.
    pub fn message(&self) -> &str {
        match self {
            EventError::Json { message, .. }
            | EventError::Decode { message, .. }
            | EventError::Invalid { message } => message,
        }
    }
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EventError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EventError::Json { source, .. } => Some(&**source),
            EventError::Decode { source, .. } => Some(&**source),
            EventError::Invalid { .. } => None,
        }
    }
}

impl Event {
    /// Parses a CloudEvent in structured JSON mode.
    pub fn from_slice(bytes: &[u8]) -> Result<Event, EventError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| EventError::json(format!("not valid JSON: {e}"), e))?;
        Event::from_json(value)
    }

    /// Reads an event the outbox stored when it was accepted. Extension attributes are not
    /// checked again: an event accepted under older, looser rules is delivered as it was.
    pub fn from_stored(bytes: &[u8]) -> Result<Event, EventError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| EventError::json(format!("not valid JSON: {e}"), e))?;
        Event::parse(value, attributes::Rules::Stored)
    }

    /// Validates a CloudEvent given as JSON and types its payload.
    pub fn from_json(value: Value) -> Result<Event, EventError> {
        Event::parse(value, attributes::Rules::New)
    }

    fn parse(value: Value, rules: attributes::Rules) -> Result<Event, EventError> {
        let Value::Object(mut attrs) = value else {
            return Err(EventError::invalid(
                "an event must be a JSON object (a CloudEvent)",
            ));
        };
        match attrs.get("specversion").and_then(Value::as_str) {
            Some("1.0") => {}
            Some(other) => {
                return Err(EventError::invalid(format!(
                    "`specversion` is {other:?}; only CloudEvents 1.0 is supported"
                )));
            }
            None => {
                return Err(EventError::invalid(
                    "`specversion` is missing; set it to \"1.0\"",
                ));
            }
        }
        attributes::check(&mut attrs, rules)?;
        let id = required(&attrs, "id")?;
        if rules == attributes::Rules::New {
            check_id(&id)?;
        }
        let source = required(&attrs, "source")?;
        let event_type = required(&attrs, "type")?;
        let subject = optional(&attrs, "subject")?;
        let time = match optional(&attrs, "time")? {
            Some(time) => {
                time.parse::<jiff::Timestamp>().map_err(|e| {
                    EventError::decode(
                        format!("`time` {time:?} is not an RFC 3339 timestamp: {e}"),
                        e,
                    )
                })?;
                time
            }
            None => {
                let now = jiff::Timestamp::now().to_string();
                attrs.insert("time".into(), Value::String(now.clone()));
                now
            }
        };
        let data = attrs.get("data").cloned().unwrap_or(Value::Null);
        let typed = kind_of(&event_type).is_some_and(|k| k != Kind::Custom);
        if data.is_null() && typed {
            return Err(EventError::invalid(format!(
                "`data` is missing: a {event_type} event carries a typed payload as JSON; run `hookwasm events` for its schema"
            )));
        }
        let payload = match payload(&event_type, data)? {
            wit::Payload::Custom(_) => wit::Payload::Custom(attributes::custom_payload(&attrs)),
            typed => typed,
        };
        let json = Value::Object(attrs);
        let wit = wit::Event {
            id,
            source,
            type_: event_type,
            time,
            subject,
            payload,
            json: json.to_string(),
        };
        Ok(Event(Arc::new(Inner { json, wit })))
    }

    /// The CloudEvents `id`: the idempotency key.
    pub fn id(&self) -> &str {
        &self.0.wit.id
    }

    /// The W3C trace context the event carries (the CloudEvents distributed-tracing extension).
    pub fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        let traceparent = self.0.json.get("traceparent")?.as_str()?;
        let tracestate = self.0.json.get("tracestate").and_then(Value::as_str);
        crate::trace::TraceParent::parse(traceparent).map(|t| t.with_state(tracestate))
    }

    /// The CloudEvents `type`, e.g. `git.branch.force-pushed`.
    pub fn event_type(&self) -> &str {
        &self.0.wit.type_
    }

    /// The event as JSON (a CloudEvent), as accepted.
    pub fn json(&self) -> &Value {
        &self.0.json
    }

    /// The typed record handlers receive.
    pub fn wit(&self) -> &wit::Event {
        &self.0.wit
    }

    /// The refs this event is about, for `refs` filters: a ref update's ref, a rejected push's
    /// refs, a proxy action's branch; none for custom events.
    pub fn refs(&self) -> impl Iterator<Item = &str> {
        let refs: &[String] = match &self.0.wit.payload {
            wit::Payload::RefUpdate(update) => std::slice::from_ref(&update.ref_name),
            wit::Payload::PushRejected(rejected) => &rejected.refs,
            wit::Payload::ProxyAction(action) => action.branch.as_slice(),
            wit::Payload::Custom(_) => &[],
        };
        refs.iter().map(String::as_str)
    }
}

impl crate::trace::Traced for Event {
    fn id(&self) -> &str {
        Event::id(self)
    }

    fn event_type(&self) -> &str {
        Event::event_type(self)
    }

    fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        Event::trace_parent(self)
    }
}

/// Longest `id` accepted, in bytes: it is copied into every log line, report and delivery.
pub const MAX_ID_BYTES: usize = 256;

/// An `id` every delivery path can carry as is: 1 to [`MAX_ID_BYTES`] of printable ASCII
/// without spaces (an HTTP header value, a NATS header, a log field) and without `.`, which
/// Standard Webhooks forbids in `webhook-id` (it delimits the signed `{id}.{timestamp}.{body}`).
/// Refused at the door rather than acknowledged and never delivered; events stored under an
/// earlier rule are delivered as they are.
fn check_id(id: &str) -> Result<(), EventError> {
    const RULE: &str = "ids are 1 to 256 bytes of printable ASCII without spaces or `.` so \
                        every delivery (HTTP headers, Standard Webhooks, NATS) can carry them; \
                        use letters, digits, `-`, `_`, `:` or `/` (a UUID, say)";
    if id.len() > MAX_ID_BYTES {
        return Err(EventError::invalid(format!(
            "`id` is {} bytes long: {RULE}",
            id.len()
        )));
    }
    if let Some(bad) = id.chars().find(|&c| !c.is_ascii_graphic() || c == '.') {
        let shown = crate::escape::escape(&bad.to_string()).into_owned();
        return Err(EventError::invalid(format!(
            "`id` contains `{shown}`: {RULE}"
        )));
    }
    Ok(())
}

fn required(attrs: &Map<String, Value>, name: &str) -> Result<String, EventError> {
    match attrs.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(EventError::invalid(format!("`{name}` is empty"))),
        Some(_) => Err(EventError::invalid(format!("`{name}` must be a string"))),
        None => Err(EventError::invalid(format!("`{name}` is missing"))),
    }
}

fn optional(attrs: &Map<String, Value>, name: &str) -> Result<Option<String>, EventError> {
    match attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(EventError::invalid(format!("`{name}` must be a string"))),
    }
}

/// What an event type is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ProxyAction(wit::Operation, wit::Phase),
    RefUpdate(wit::RefKind, wit::RefChange),
    PushRejected,
    Custom,
}

/// Namespaces reserved for the typed events: a type in them that is not known is a mistake, not
/// a custom event.
const RESERVED_PREFIXES: [&str; 3] = ["push.", "pull.", "git."];

const PROXY_EVENTS: [(&str, wit::Operation, wit::Phase); 10] = {
    use wit::Operation::{Pull, Push};
    use wit::Phase::*;
    [
        ("push.started", Push, Started),
        ("push.completed", Push, Completed),
        ("push.error", Push, Error),
        ("push.permission-denied", Push, PermissionDenied),
        ("push.pending-review", Push, PendingReview),
        ("pull.started", Pull, Started),
        ("pull.completed", Pull, Completed),
        ("pull.error", Pull, Error),
        ("pull.permission-denied", Pull, PermissionDenied),
        ("pull.pending-review", Pull, PendingReview),
    ]
};

const REF_EVENTS: [(&str, wit::RefKind, wit::RefChange); 10] = [
    (
        "git.branch.created",
        wit::RefKind::Branch,
        wit::RefChange::Created,
    ),
    (
        "git.branch.updated",
        wit::RefKind::Branch,
        wit::RefChange::Updated,
    ),
    (
        "git.branch.force-pushed",
        wit::RefKind::Branch,
        wit::RefChange::ForcePushed,
    ),
    (
        "git.branch.deleted",
        wit::RefKind::Branch,
        wit::RefChange::Deleted,
    ),
    (
        "git.tag.created",
        wit::RefKind::Tag,
        wit::RefChange::Created,
    ),
    (
        "git.tag.updated",
        wit::RefKind::Tag,
        wit::RefChange::Updated,
    ),
    (
        "git.tag.deleted",
        wit::RefKind::Tag,
        wit::RefChange::Deleted,
    ),
    (
        "git.ref.created",
        wit::RefKind::Other,
        wit::RefChange::Created,
    ),
    (
        "git.ref.updated",
        wit::RefKind::Other,
        wit::RefChange::Updated,
    ),
    (
        "git.ref.deleted",
        wit::RefKind::Other,
        wit::RefChange::Deleted,
    ),
];

const PUSH_REJECTED: &str = "git.push.rejected";

/// The type of a ref-update event: the one mapping from what a push did to a ref to a name, read
/// from the same table events are typed by. Only branches are force-pushed in the taxonomy
/// (tags and other refs have no history to lose), so theirs count as updated.
pub fn ref_event_type(kind: wit::RefKind, change: wit::RefChange) -> &'static str {
    let change = match (kind, change) {
        (wit::RefKind::Tag | wit::RefKind::Other, wit::RefChange::ForcePushed) => {
            wit::RefChange::Updated
        }
        (_, change) => change,
    };
    REF_EVENTS
        .iter()
        .find(|(_, k, c)| *k == kind && *c == change)
        .map(|(name, ..)| *name)
        .expect("REF_EVENTS names every kind and change but a tag's or other ref's force-push")
}

fn kind_of(event_type: &str) -> Option<Kind> {
    if let Some(&(_, operation, phase)) = PROXY_EVENTS.iter().find(|(name, ..)| *name == event_type)
    {
        return Some(Kind::ProxyAction(operation, phase));
    }
    if let Some(&(_, kind, change)) = REF_EVENTS.iter().find(|(name, ..)| *name == event_type) {
        return Some(Kind::RefUpdate(kind, change));
    }
    if event_type == PUSH_REJECTED {
        return Some(Kind::PushRejected);
    }
    if RESERVED_PREFIXES.iter().any(|p| event_type.starts_with(p)) {
        return None;
    }
    Some(Kind::Custom)
}

/// Every typed event type, in the order `hookwasm events` lists them.
pub fn known_types() -> impl Iterator<Item = &'static str> {
    let proxy = PROXY_EVENTS.iter().map(|(name, ..)| *name);
    let git = REF_EVENTS.iter().map(|(name, ..)| *name);
    proxy.chain(git).chain([PUSH_REJECTED])
}

fn payload(event_type: &str, data: Value) -> Result<wit::Payload, EventError> {
    let kind = kind_of(event_type).ok_or_else(|| {
        EventError::invalid(format!(
            "unknown event type {event_type:?}: `push.`, `pull.` and `git.` types are reserved; \
             run `hookwasm events` for the known ones, or use another prefix for a custom event"
        ))
    })?;
    let typed =
        |e: serde_json::Error| EventError::json(format!("`data` of a {event_type} event: {e}"), e);
    Ok(match kind {
        Kind::ProxyAction(operation, phase) => {
            let d: ProxyActionData = serde_json::from_value(data).map_err(typed)?;
            wit::Payload::ProxyAction(wit::ProxyAction {
                operation,
                phase,
                action_id: d.action_id,
                repository: d.repository.into(),
                user: d.user.map(Into::into),
                branch: d.branch,
                commit_from: d.commit_from,
                commit_to: d.commit_to,
                error: d.error,
                steps: d.steps.into_iter().map(Into::into).collect(),
            })
        }
        Kind::RefUpdate(kind, change) => {
            let d: RefUpdateData = serde_json::from_value(data).map_err(typed)?;
            wit::Payload::RefUpdate(wit::RefUpdate {
                kind,
                change,
                push_id: d.push_id,
                repository: d.repository.into(),
                pusher: d.pusher.into(),
                ref_name: d.ref_name,
                before: d.before,
                after: d.after,
                push_options: d.push_options,
            })
        }
        Kind::PushRejected => {
            let d: PushRejectedData = serde_json::from_value(data).map_err(typed)?;
            wit::Payload::PushRejected(wit::PushRejected {
                push_id: d.push_id,
                repository: d.repository.into(),
                pusher: d.pusher.into(),
                refs: d.refs,
                reason: d.reason,
            })
        }
        Kind::Custom => wit::Payload::Custom(data.to_string()),
    })
}

/// The repository an event is about.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryData {
    /// Clone URL as the producer knows it.
    pub url: String,
    /// Owner, organisation or group.
    #[serde(default)]
    pub project: String,
    /// Repository name.
    #[serde(default)]
    pub name: String,
}

/// A person: a proxy's user or a push's pusher.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserData {
    /// Login name.
    pub username: String,
    /// E-mail address, when known.
    #[serde(default)]
    pub email: Option<String>,
}

/// One step of a proxy's action chain.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepData {
    /// The step's name, e.g. `checkAuthorEmails`.
    pub name: String,
    /// Whether the step let the action go on.
    pub passed: bool,
    /// What the step said, if anything.
    #[serde(default)]
    pub message: Option<String>,
}

/// Payload of `push.*` and `pull.*` events.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyActionData {
    /// The proxy's id for the action, shared by all its phases.
    pub action_id: String,
    /// The repository acted on.
    pub repository: RepositoryData,
    /// Who acted, when known.
    #[serde(default)]
    pub user: Option<UserData>,
    /// Full ref name, e.g. `refs/heads/main`.
    #[serde(default)]
    pub branch: Option<String>,
    /// First commit of the range.
    #[serde(default)]
    pub commit_from: Option<String>,
    /// Last commit of the range.
    #[serde(default)]
    pub commit_to: Option<String>,
    /// Why the action failed or was refused.
    #[serde(default)]
    pub error: Option<String>,
    /// The action chain's steps so far.
    #[serde(default)]
    pub steps: Vec<StepData>,
    /// The commits of the range, oldest first, when the proxy has parsed them. Handlers read
    /// them from the event's JSON.
    #[serde(default)]
    pub commits: Vec<CommitData>,
}

/// One commit of a proxy action's range (GitProxy's `commitData`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitData {
    /// The commit's object id, when known.
    #[serde(default)]
    pub id: Option<String>,
    /// The commit message.
    pub message: String,
    /// The author's name.
    #[serde(default)]
    pub author: Option<String>,
    /// The author's e-mail address.
    #[serde(default)]
    pub author_email: Option<String>,
    /// The committer's name.
    #[serde(default)]
    pub committer: Option<String>,
    /// The committer's e-mail address.
    #[serde(default)]
    pub committer_email: Option<String>,
    /// When it was committed, as the proxy reports it (Unix seconds or RFC 3339).
    #[serde(default)]
    pub timestamp: Option<Value>,
}

/// Payload of `git.branch.*`, `git.tag.*` and `git.ref.*` events.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefUpdateData {
    /// Shared by every event of one push.
    pub push_id: String,
    /// The repository pushed to.
    pub repository: RepositoryData,
    /// Who pushed.
    pub pusher: UserData,
    /// Full ref name, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// Object id before the push (all zeros when created).
    pub before: String,
    /// Object id after the push (all zeros when deleted).
    pub after: String,
    /// `git push -o` options.
    #[serde(default)]
    pub push_options: Vec<String>,
}

/// Payload of `git.push.rejected`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushRejectedData {
    /// The refused push.
    pub push_id: String,
    /// The repository pushed to.
    pub repository: RepositoryData,
    /// Who pushed.
    pub pusher: UserData,
    /// The refs the push tried to update.
    pub refs: Vec<String>,
    /// Why it was refused.
    pub reason: String,
}

impl From<RepositoryData> for wit::Repository {
    fn from(d: RepositoryData) -> Self {
        wit::Repository {
            url: d.url,
            project: d.project,
            name: d.name,
        }
    }
}

impl From<UserData> for wit::User {
    fn from(d: UserData) -> Self {
        wit::User {
            username: d.username,
            email: d.email,
        }
    }
}

impl From<StepData> for wit::Step {
    fn from(d: StepData) -> Self {
        wit::Step {
            name: d.name,
            passed: d.passed,
            message: d.message,
        }
    }
}

/// One known event type and the JSON Schema of its `data`, as `hookwasm events` prints it.
#[derive(Debug, Serialize)]
pub struct TypeInfo {
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// What produces it.
    pub description: &'static str,
    /// JSON Schema of `data`.
    #[serde(rename = "dataSchema")]
    pub data_schema: Value,
}

/// The catalogue of event types with their payload schemas; custom types come last.
pub fn catalogue() -> Vec<TypeInfo> {
    let schema = |s: schemars::Schema| s.to_value();
    let mut out = Vec::new();
    for event_type in known_types() {
        let (description, data_schema) = match kind_of(event_type) {
            Some(Kind::ProxyAction(..)) => (
                "a git proxy's push or pull action at one phase",
                schema(schemars::schema_for!(ProxyActionData)),
            ),
            Some(Kind::RefUpdate(..)) => (
                "one ref update of a push to a git server",
                schema(schemars::schema_for!(RefUpdateData)),
            ),
            _ => (
                "a push that a gate or git refused",
                schema(schemars::schema_for!(PushRejectedData)),
            ),
        };
        out.push(TypeInfo {
            event_type,
            description,
            data_schema,
        });
    }
    out.push(TypeInfo {
        event_type: "*",
        description: "any other type (outside push., pull. and git.), e.g. user.created: data is passed to handlers as JSON text",
        data_schema: serde_json::json!({}),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_errors_keep_their_cause_as_source() {
        use std::error::Error as _;
        let err = Event::from_slice(b"{").expect_err("not JSON");
        let json = err
            .source()
            .and_then(|s| s.downcast_ref::<serde_json::Error>());
        assert!(json.is_some(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("not valid JSON: {}", json.expect("json"))
        );

        let mut typed = ref_event("git.branch.created");
        typed["data"]["pushId"] = json!(7);
        let err = Event::from_json(typed).expect_err("pushId is a number");
        assert!(matches!(err, EventError::Json { .. }), "{err}");

        let err = Event::from_json(json!({
            "specversion": "1.0", "id": "e1", "source": "s", "type": "com.example.x",
            "data_base64": "!!"
        }))
        .expect_err("not base64");
        assert!(matches!(err, EventError::Decode { .. }), "{err}");
        assert!(err.source().is_some(), "{err:?}");

        let err = Event::from_json(json!([])).expect_err("not an object");
        assert!(err.source().is_none(), "{err:?}");
    }

    fn ref_event(event_type: &str) -> Value {
        json!({
            "specversion": "1.0", "id": "e1", "source": "test", "type": event_type,
            "data": {
                "pushId": "p1",
                "repository": {"url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets"},
                "pusher": {"username": "ada"},
                "ref": "refs/heads/main", "before": "a", "after": "b"
            }
        })
    }

    #[test]
    fn ref_updates_are_typed_and_stamped_with_a_time() {
        let event = Event::from_json(ref_event("git.branch.force-pushed")).expect("valid");
        let wit::Payload::RefUpdate(update) = &event.wit().payload else {
            panic!("wrong payload")
        };
        assert_eq!(update.kind, wit::RefKind::Branch);
        assert_eq!(update.change, wit::RefChange::ForcePushed);
        assert_eq!(event.refs().collect::<Vec<_>>(), ["refs/heads/main"]);
        assert!(
            event.json()["time"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
        );
    }

    #[test]
    fn mistakes_name_the_attribute_or_field() {
        let mut missing = ref_event("git.branch.created");
        missing["data"]
            .as_object_mut()
            .expect("object")
            .remove("pusher");
        let err = Event::from_json(missing).expect_err("no pusher");
        assert!(err.to_string().contains("missing field `pusher`"), "{err}");

        let err = Event::from_json(ref_event("git.branch.renamed")).expect_err("unknown type");
        assert!(
            err.to_string()
                .starts_with("unknown event type \"git.branch.renamed\""),
            "{err}"
        );

        let mut no_id = ref_event("git.branch.created");
        no_id.as_object_mut().expect("object").remove("id");
        assert_eq!(
            Event::from_json(no_id).expect_err("no id").to_string(),
            "`id` is missing"
        );
    }

    #[test]
    fn custom_events_carry_their_data_as_json_text() {
        let event = Event::from_json(json!({
            "specversion": "1.0", "id": "u1", "source": "idp", "type": "user.created",
            "time": "2026-11-22T10:00:00+01:00", "data": {"login": "ada"}
        }))
        .expect("valid");
        assert!(
            matches!(&event.wit().payload, wit::Payload::Custom(json) if json == r#"{"login":"ada"}"#)
        );
        assert_eq!(event.refs().count(), 0);
    }

    #[test]
    fn stored_events_keep_extensions_an_older_version_accepted() {
        let stored = json!({
            "specversion": "1.0", "id": "old", "source": "s", "type": "acme.a.b",
            "Legacy_Ext": {"nested": true}
        });
        assert!(
            Event::from_json(stored.clone()).is_err(),
            "refused when new"
        );
        let event = Event::from_stored(stored.to_string().as_bytes()).expect("delivered as stored");
        assert_eq!(event.json()["Legacy_Ext"]["nested"], true);
    }

    #[test]
    fn every_ref_update_has_one_type_and_it_reads_back() {
        use wit::RefChange::*;
        use wit::RefKind::*;
        for kind in [Branch, Tag, Other] {
            for change in [Created, Updated, ForcePushed, Deleted] {
                let name = ref_event_type(kind, change);
                let Some(Kind::RefUpdate(k, c)) = kind_of(name) else {
                    panic!("{name} is not a ref update")
                };
                let expected = if kind == Branch {
                    change
                } else if change == ForcePushed {
                    Updated
                } else {
                    change
                };
                assert_eq!((k, c), (kind, expected), "{name}");
            }
        }
        assert_eq!(ref_event_type(Tag, ForcePushed), "git.tag.updated");
    }

    #[test]
    fn every_known_type_is_in_the_catalogue() {
        let catalogue = catalogue();
        assert_eq!(catalogue.len(), known_types().count() + 1);
        assert!(known_types().all(|t| kind_of(t).is_some_and(|k| k != Kind::Custom)));
    }

    #[tokio::test]
    async fn without_export_a_handler_passes_the_producers_context_on() {
        let event = Event::from_json(serde_json::json!({
            "specversion": "1.0", "id": "t1", "source": "s", "type": "acme.thing.done",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=1",
        }))
        .expect("valid");
        let span = crate::trace::HandlerSpan::start("h", "observer", "digest", &event);
        let seen = span
            .scope(async { crate::trace::outbound() })
            .await
            .expect("a context");
        assert_eq!(seen.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(seen.state(), Some("vendor=1"));
        assert_eq!(crate::trace::outbound(), None);
        span.end("ok", 1, None);
    }
}
