//! The one-shot commands a plugin author and a script use: `call`, `replay` and `events`. Their
//! JSON output is a contract, and so are the exit codes: 0 success, 1 a handler failed or
//! denied, 2 bad usage or bad input.

use serde_json::{Value, json};

use crate::support::{
    Guest, Hookwasm, Workdir, chaos, console_logger, custom, hookwasm, protect_main, ref_update,
};

/// `hookwasm call MODULE --event FILE --handler-config CONFIG [extra…]`.
fn call(
    module: &str,
    event: &std::path::Path,
    config: &str,
    extra: &[&str],
) -> crate::support::Run {
    let event = event.to_string_lossy();
    let mut args = vec![
        "call",
        module,
        "--event",
        &event,
        "--handler-config",
        config,
    ];
    args.extend_from_slice(extra);
    hookwasm(&args)
}

#[test]
fn call_prints_one_report_and_exits_0_when_the_handler_allows() {
    // Every field a script reads is there, with the module's real digest.
    let work = Workdir::new();
    let event = work.write("event.json", custom("call-ok").to_string());
    let run = call(&Guest::Chaos.module(), &event, r#"{"behavior": "ok"}"#, &[]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["handler"], "chaos", "named after the module file");
    assert_eq!(report["digest"], Guest::Chaos.sha256());
    assert_eq!(report["eventId"], "call-ok");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["verdict"], "allow");
    assert_eq!(report["reason"], Value::Null);
    assert_eq!(report["annotations"], json!({ "seen": "call-ok" }));
    assert!(
        report["fuelConsumed"].as_u64().is_some_and(|f| f > 0),
        "{report}"
    );
    assert!(
        report["durationMs"].as_f64().is_some_and(|d| d >= 0.0),
        "{report}"
    );
    assert!(
        report.get("mode").is_none(),
        "a direct call has no mode: {report}"
    );
}

#[test]
fn call_reads_the_event_from_stdin() {
    let run = Hookwasm::new()
        .args(&[
            "call",
            &Guest::BranchProtection.module(),
            "--event",
            "-",
            "--handler-config",
            r#"{"protected": ["main"]}"#,
        ])
        .stdin(&ref_update("stdin-1", "git.branch.created", "refs/heads/main").to_string())
        .run();
    run.assert_code(0);
    assert_eq!(run.report()["eventId"], "stdin-1");
}

#[test]
fn call_exits_1_when_the_handler_denies_errors_or_traps() {
    // Denying, returning an error, panicking and running out of fuel all exit 1, each with a
    // report that says which and why.
    let work = Workdir::new();
    let event = work.write(
        "event.json",
        ref_update("call-1", "git.branch.force-pushed", "refs/heads/main").to_string(),
    );

    let run = call(
        &Guest::BranchProtection.module(),
        &event,
        r#"{"protected": ["main"]}"#,
        &[],
    );
    run.assert_code(1);
    let report = run.report();
    assert_eq!(report["handler"], "branch-protection");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["verdict"], "deny");
    assert_eq!(
        report["reason"],
        "force-push to protected branch refs/heads/main is not allowed \
         (branch-protection rule \"main\")"
    );
    assert_eq!(
        report["annotations"],
        json!({ "rule": "main", "ref": "refs/heads/main", "change": "force-pushed" })
    );

    let chaos = Guest::Chaos.module();
    let cases = [
        ("error", &[][..], "error", "error: chaos: asked to fail"),
        ("panic", &[][..], "trap", "chaos: asked to panic"),
        (
            "loop",
            &["--fuel", "1000000"][..],
            "out-of-fuel",
            "out-of-fuel: ",
        ),
    ];
    for (behavior, extra, status, reason) in cases {
        let config = json!({ "behavior": behavior }).to_string();
        let run = call(&chaos, &event, &config, extra);
        run.assert_code(1);
        let report = run.report();
        assert_eq!(report["status"], status, "{behavior}: {run}");
        assert_eq!(
            report["verdict"],
            Value::Null,
            "a failure has no verdict: {run}"
        );
        let got = report["reason"].as_str().expect("a failure says why");
        assert!(
            got.contains(reason),
            "{behavior}: {got:?} should contain {reason:?}"
        );
    }
}

