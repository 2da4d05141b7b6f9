//! The HTTP surface: a bad request is refused with a reason and changes nothing; the status
//! endpoints describe the handlers and count what they did.

use serde_json::{Value, json};

use crate::support::{Guest, Host, Workdir, chaos_gate, console_logger, custom, ref_update};

#[test]
fn bad_events_get_400_with_a_reason_and_the_server_keeps_serving() {
    // Each malformed request is answered 400 with a JSON error naming the problem, nothing of
    // it is dispatched (a batch with one bad event queues none), and a valid event afterwards
    // is accepted as usual.
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[console_logger()]));

    let mut missing_id = custom("x");
    missing_id.as_object_mut().expect("object").remove("id");
    let mut wrong_field = ref_update("wrong-field", "git.branch.created", "refs/heads/main");
    wrong_field["data"]["ref"] = json!(42);
    let mut no_pusher = ref_update("no-pusher", "git.branch.created", "refs/heads/main");
    no_pusher["data"]
        .as_object_mut()
        .expect("object")
        .remove("pusher");
    let unknown_git_type = ref_update("renamed", "git.branch.renamed", "refs/heads/main");
    let mut old_spec = custom("old");
    old_spec["specversion"] = json!("0.3");
    let bad_batch = json!([custom("batch-ok"), wrong_field.clone()]);

    let cases: [(String, &[&str]); 9] = [
        ("{\"specversion\": \"1.0\",".into(), &["not valid JSON"]),
        ("".into(), &["not valid JSON"]),
        (missing_id.to_string(), &["`id` is missing"]),
        (
            unknown_git_type.to_string(),
            &[
                "unknown event type \"git.branch.renamed\"",
                "hookwasm events",
            ],
        ),
        (
            wrong_field.to_string(),
            &["git.branch.created", "invalid type: integer `42`"],
        ),
        (no_pusher.to_string(), &["missing field `pusher`"]),
        (old_spec.to_string(), &["`specversion`", "1.0"]),
        ("[]".into(), &["empty"]),
        (bad_batch.to_string(), &["event [1]", "invalid type"]),
    ];
    for (body, expected) in &cases {
        let response = host.post("/v1/events", body);
        assert_eq!(response.status, 400, "{body}\n{response}");
        let error = response.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("a 400 carries {{\"error\": …}}: {response}"))
            .to_owned();
        for text in *expected {
            assert!(
                error.contains(text),
                "{text:?} missing from {error:?} for {body}"
            );
        }
    }

    let response = host.post_events(&custom("valid-after-errors"));
    assert_eq!(response.status, 202, "{response}");
    assert_eq!(response.json()["observersQueued"], 1);
    host.wait_until("the valid event is delivered", || {
        host.invocations("console-logger", "ok") == 1
    });
    let metrics = host.metrics();
    assert_eq!(
        metrics.expect("hookwasm_events_refused_total{reason=\"invalid\"}"),
        cases.len() as f64
    );
    assert_eq!(metrics.expect("hookwasm_events_received_total"), 1.0);

    let stopped = host.terminate();
    let delivered: Vec<Value> = stopped
        .log
        .guest_stdout("console-logger")
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(delivered.len(), 1, "no part of a bad request was delivered");
    assert_eq!(delivered[0]["id"], "valid-after-errors");
}

