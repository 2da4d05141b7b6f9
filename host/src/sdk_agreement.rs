//! The SDK's test kit (`hookwasm_sdk::testing`, `Event::from_json`) converts CloudEvents JSON the
//! way the host does, so a handler's unit tests see the events the host will give it. This runs
//! both conversions on the same inputs and compares the results field by field, and the errors
//! word for word.

use hookwasm_sdk as sdk;
use serde_json::{Value, json};

use crate::event::{Event, known_types};
use crate::wit;

fn host_view(event: &wit::Event) -> Value {
    let repository = |r: &wit::Repository| json!([r.url, r.project, r.name]);
    let user = |u: &wit::User| json!([u.username, u.email]);
    let payload = match &event.payload {
        wit::Payload::ProxyAction(a) => json!({"proxy-action": [
            match a.operation { wit::Operation::Push => "push", wit::Operation::Pull => "pull" }, phase_name(a.phase), a.action_id,
            repository(&a.repository), a.user.as_ref().map(user), a.branch, a.commit_from,
            a.commit_to, a.error,
            a.steps.iter().map(|s| json!([s.name, s.passed, s.message])).collect::<Vec<_>>(),
        ]}),
        wit::Payload::RefUpdate(u) => json!({"ref-update": [
            match u.kind { wit::RefKind::Branch => "branch", wit::RefKind::Tag => "tag", wit::RefKind::Other => "other" }, change_name(u.change), u.push_id,
            repository(&u.repository), user(&u.pusher), u.ref_name, u.before, u.after,
            u.push_options,
        ]}),
        wit::Payload::PushRejected(r) => json!({"push-rejected": [
            r.push_id, repository(&r.repository), user(&r.pusher), r.refs, r.reason,
        ]}),
        wit::Payload::Custom(data) => json!({"custom": data}),
    };
    json!([
        event.id,
        event.source,
        event.type_,
        event.time,
        event.subject,
        payload,
        serde_json::from_str::<Value>(&event.json).expect("JSON")
    ])
}

fn phase_name(phase: wit::Phase) -> &'static str {
    match phase {
        wit::Phase::Started => "started",
        wit::Phase::Completed => "completed",
        wit::Phase::Error => "error",
        wit::Phase::PermissionDenied => "permission-denied",
        wit::Phase::PendingReview => "pending-review",
    }
}

fn change_name(change: wit::RefChange) -> &'static str {
    match change {
        wit::RefChange::Created => "created",
        wit::RefChange::Updated => "updated",
        wit::RefChange::ForcePushed => "force-pushed",
        wit::RefChange::Deleted => "deleted",
    }
}

fn sdk_view(event: &sdk::Event) -> Value {
    let repository = |r: &sdk::Repository| json!([r.url, r.project, r.name]);
    let user = |u: &sdk::User| json!([u.username, u.email]);
    let payload = match &event.payload {
        sdk::Payload::ProxyAction(a) => json!({"proxy-action": [
            a.operation.as_str(), a.phase.as_str(), a.action_id,
            repository(&a.repository), a.user.as_ref().map(user), a.branch, a.commit_from,
            a.commit_to, a.error,
            a.steps.iter().map(|s| json!([s.name, s.passed, s.message])).collect::<Vec<_>>(),
        ]}),
        sdk::Payload::RefUpdate(u) => json!({"ref-update": [
            u.kind.as_str(), u.change.as_str(), u.push_id,
            repository(&u.repository), user(&u.pusher), u.ref_name, u.before, u.after,
            u.push_options,
        ]}),
        sdk::Payload::PushRejected(r) => json!({"push-rejected": [
            r.push_id, repository(&r.repository), user(&r.pusher), r.refs, r.reason,
        ]}),
        sdk::Payload::Custom(data) => json!({"custom": data}),
    };
    json!([
        event.id,
        event.source,
        event.type_,
        event.time,
        event.subject,
        payload,
        serde_json::from_str::<Value>(&event.json).expect("JSON")
    ])
}

