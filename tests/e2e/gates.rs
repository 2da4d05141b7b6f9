//! Gates answer synchronously: the producer gets the merged verdict of every gate subscribed to
//! the event, with each reason and annotation attributed to its gate.

use serde_json::{Value, json};

use crate::receiver::Receiver;
use crate::support::{Guest, Host, Workdir, chaos_gate, protect_main, proxy_action, ref_update};

/// The `(handler, value)` pairs of a decision's `reasons`.
fn reasons(decision: &Value) -> Vec<(String, String)> {
    decision["reasons"]
        .as_array()
        .expect("`reasons` is a list")
        .iter()
        .map(|r| {
            (
                r["handler"].as_str().expect("handler").to_owned(),
                r["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

/// The `(handler, key, value)` triples of a decision's `annotations`.
fn annotations(decision: &Value) -> Vec<(String, String, String)> {
    decision["annotations"]
        .as_array()
        .expect("`annotations` is a list")
        .iter()
        .map(|a| {
            (
                a["handler"].as_str().expect("handler").to_owned(),
                a["key"].as_str().expect("key").to_owned(),
                a["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

#[test]
fn branch_protection_denies_force_push_and_deletion_of_main_only() {
    // The branch-protection plugin as a gate on `git.branch.*`, protecting `main`: rewriting or
    // deleting main is denied with the plugin's reason; everything else is allowed.
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[protect_main()]));

    let cases = [
        (
            "git.branch.force-pushed",
            "refs/heads/main",
            Some(
                "force-push to protected branch refs/heads/main is not allowed \
                 (branch-protection rule \"main\")",
            ),
        ),
        (
            "git.branch.deleted",
            "refs/heads/main",
            Some(
                "deleting protected branch refs/heads/main is not allowed \
                 (branch-protection rule \"main\")",
            ),
        ),
        ("git.branch.force-pushed", "refs/heads/feature", None),
        ("git.branch.deleted", "refs/heads/maintenance", None),
        ("git.branch.created", "refs/heads/main", None),
        ("git.branch.updated", "refs/heads/main", None),
    ];
    for (n, (event_type, ref_name, denial)) in cases.into_iter().enumerate() {
        let id = format!("gate-{n}");
        let response = host.post_events(&ref_update(&id, event_type, ref_name));
        assert_eq!(response.status, 200, "a gate ran: 200; {response}");
        let decision = response.json();
        let what = format!("{event_type} on {ref_name}: {response}");
        assert_eq!(decision["eventId"], id.as_str(), "{what}");
        assert_eq!(decision["observersQueued"], 0, "{what}");
        let gates = decision["gates"].as_array().expect("`gates` is a list");
        assert_eq!(gates.len(), 1, "{what}");
        assert_eq!(gates[0]["handler"], "protect-main", "{what}");
        assert_eq!(gates[0]["status"], "ok", "{what}");
        match denial {
            Some(reason) => {
                assert_eq!(decision["verdict"], "deny", "{what}");
                assert_eq!(
                    reasons(&decision),
                    [("protect-main".to_owned(), reason.to_owned())],
                    "{what}"
                );
                let annotations = annotations(&decision);
                assert!(
                    annotations.contains(&("protect-main".into(), "rule".into(), "main".into())),
                    "{what}"
                );
                assert!(
                    annotations.contains(&(
                        "protect-main".into(),
                        "ref".into(),
                        "refs/heads/main".into()
                    )),
                    "{what}"
                );
            }
            None => {
                assert_eq!(decision["verdict"], "allow", "{what}");
                assert!(reasons(&decision).is_empty(), "{what}");
            }
        }
    }

    // An event the gate does not subscribe to never reaches it: no gate ran, so 202 and allow.
    let response = host.post_events(&proxy_action("not-a-branch-event", "push.started"));
    assert_eq!(response.status, 202, "{response}");
    let decision = response.json();
    assert_eq!(decision["verdict"], "allow");
    assert_eq!(decision["gates"], json!([]));

    let gate = host.handler("protect-main");
    assert_eq!(gate["counters"]["invocations"]["ok"], 6, "{gate}");
    assert_eq!(gate["counters"]["denied"], 2, "{gate}");
}

#[test]
fn two_denying_gates_merge_into_one_deny_with_both_reasons_and_all_annotations() {
    // Three gates on one event: branch protection denies (with annotations), a chaos gate denies
    // with its own reason, another chaos gate allows with an annotation. The producer gets one
    // deny listing both reasons with their gates, and every gate's annotations.
    let work = Workdir::new();
    let mut second = chaos_gate("second-opinion", "deny");
    second["config"]["reason"] = json!("second opinion: main is frozen this week");
    let host = Host::serve(&work.config(&[protect_main(), second, chaos_gate("approver", "ok")]));

    let response = host.post_events(&ref_update(
        "merge-1",
        "git.branch.force-pushed",
        "refs/heads/main",
    ));
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    assert_eq!(decision["verdict"], "deny", "{response}");
    assert_eq!(
        reasons(&decision),
        [
            (
                "protect-main".to_owned(),
                "force-push to protected branch refs/heads/main is not allowed \
                 (branch-protection rule \"main\")"
                    .to_owned()
            ),
            (
                "second-opinion".to_owned(),
                "second opinion: main is frozen this week".to_owned()
            ),
        ],
        "every deny reason, attributed, in config order"
    );
    let annotations = annotations(&decision);
    assert!(
        annotations.contains(&("protect-main".into(), "rule".into(), "main".into())),
        "{annotations:?}"
    );
    assert!(
        annotations.contains(&("approver".into(), "seen".into(), "merge-1".into())),
        "an allowing gate's annotations are kept too: {annotations:?}"
    );
    let verdicts: Vec<(&str, &str)> = decision["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .map(|g| {
            (
                g["handler"].as_str().expect("handler"),
                g["verdict"].as_str().expect("verdict"),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("protect-main", "deny"),
            ("second-opinion", "deny"),
            ("approver", "allow")
        ]
    );

    // When only the chaos gates run (branch protection allows a branch creation), the one deny
    // still denies.
    let response = host.post_events(&ref_update(
        "merge-2",
        "git.branch.created",
        "refs/heads/main",
    ));
    let decision = response.json();
    assert_eq!(decision["verdict"], "deny", "{response}");
    assert_eq!(
        reasons(&decision),
        [(
            "second-opinion".to_owned(),
            "second opinion: main is frozen this week".to_owned()
        )]
    );
}

/// Observers of an event the gates denied are still told (`route=all`), and what they receive
/// says so: `hookwasmverdict: denied` and the denying gates in `hookwasmdeniedby`. An allowed
/// event carries neither, even when the producer sent them. The same as the git hooks do.
#[test]
fn observers_of_a_denied_event_receive_it_with_the_verdict() {
    let work = Workdir::new();
    let receiver = Receiver::answering(200);
    let recorder = json!({
        "name": "audit",
        "module": Guest::Chaos.module(),
        "config": { "behavior": "http", "method": "POST", "url": receiver.url("/events") },
        "capabilities": { "allowedHosts": [receiver.origin()] },
        "limits": { "timeoutMs": 5000 },
    });
    let mut fails_closed = chaos_gate("fails-closed", "error");
    fails_closed["events"] = json!(["git.branch.deleted"]);
    let host = Host::serve(&work.config(&[protect_main(), fails_closed, recorder]));

    let denied = host.post_events(&ref_update(
        "v-denied",
        "git.branch.force-pushed",
        "refs/heads/main",
    ));
    assert_eq!(denied.json()["verdict"], "deny", "{denied}");
    assert_eq!(denied.json()["observersQueued"], 1, "{denied}");
    let both = host.post_events(&ref_update(
        "v-both",
        "git.branch.deleted",
        "refs/heads/main",
    ));
    assert_eq!(both.json()["verdict"], "deny", "{both}");
    let mut forged = ref_update("v-allowed", "git.branch.updated", "refs/heads/main");
    forged["hookwasmverdict"] = json!("denied");
    let allowed = host.post_events(&forged);
    assert_eq!(allowed.json()["verdict"], "allow", "{allowed}");

    let received = receiver.wait_until("three deliveries", |r| r.len() >= 3);
    let events: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("the event as JSON"))
        .collect();
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not delivered: {events:#?}"))
    };
    assert_eq!(by_id("v-denied")["hookwasmverdict"], "denied");
    assert_eq!(by_id("v-denied")["hookwasmdeniedby"], "protect-main");
    assert_eq!(
        by_id("v-both")["hookwasmdeniedby"],
        "protect-main,fails-closed"
    );
    assert!(
        by_id("v-allowed").get("hookwasmverdict").is_none(),
        "{events:#?}"
    );
    assert_eq!(by_id("v-allowed")["type"], "git.branch.updated");
}
