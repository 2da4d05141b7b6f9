//! An observer that prints one JSON line per event to stdout, like GitProxy's built-in console
//! logger. The host forwards guest stdout into its own log, tagged with the handler's name.
//!
//! The line carries what an operator scans for (id, type, time, repository, user, ref and what
//! happened to it); keys without a value are left out. Custom events carry their `subject` and
//! their raw `data`.

use hookwasm_sdk::{Event, Handler, Outcome, Payload, Repository, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The console logger takes no settings; unknown ones are refused so a typo is not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleLogger {}

impl Handler for ConsoleLogger {
    fn on_event(&self, event: &Event) -> Result<Outcome> {
        println!("{}", render(event)?);
        Ok(Outcome::allow())
    }
}

hookwasm_sdk::export_handler!(ConsoleLogger);

/// One log line. Field order is the order an operator reads in.
#[derive(Debug, Serialize)]
struct Line<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    ref_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refs: Option<&'a [String]>,
    /// A proxy action's phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'static str>,
    /// What a push did to the ref.
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<&'static str>,
    /// Why a proxy action failed or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// Why a push was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// A custom event's data, verbatim as JSON (not as a string holding JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

/// A custom event's data. The host hands it over as JSON text it produced itself; should it ever
/// not parse, it is logged as a string rather than lost.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(Box<RawValue>),
    Text(&'a str),
}

/// Renders an event as one line of JSON.
pub fn render(event: &Event) -> Result<String> {
    let mut line = Line {
        id: &event.id,
        event_type: &event.type_,
        time: &event.time,
        subject: event.subject.as_deref(),
        repository: event.repository().map(repository_label),
        user: event.user().map(|user| user.username.as_str()),
        ref_name: event.ref_name(),
        refs: None,
        phase: None,
        change: None,
        error: None,
        reason: None,
        data: None,
    };
    match &event.payload {
        Payload::ProxyAction(action) => {
            line.phase = Some(action.phase.as_str());
            line.error = action.error.as_deref();
        }
        Payload::RefUpdate(update) => line.change = Some(update.change.as_str()),
        Payload::PushRejected(rejected) => {
            line.refs = Some(&rejected.refs);
            line.reason = Some(&rejected.reason);
        }
        Payload::Custom(data) => {
            line.data = Some(match RawValue::from_string(data.clone()) {
                Ok(json) => Data::Json(json),
                Err(_) => Data::Text(data),
            });
        }
    }
    Ok(serde_json::to_string(&line)?)
}

/// `project/name` when the producer gave both (the short form people search for), else the URL.
fn repository_label(repository: &Repository) -> String {
    if repository.project.is_empty() || repository.name.is_empty() {
        repository.url.clone()
    } else {
        format!("{}/{}", repository.project, repository.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use hookwasm_sdk::testing::{EventBuilder, TestHost, events};
    use serde_json::json;

    use super::*;

    const TIME: &str = "2025-01-02T03:04:05Z";

    fn line(builder: EventBuilder) -> String {
        render(&builder.time(TIME).build()).unwrap()
    }

    #[test]
    fn ref_update_line() {
        let event = events::ref_update("git.branch.force-pushed").pusher("alice");
        assert_eq!(
            line(event),
            r#"{"id":"evt-1","type":"git.branch.force-pushed","time":"2025-01-02T03:04:05Z","repository":"acme/widgets","user":"alice","ref":"refs/heads/main","change":"force-pushed"}"#
        );
    }

    #[test]
    fn proxy_action_line_has_phase_and_error() {
        let event = events::proxy_action("push.permission-denied")
            .repository("https://git.example.com/acme/widgets.git", "", "")
            .user("bob")
            .branch("refs/heads/dev")
            .error("bob may not push to acme/widgets")
            .step("checkUserPushPermission", false, None);
        assert_eq!(
            line(event),
            r#"{"id":"evt-1","type":"push.permission-denied","time":"2025-01-02T03:04:05Z","repository":"https://git.example.com/acme/widgets.git","user":"bob","ref":"refs/heads/dev","phase":"permission-denied","error":"bob may not push to acme/widgets"}"#
        );
    }

    #[test]
    fn proxy_action_without_user_or_branch_leaves_them_out() {
        let event = events::proxy_action("pull.started")
            .data("user", json!(null))
            .data("branch", json!(null));
        assert_eq!(
            line(event),
            r#"{"id":"evt-1","type":"pull.started","time":"2025-01-02T03:04:05Z","repository":"acme/widgets","phase":"started"}"#
        );
    }

    #[test]
    fn push_rejected_line_has_refs_and_reason() {
        let event = events::push_rejected()
            .pusher("carol")
            .rejected(&["refs/heads/main", "refs/tags/v1"], "force-push to main");
        assert_eq!(
            line(event),
            r#"{"id":"evt-1","type":"git.push.rejected","time":"2025-01-02T03:04:05Z","repository":"acme/widgets","user":"carol","refs":["refs/heads/main","refs/tags/v1"],"reason":"force-push to main"}"#
        );
    }

    #[test]
    fn custom_line_has_subject_and_raw_data() {
        let event = events::custom("user.created", json!({"login": "dave", "admin": false}))
            .subject("users/dave");
        assert_eq!(
            line(event),
            r#"{"id":"evt-1","type":"user.created","time":"2025-01-02T03:04:05Z","subject":"users/dave","data":{"admin":false,"login":"dave"}}"#
        );
    }

    #[test]
    fn unparseable_custom_data_is_kept_as_a_string() {
        // The host always passes JSON; the logger copes anyway.
        let mut event = events::custom("user.created", json!({})).time(TIME).build();
        event.payload = Payload::Custom("not json".into());
        assert_eq!(
            render(&event).unwrap(),
            r#"{"id":"evt-1","type":"user.created","time":"2025-01-02T03:04:05Z","data":"not json"}"#
        );
    }

    #[test]
    fn config_is_optional_but_checked() {
        let host = TestHost::new();
        host.load::<ConsoleLogger>(json!(null)).unwrap();
        host.load::<ConsoleLogger>(json!({})).unwrap();
        let error = host
            .load::<ConsoleLogger>(json!({"verbose": true}))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid handler config: unknown field `verbose`"),
            "{error}"
        );
    }
}