#[test]
fn call_exits_2_with_one_error_line_on_bad_input() {
    // Bad usage never gets as far as running a handler: one readable `error:` line, exit 2,
    // nothing on stdout, no backtrace.
    let work = Workdir::new();
    let good_event = work.write("event.json", custom("bad-1").to_string());
    let not_json = work.write("not-json.json", "{\"specversion\": \"1.0\", ");
    let no_id = {
        let mut event = custom("x");
        event.as_object_mut().expect("object").remove("id");
        work.write("no-id.json", event.to_string())
    };
    let missing_module = work.path().join("missing.wasm");
    let chaos = Guest::Chaos.module();
    let ok = r#"{"behavior": "ok"}"#;

    let cases: [(&str, &std::path::Path, &str, &[&str]); 6] = [
        (&chaos, &not_json, ok, &["not valid JSON", "not-json.json"]),
        (&chaos, &no_id, ok, &["`id` is missing", "no-id.json"]),
        (
            &chaos,
            &work.path().join("nowhere.json"),
            ok,
            &["cannot read", "nowhere.json"],
        ),
        (
            &missing_module.to_string_lossy(),
            &good_event,
            ok,
            &["cannot read module", "missing.wasm"],
        ),
        (
            &chaos,
            &good_event,
            "{behavior: ok}",
            &["--handler-config is not valid JSON"],
        ),
        (
            &chaos,
            &good_event,
            r#"{"behavior": "sing"}"#,
            &[
                "init refused the handler config",
                "unknown variant `sing`",
                "--handler-config",
            ],
        ),
    ];
    for (module, event, config, expected) in cases {
        let run = call(module, event, config, &[]);
        run.assert_code(2);
        assert!(run.stdout.is_empty(), "nothing on stdout\n{run}");
        let error = run.error();
        assert_eq!(error.trim_end().lines().count(), 1, "one line\n{run}");
        for text in expected {
            assert!(
                error.contains(text),
                "{text:?} missing from the error\n{run}"
            );
        }
    }

    let run = hookwasm(&["call", &chaos]);
    assert_eq!(run.code, Some(2), "a missing --event is bad usage\n{run}");
}

#[test]
fn replay_prints_one_report_per_event_and_handler_in_config_order() {
    // An observer on everything and a gate on `git.branch.*`: each event gets a line per
    // subscribed handler, in config order, with its mode; a deny makes the exit code 1.
    let work = Workdir::new();
    let config = work.config(&[console_logger(), protect_main()]);
    let config = config.to_string_lossy();
    let events = [
        ref_update("replay-1", "git.branch.force-pushed", "refs/heads/main"),
        ref_update("replay-2", "git.branch.created", "refs/heads/feature"),
        custom("replay-3"),
    ];
    let file = work.ndjson("events.ndjson", &events);

    let run = hookwasm(&["replay", "--config", &config, &file.to_string_lossy()]);
    run.assert_code(1);
    let lines: Vec<(String, String, String, String)> = run
        .reports()
        .iter()
        .map(|r| {
            let text = |key: &str| r[key].as_str().unwrap_or("null").to_owned();
            (
                text("eventId"),
                text("handler"),
                text("mode"),
                text("verdict"),
            )
        })
        .collect();
    let line = |id: &str, handler: &str, mode: &str, verdict: &str| {
        (id.into(), handler.into(), mode.into(), verdict.into())
    };
    assert_eq!(
        lines,
        [
            line("replay-1", "console-logger", "observe", "allow"),
            line("replay-1", "protect-main", "gate", "deny"),
            line("replay-2", "console-logger", "observe", "allow"),
            line("replay-2", "protect-main", "gate", "allow"),
            line("replay-3", "console-logger", "observe", "allow"),
        ],
        "{run}"
    );

    // The same without the denied event, from standard input: exit 0.
    let allowed: Vec<String> = events[1..].iter().map(Value::to_string).collect();
    let run = Hookwasm::new()
        .args(&["replay", "--config", &config, "-"])
        .stdin(&allowed.join("\n"))
        .run();
    run.assert_code(0);
    assert_eq!(run.reports().len(), 3, "{run}");
}