/// Inputs: every known type with full and minimal data, custom events, and mistakes.
fn inputs() -> Vec<Value> {
    let mut inputs = Vec::new();
    for event_type in known_types() {
        let full = crate::scaffold::example_event(event_type).expect("an example");
        inputs.push(full.clone());
        // Optional fields left out, `subject` set.
        let mut minimal = full.clone();
        minimal["subject"] = json!("refs/heads/main");
        if let Some(data) = minimal["data"].as_object_mut() {
            for optional in [
                "user",
                "branch",
                "commitFrom",
                "commitTo",
                "steps",
                "pushOptions",
            ] {
                data.remove(optional);
            }
            data["repository"] = json!({"url": "https://x/y.git"});
        }
        inputs.push(minimal);
        // A required field missing, and one of the wrong type.
        let mut broken = full.clone();
        if let Some(data) = broken["data"].as_object_mut() {
            let first = data.keys().next().cloned().expect("a field");
            data.remove(&first);
        }
        inputs.push(broken);
        let mut wrong = full;
        wrong["data"]["repository"] = json!("acme/widgets");
        inputs.push(wrong);
    }
    let base = json!({"specversion": "1.0", "id": "c-1", "source": "idp", "type": "user.created",
                      "time": "2026-01-01T00:00:00+01:00", "data": {"login": "ada"}});
    inputs.push(base.clone());
    let with = |key: &str, value: Value| {
        let mut event = base.clone();
        event[key] = value;
        event
    };
    let without = |key: &str| {
        let mut event = base.clone();
        event.as_object_mut().expect("object").remove(key);
        event
    };
    inputs.extend([
        with("data", Value::Null),
        without("data"),
        with("data", json!([1, "two"])),
        with("specversion", json!("0.3")),
        without("specversion"),
        with("id", json!("")),
        with("id", json!(7)),
        without("source"),
        with("subject", json!(3)),
        with("time", json!("yesterday")),
        with("data_base64", json!("aGk=")),
        with("type", json!("git.branch.renamed")),
        with("type", json!("push.exploded")),
        with("type", json!("git.tag.force-pushed")),
        with("type", json!("git.branch.deleted")),
        json!(["not", "an", "object"]),
        // The ingest rules of issue 17: ids, times, strings, content types, records.
        with("id", json!("evt.1")),
        with("id", json!("évènement")),
        with("id", json!("a\nb")),
        with("id", json!("x".repeat(257))),
        with("id", json!("action-7/push:gate/1700000000000")),
        with("time", json!("2026-01-01T00:00:00+25:00")),
        with("time", json!("2026-01-01T00:00:00")),
        with("time", json!("2026-01-01t00:00:00.5z")),
        with("subject", json!("two\nlines")),
        with("source", json!("s\u{FFFF}")),
        with("type", json!("a".repeat(300))),
        with("datacontenttype", json!("not a type")),
        with("datacontenttype", json!("application/vnd.acme+json")),
        with("ext", json!("bell\u{7}")),
    ]);
    for event_type in ["push.started", "git.branch.created", "git.push.rejected"] {
        let example = crate::scaffold::example_event(event_type).expect("an example");
        let mut listed = example.clone();
        listed["data"]["repository"] = json!(["https://x/y.git"]);
        let mut plain = example.clone();
        plain["datacontenttype"] = json!("text/plain");
        let mut as_list = example;
        as_list["data"] = json!([1]);
        inputs.extend([listed, plain, as_list]);
    }
    inputs
}

#[test]
fn the_sdk_test_kit_converts_events_exactly_as_the_host_does() {
    let inputs = inputs();
    assert!(inputs.len() > 60, "{}", inputs.len());
    for input in inputs {
        let host = Event::from_json(input.clone());
        let sdk = sdk::Event::from_json(input.clone());
        match (host, sdk) {
            (Ok(host), Ok(sdk)) => assert_eq!(host_view(host.wit()), sdk_view(&sdk), "{input}"),
            (Err(host), Err(sdk)) => assert_eq!(host.to_string(), sdk.to_string(), "{input}"),
            (host, sdk) => panic!("they disagree on {input}:\nhost: {host:?}\nsdk: {sdk:?}"),
        }
    }
    // Without `time`, both fill one in.
    let untimed = json!({"specversion": "1.0", "id": "t", "source": "s", "type": "x.y"});
    let host = Event::from_json(untimed.clone()).expect("valid");
    let sdk = sdk::Event::from_json(untimed).expect("valid");
    assert!(host.wit().time.parse::<jiff::Timestamp>().is_ok());
    assert!(sdk.time.parse::<jiff::Timestamp>().is_ok());
}
