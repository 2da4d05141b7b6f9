//! Isolation: a handler that fails, traps or rewrites its copy of the event affects no other
//! handler and no producer, except through its own verdict as its failure policy says.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{
    Host, Workdir, chaos, chaos_gate, console_logger, custom, hookwasm, protect_main, proxy_action,
    ref_update,
};

#[test]
fn a_failing_observer_and_an_open_failing_gate_change_nothing_for_the_others() {
    // Beside a healthy observer and a healthy gate: an observer that returns an error on every
    // event, and a gate that panics with `failurePolicy: open`. The producer's answer reflects
    // the healthy gate's verdict only; the failures are logged and counted against the failing
    // handlers alone.
    let work = Workdir::new();
    let mut panicky = chaos_gate("panicky-gate", "panic");
    panicky["failurePolicy"] = json!("open");
    let host = Host::serve(&work.config(&[
        console_logger(),
        chaos("broken-observer", "error"),
        panicky,
        protect_main(),
    ]));

    let force_push = host.post_events(&ref_update(
        "iso-1",
        "git.branch.force-pushed",
        "refs/heads/main",
    ));
    assert_eq!(force_push.status, 200, "{force_push}");
    let decision = force_push.json();
    assert_eq!(decision["verdict"], "deny", "protect-main still denies");
    let reasons: Vec<&str> = decision["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["handler"].as_str().expect("handler"))
        .collect();
    assert_eq!(
        reasons,
        ["protect-main"],
        "an open gate's failure is no reason to deny"
    );
    assert_eq!(decision["observersQueued"], 2, "{force_push}");
    let panicky = &decision["gates"][0];
    assert_eq!(panicky["handler"], "panicky-gate");
    assert_eq!(panicky["status"], "trap");
    assert_eq!(panicky["verdict"], "allow");
    let reason = panicky["reason"].as_str().expect("a failed gate says why");
    assert!(
        reason.contains("panicky-gate failed (trap")
            && reason.contains("chaos: asked to panic")
            && reason.contains("failurePolicy open allows"),
        "{reason}"
    );

    let create = host.post_events(&ref_update(
        "iso-2",
        "git.branch.created",
        "refs/heads/main",
    ));
    assert_eq!(create.status, 200, "{create}");
    assert_eq!(create.json()["verdict"], "allow", "{create}");

    host.wait_until("both observers have handled both events", || {
        host.invocations("console-logger", "ok") == 2
            && host.invocations("broken-observer", "error") == 2
    });
    assert_eq!(host.all_invocations("console-logger"), 2);
    assert_eq!(host.invocations("panicky-gate", "trap"), 2);
    assert_eq!(host.invocations("protect-main", "ok"), 2);
    assert_eq!(host.handler("protect-main")["counters"]["denied"], 1);
    assert_eq!(
        host.handler("panicky-gate")["counters"]["denied"],
        0,
        "an open gate's failure is not a denial"
    );

    let metrics = host.metrics();
    for (handler, status, count) in [
        ("broken-observer", "error", 2.0),
        ("broken-observer", "ok", 0.0),
        ("panicky-gate", "trap", 2.0),
        ("console-logger", "ok", 2.0),
        ("console-logger", "error", 0.0),
        ("protect-main", "ok", 2.0),
    ] {
        let series = format!(
            "hookwasm_handler_invocations_total{{handler=\"{handler}\",status=\"{status}\"}}"
        );
        assert_eq!(metrics.expect(&series), count, "{series}");
    }

    let stopped = host.terminate();
    let log = &stopped.log;
    let printed = log.guest_stdout("console-logger");
    assert_eq!(
        printed.len(),
        2,
        "the healthy observer saw both events\n{log}"
    );
    for failure in log.failures_of("broken-observer") {
        assert_eq!(failure.field("cause"), Some("error"), "{log}");
        assert!(
            failure.field("version").is_some(),
            "logged with its version"
        );
        assert!(failure.field("event").is_some(), "logged with the event id");
    }
    assert_eq!(log.failures_of("broken-observer").len(), 2, "{log}");
    assert_eq!(log.failures_of("panicky-gate").len(), 2, "{log}");
}

#[test]
fn a_failing_gate_with_closed_policy_denies_and_names_itself_and_the_cause() {
    // Gates fail closed by default: an error and an endless loop (out of fuel) each deny, and
    // each reason names the gate and what went wrong.
    let work = Workdir::new();
    let mut spinning = chaos_gate("spinning-gate", "loop");
    spinning["limits"] = json!({ "fuel": 2_000_000, "timeoutMs": 60_000 });
    let host = Host::serve(&work.config(&[chaos_gate("failing-gate", "error"), spinning]));

    let response = host.post_events(&custom("closed-1"));
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    assert_eq!(decision["verdict"], "deny", "{response}");
    let reasons: BTreeMap<String, String> = decision["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| {
            (
                r["handler"].as_str().expect("handler").to_owned(),
                r["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons.get("failing-gate").map(String::as_str),
        Some("failing-gate failed (error: chaos: asked to fail); failurePolicy closed denies"),
        "{response}"
    );
    let spinning = reasons
        .get("spinning-gate")
        .unwrap_or_else(|| panic!("the spinning gate denies: {response}"));
    assert!(
        spinning.starts_with("spinning-gate failed (out-of-fuel")
            && spinning.contains("failurePolicy closed denies"),
        "{spinning}"
    );
    let statuses: Vec<&str> = decision["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .map(|g| g["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["error", "out-of-fuel"]);
    assert_eq!(host.handler("failing-gate")["counters"]["denied"], 1);
}

/// What the chaos `echo` behavior reported about the event it saw.
fn echoed(report: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(report["annotations"].clone()).expect("annotations are a string map")
}

#[test]
fn each_handler_gets_its_own_copy_of_the_event() {
    // Replay each kind of event through [echo, mutate, echo]: the mutator rewrites every field
    // of its copy, yet both echoes see exactly the original event (same fields, same digest of
    // every field) as a lone echo does when no mutator is around.
    let work = Workdir::new();
    let events = [
        ref_update("copy-ref", "git.branch.force-pushed", "refs/heads/main"),
        proxy_action("copy-proxy", "push.completed"),
        custom("copy-custom"),
    ];
    let events_file = work.ndjson("events.ndjson", &events);
    let replay = |handlers: &[Value]| {
        let config = work.config(handlers);
        let run = hookwasm(&[
            "replay",
            "--config",
            &config.to_string_lossy(),
            &events_file.to_string_lossy(),
        ]);
        run.assert_code(0);
        run
    };

    // The originals, as a lone handler sees them.
    let alone = replay(&[chaos("echo-alone", "echo")]).reports();
    assert_eq!(alone.len(), events.len());
    for (event, report) in events.iter().zip(&alone) {
        let original = echoed(report);
        assert_eq!(original["id"], event["id"].as_str().expect("id"));
        assert_eq!(original["type"], event["type"].as_str().expect("type"));
        assert_eq!(
            original["source"],
            event["source"].as_str().expect("source")
        );
        assert_eq!(original["time"], event["time"].as_str().expect("time"));
        assert_eq!(original["digest"].len(), 16, "{report}");
    }

    let run = replay(&[
        chaos("echo-first", "echo"),
        chaos("mutator", "mutate"),
        chaos("echo-last", "echo"),
    ]);
    let reports = run.reports();
    assert_eq!(reports.len(), 9, "3 events x 3 handlers\n{run}");
    for ((event, reports), lone) in events.iter().zip(reports.chunks(3)).zip(&alone) {
        let handlers: Vec<&str> = reports
            .iter()
            .map(|r| r["handler"].as_str().expect("handler"))
            .collect();
        assert_eq!(handlers, ["echo-first", "mutator", "echo-last"], "{run}");
        assert_eq!(reports[1]["annotations"]["mutated"], "true", "{run}");
        let original = echoed(lone);
        let id = &event["id"];
        assert_eq!(
            echoed(&reports[0]),
            original,
            "echo-first saw a changed {id}"
        );
        assert_eq!(
            echoed(&reports[2]),
            original,
            "echo-last saw a changed {id}"
        );
    }
}