#[test]
fn replay_exits_1_when_a_handler_fails_and_2_on_a_bad_line() {
    let work = Workdir::new();
    let config = work.config(&[chaos("broken", "error")]);
    let config = config.to_string_lossy();

    let good = work.ndjson("good.ndjson", &[custom("r-1")]);
    let run = hookwasm(&["replay", "--config", &config, &good.to_string_lossy()]);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(report["status"], "error");
    assert_eq!(report["mode"], "observe");

    // A bad line is reported with its number, and nothing is replayed.
    let mut lines = vec![custom("r-2").to_string(), custom("r-3").to_string()];
    lines.push(r#"{"specversion": "1.0", "id": "r-4", "source": "s"}"#.to_owned());
    let bad = work.write("bad.ndjson", lines.join("\n"));
    let run = hookwasm(&["replay", "--config", &config, &bad.to_string_lossy()]);
    run.assert_code(2);
    assert!(run.stdout.is_empty(), "nothing is replayed\n{run}");
    let error = run.error();
    assert!(
        error.contains("bad.ndjson line 3") && error.contains("`type` is missing"),
        "{run}"
    );
}

#[test]
fn call_and_replay_stop_a_spinning_handler_at_its_deadline() {
    // A handler that spins with fuel for many seconds but a 300 ms deadline must end as
    // `timeout`, not run until its fuel is gone: the wall-clock limit holds in both commands.
    const FUEL: u64 = 100_000_000_000; // several seconds of spinning
    let work = Workdir::new();
    let fuel = FUEL.to_string();
    let event = work.write("event.json", custom("spin-1").to_string());
    let run = call(
        &Guest::Chaos.module(),
        &event,
        r#"{"behavior": "loop"}"#,
        &["--fuel", &fuel, "--timeout-ms", "300"],
    );
    run.assert_code(1);
    assert_eq!(run.report()["status"], "timeout", "{run}");

    let mut spinner = chaos("spinner", "loop");
    spinner["limits"] = json!({ "fuel": FUEL, "timeoutMs": 300 });
    let config = work.config(&[spinner]);
    let events = work.ndjson("events.ndjson", &[custom("spin-2")]);
    let run = hookwasm(&[
        "replay",
        "--config",
        &config.to_string_lossy(),
        &events.to_string_lossy(),
    ]);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(report["status"], "timeout", "{run}");
    assert_eq!(report["reason"], "timeout: did not answer within 300 ms");
}

#[test]
fn events_lists_every_typed_event_with_its_payload_schema() {
    let run = hookwasm(&["events"]);
    run.assert_code(0);
    let catalogue: Vec<Value> = serde_json::from_str(&run.stdout).expect("a JSON list");
    let types: Vec<&str> = catalogue
        .iter()
        .map(|t| t["type"].as_str().expect("type"))
        .collect();
    let mut expected: Vec<String> = Vec::new();
    for operation in ["push", "pull"] {
        for phase in [
            "started",
            "completed",
            "error",
            "permission-denied",
            "pending-review",
        ] {
            expected.push(format!("{operation}.{phase}"));
        }
    }
    for kind in ["branch", "tag"] {
        for change in ["created", "updated", "force-pushed", "deleted"] {
            if !(kind == "tag" && change == "force-pushed") {
                expected.push(format!("git.{kind}.{change}"));
            }
        }
    }
    expected.push("git.push.rejected".into());
    for wanted in &expected {
        assert!(types.contains(&wanted.as_str()), "{wanted} is not listed");
    }

    let schema_of = |event_type: &str| -> &Value {
        let entry = catalogue
            .iter()
            .find(|t| t["type"] == event_type)
            .unwrap_or_else(|| panic!("{event_type} is not listed"));
        assert!(
            entry["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{entry}"
        );
        &entry["dataSchema"]
    };
    let required = |event_type: &str| -> Vec<String> {
        serde_json::from_value(schema_of(event_type)["required"].clone())
            .unwrap_or_else(|e| panic!("{event_type}: `required` is a list of names ({e})"))
    };
    for event_type in expected.iter().filter(|t| t.starts_with("git.")) {
        let required = required(event_type);
        let wanted: &[&str] = if event_type == "git.push.rejected" {
            &["pushId", "repository", "pusher", "refs", "reason"]
        } else {
            &["pushId", "repository", "pusher", "ref", "before", "after"]
        };
        for field in wanted {
            assert!(
                required.iter().any(|r| r == field),
                "{event_type} requires {field}: {required:?}"
            );
        }
    }
    for event_type in expected.iter().filter(|t| !t.starts_with("git.")) {
        let required = required(event_type);
        assert!(
            required.iter().any(|r| r == "actionId") && required.iter().any(|r| r == "repository"),
            "{event_type}: {required:?}"
        );
    }
    let properties = &schema_of("git.branch.force-pushed")["properties"];
    assert!(properties["pushOptions"].is_object(), "{properties}");
}