#[test]
fn status_endpoints_describe_the_handlers_and_count_what_they_did() {
    // /healthz answers; /v1/handlers shows each handler's config and counters; /metrics has the
    // documented series with counts that match what was sent; an unknown route is a JSON 404.
    let work = Workdir::new();
    let mut gate = chaos_gate("approver", "ok");
    gate["events"] = json!(["git.branch.*"]);
    gate["refs"] = json!(["refs/heads/main", "refs/heads/release/*"]);
    gate["limits"] = json!({ "fuel": 40_000_000, "timeoutMs": 700, "memoryMiB": 16 });
    let host = Host::serve(&work.config(&[console_logger(), gate]));

    let health = host.get("/healthz");
    assert_eq!(health.status, 200, "{health}");
    assert_eq!(health.json(), json!({ "status": "ok" }));

    // Three events reach the observer; two of them also reach the gate.
    let events = [
        ref_update("s-1", "git.branch.updated", "refs/heads/main"),
        ref_update("s-2", "git.branch.created", "refs/heads/release/2.0"),
        ref_update("s-3", "git.branch.created", "refs/heads/feature"),
    ];
    for event in &events {
        let response = host.post_events(event);
        assert!(
            response.status == 200 || response.status == 202,
            "{response}"
        );
    }
    // The invocation counter moves when a delivery has run; the outbox, once its outcome has
    // committed a moment later.
    host.wait_until("the observer has handled the three events", || {
        host.invocations("console-logger", "ok") == 3
            && host.handler("console-logger")["queueDepth"] == 0
    });

    let handlers = host.handlers();
    let names: Vec<&str> = handlers
        .iter()
        .map(|h| h["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["console-logger", "approver"], "config order");

    let logger = &handlers[0];
    assert_eq!(logger["module"], Guest::ConsoleLogger.module());
    assert_eq!(logger["digest"], Guest::ConsoleLogger.sha256());
    assert_eq!(logger["mode"], "observe");
    assert_eq!(logger["events"], json!([]));
    assert_eq!(logger["refs"], json!([]));
    assert_eq!(logger["queueDepth"], 0);
    assert_eq!(
        logger["limits"],
        json!({ "fuel": 50_000_000, "timeoutMs": 1_000, "memoryMiB": 64 }),
        "the documented defaults"
    );
    assert_eq!(logger["counters"]["invocations"], json!({ "ok": 3 }));
    assert_eq!(logger["counters"]["denied"], 0);

    let approver = &handlers[1];
    assert_eq!(approver["module"], Guest::Chaos.module());
    assert_eq!(approver["digest"], Guest::Chaos.sha256());
    assert_eq!(approver["mode"], "gate");
    assert_eq!(
        approver["failurePolicy"], "closed",
        "gates fail closed by default"
    );
    assert_eq!(approver["events"], json!(["git.branch.*"]));
    assert_eq!(
        approver["refs"],
        json!(["refs/heads/main", "refs/heads/release/*"])
    );
    assert_eq!(
        approver["limits"],
        json!({ "fuel": 40_000_000, "timeoutMs": 700, "memoryMiB": 16 })
    );
    assert_eq!(approver["queueDepth"], Value::Null, "a gate has no queue");
    assert_eq!(approver["counters"]["invocations"], json!({ "ok": 2 }));
    let approver_fuel = approver["counters"]["fuelConsumed"]
        .as_u64()
        .expect("fuelConsumed");
    assert!(approver_fuel > 0);

    let metrics = host.metrics();
    assert_eq!(metrics.expect("hookwasm_events_received_total"), 3.0);
    let series = |name: &str, handler: &str, extra: &str| {
        metrics.expect(&format!("{name}{{handler=\"{handler}\"{extra}}}"))
    };
    assert_eq!(
        series(
            "hookwasm_handler_invocations_total",
            "console-logger",
            ",status=\"ok\""
        ),
        3.0
    );
    assert_eq!(
        series(
            "hookwasm_handler_invocations_total",
            "approver",
            ",status=\"ok\""
        ),
        2.0
    );
    assert_eq!(
        series(
            "hookwasm_handler_invocations_total",
            "approver",
            ",status=\"trap\""
        ),
        0.0
    );
    assert_eq!(
        series("hookwasm_handler_duration_seconds_count", "approver", ""),
        2.0
    );
    assert_eq!(
        series(
            "hookwasm_handler_duration_seconds_bucket",
            "approver",
            ",le=\"+Inf\""
        ),
        2.0
    );
    assert!(series("hookwasm_handler_duration_seconds_sum", "approver", "") > 0.0);
    assert_eq!(
        series("hookwasm_handler_fuel_consumed_total", "approver", ""),
        approver_fuel as f64
    );
    assert_eq!(series("hookwasm_handler_denied_total", "approver", ""), 0.0);
    assert_eq!(
        series("hookwasm_observer_queue_depth", "console-logger", ""),
        0.0
    );
    assert_eq!(
        metrics.value("hookwasm_observer_queue_depth{handler=\"approver\"}"),
        None,
        "gates have no queue"
    );
    assert!(
        metrics
            .0
            .contains("# TYPE hookwasm_handler_duration_seconds histogram")
    );

    let missing = host.get("/v1/nothing-here");
    assert_eq!(missing.status, 404, "{missing}");
    assert!(missing.json()["error"].is_string(), "{missing}");
}
