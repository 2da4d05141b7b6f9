//! The host's JSON → event conversion (host/src/event.rs), for native tests. The rules and
//! messages must stay the host's: `host/src/sdk_agreement.rs` checks both on the same inputs.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    Event, Operation, Payload, Phase, ProxyAction, PushRejected, RefChange, RefKind, RefUpdate,
    Repository, Step, User,
};

pub(super) fn event(value: Value) -> Result<Event, String> {
    let Value::Object(mut attrs) = value else {
        return Err("an event must be a JSON object (a CloudEvent)".into());
    };
    match attrs.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return Err(format!(
                "`specversion` is {other:?}; only CloudEvents 1.0 is supported"
            ));
        }
        None => return Err("`specversion` is missing; set it to \"1.0\"".into()),
    }
    super::attributes::check(&mut attrs)?;
    let id = required(&attrs, "id")?;
    check_id(&id)?;
    let source = required(&attrs, "source")?;
    let event_type = required(&attrs, "type")?;
    let subject = optional(&attrs, "subject")?;
    let time = match optional(&attrs, "time")? {
        Some(time) => {
            time.parse::<jiff::Timestamp>()
                .map_err(|e| format!("`time` {time:?} is not an RFC 3339 timestamp: {e}"))?;
            time
        }
        None => {
            let now = jiff::Timestamp::now().to_string();
            attrs.insert("time".into(), Value::String(now.clone()));
            now
        }
    };
    let data = attrs.get("data").cloned().unwrap_or(Value::Null);
    if data.is_null() && kind_of(&event_type).is_some_and(|k| k != Kind::Custom) {
        return Err(format!(
            "`data` is missing: a {event_type} event carries a typed payload as JSON; run `hookwasm events` for its schema"
        ));
    }
    let payload = match payload(&event_type, data)? {
        Payload::Custom(_) => Payload::Custom(super::attributes::custom_payload(&attrs)),
        typed => typed,
    };
    let json = Value::Object(attrs).to_string();
    Ok(Event {
        id,
        source,
        type_: event_type,
        time,
        subject,
        payload,
        json,
    })
}

/// The host's id rule: 1 to 256 bytes of printable ASCII without spaces or `.`.
fn check_id(id: &str) -> Result<(), String> {
    const RULE: &str = "ids are 1 to 256 bytes of printable ASCII without spaces or `.` so \
                        every delivery (HTTP headers, Standard Webhooks, NATS) can carry them; \
                        use letters, digits, `-`, `_`, `:` or `/` (a UUID, say)";
    if id.len() > 256 {
        return Err(format!("`id` is {} bytes long: {RULE}", id.len()));
    }
    if let Some(bad) = id.chars().find(|&c| !c.is_ascii_graphic() || c == '.') {
        let shown = match bad {
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            '\0' => "\\0".to_owned(),
            c if c.is_control() => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        };
        return Err(format!("`id` contains `{shown}`: {RULE}"));
    }
    Ok(())
}

fn required(attrs: &Map<String, Value>, name: &str) -> Result<String, String> {
    match attrs.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("`{name}` is empty")),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("`{name}` is missing")),
    }
}

fn optional(attrs: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    ProxyAction(Operation, Phase),
    RefUpdate(RefKind, RefChange),
    PushRejected,
    Custom,
}

/// The kind of an event type, by its name; `None` for an unknown name in a reserved namespace.
pub(super) fn kind_of(event_type: &str) -> Option<Kind> {
    if let Some((operation, phase)) = event_type.split_once('.') {
        let operation = match operation {
            "push" => Some(Operation::Push),
            "pull" => Some(Operation::Pull),
            _ => None,
        };
        if let Some(operation) = operation {
            let phase = [
                Phase::Started,
                Phase::Completed,
                Phase::Error,
                Phase::PermissionDenied,
                Phase::PendingReview,
            ]
            .into_iter()
            .find(|p| p.as_str() == phase)?;
            return Some(Kind::ProxyAction(operation, phase));
        }
    }
    if event_type == "git.push.rejected" {
        return Some(Kind::PushRejected);
    }
    if let Some(rest) = event_type.strip_prefix("git.") {
        let (kind, change) = rest.split_once('.')?;
        let kind = match kind {
            "branch" => RefKind::Branch,
            "tag" => RefKind::Tag,
            "ref" => RefKind::Other,
            _ => return None,
        };
        let change = match change {
            "created" => RefChange::Created,
            "updated" => RefChange::Updated,
            "deleted" => RefChange::Deleted,
            "force-pushed" if kind == RefKind::Branch => RefChange::ForcePushed,
            _ => return None,
        };
        return Some(Kind::RefUpdate(kind, change));
    }
    Some(Kind::Custom)
}

fn payload(event_type: &str, data: Value) -> Result<Payload, String> {
    let kind = kind_of(event_type).ok_or_else(|| {
        format!(
            "unknown event type {event_type:?}: `push.`, `pull.` and `git.` types are reserved; \
             run `hookwasm events` for the known ones, or use another prefix for a custom event"
        )
    })?;
    let typed = |e: serde_json::Error| format!("`data` of a {event_type} event: {e}");
    Ok(match kind {
        Kind::ProxyAction(operation, phase) => {
            let d: ProxyActionData = serde_json::from_value(data).map_err(typed)?;
            Payload::ProxyAction(ProxyAction {
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
            Payload::RefUpdate(RefUpdate {
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
            Payload::PushRejected(PushRejected {
                push_id: d.push_id,
                repository: d.repository.into(),
                pusher: d.pusher.into(),
                refs: d.refs,
                reason: d.reason,
            })
        }
        Kind::Custom => Payload::Custom(data.to_string()),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepositoryData {
    url: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserData {
    username: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepData {
    name: String,
    passed: bool,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyActionData {
    action_id: String,
    repository: RepositoryData,
    #[serde(default)]
    user: Option<UserData>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    commit_from: Option<String>,
    #[serde(default)]
    commit_to: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    steps: Vec<StepData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefUpdateData {
    push_id: String,
    repository: RepositoryData,
    pusher: UserData,
    #[serde(rename = "ref")]
    ref_name: String,
    before: String,
    after: String,
    #[serde(default)]
    push_options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushRejectedData {
    push_id: String,
    repository: RepositoryData,
    pusher: UserData,
    refs: Vec<String>,
    reason: String,
}

impl From<RepositoryData> for Repository {
    fn from(d: RepositoryData) -> Self {
        Repository {
            url: d.url,
            project: d.project,
            name: d.name,
        }
    }
}

impl From<UserData> for User {
    fn from(d: UserData) -> Self {
        User {
            username: d.username,
            email: d.email,
        }
    }
}

impl From<StepData> for Step {
    fn from(d: StepData) -> Self {
        Step {
            name: d.name,
            passed: d.passed,
            message: d.message,
        }
    }
}
