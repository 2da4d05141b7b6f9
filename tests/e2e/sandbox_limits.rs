//! Limits: every way a handler can misbehave (spin, wait in a host call, allocate, recurse,
//! panic, return or print too much, loop in `init`, reach for the machine) ends as one reported
//! cause, named with the handler and the event, while the host, the other handlers and the
//! producer carry on.
//!
//! Each misbehaviour runs through `hookwasm serve` as a gate (failing open, so the merged verdict
//! is the healthy gates' alone) and as an observer, both subscribed to `user.created` only,
//! beside a console logger (every event), a chaos `ok` gate (every event) and branch protection
//! (`git.branch.*`). Between two events for the culprit, branch events go through: their
//! verdicts must be exactly what the healthy gates say.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Guest, Hookwasm, Log, LogLine, Workdir, chaos, chaos_gate, console_logger, custom,
    protect_main, ref_update,
};

/// How much the host's resident memory may grow over a test: generous, since the allocator
/// keeps some of what it freed, yet far below what an unbounded copy of a 100 MiB string or a
/// million log lines per handler would take.
const RSS_GROWTH_BOUND_KIB: u64 = 200 * 1024;
/// What a gate that times out may take beyond its deadline before the producer has its answer.
const DEADLINE_SLACK: Duration = Duration::from_millis(1_500);
/// Time for the observers to work through events that end quickly.
const SETTLE: Duration = Duration::from_secs(60);

/// One misbehaviour and what the host must report about it.
#[derive(Debug)]
struct Case {
    /// Names the culprits `<stem>-gate` and `<stem>-observer`, and prefixes the event ids.
    stem: &'static str,
    /// The chaos config.
    config: Value,
    /// The culprits' `limits`, when not the defaults.
    limits: Option<Value>,
    /// The status every invocation of the culprits ends with.
    status: &'static str,
    /// How the failure's cause starts (after `<status>: `), for a failure.
    cause: &'static str,
    /// Run the culprit as a gate too (observers always).
    gate: bool,
    /// Events sent to the culprits.
    events: usize,
    /// The culprit gate's deadline, when the producer's answer must come within it (plus
    /// [`DEADLINE_SLACK`]).
    deadline: Option<Duration>,
    /// How long the observers may take in all.
    settle: Duration,
}

impl Case {
    fn failing(
        stem: &'static str,
        behavior: &str,
        status: &'static str,
        cause: &'static str,
    ) -> Case {
        Case {
            stem,
            config: json!({ "behavior": behavior }),
            limits: None,
            status,
            cause,
            gate: true,
            events: 3,
            deadline: None,
            settle: SETTLE,
        }
    }

    fn gate_name(&self) -> String {
        format!("{}-gate", self.stem)
    }

    fn observer_name(&self) -> String {
        format!("{}-observer", self.stem)
    }

    fn culprits(&self) -> Vec<String> {
        let mut names = vec![self.observer_name()];
        if self.gate {
            names.insert(0, self.gate_name());
        }
        names
    }

    fn entry(&self, name: &str, gate: bool) -> Value {
        let mut entry = json!({
            "name": name,
            "module": Guest::Chaos.module(),
            "mode": if gate { "gate" } else { "observe" },
            "events": ["user.created"],
            "config": self.config,
            // The tests are about each invocation's cause; quarantine has its own tests.
            "quarantine": { "afterFailures": 1_000 },
        });
        if gate {
            entry["failurePolicy"] = json!("open");
        }
        if let Some(limits) = &self.limits {
            entry["limits"] = limits.clone();
        }
        entry
    }
}

/// What [`contain`] leaves for case-specific checks.
#[derive(Debug)]
struct Contained {
    /// The whole log of the host, which has exited.
    log: Log,
    /// The ids of the events the culprits got, in order.
    culprit_events: Vec<String>,
}

/// The report `gate` gave in `decision`.
fn gate_report<'a>(decision: &'a Value, gate: &str) -> &'a Value {
    decision["gates"]
        .as_array()
        .expect("`gates` is a list")
        .iter()
        .find(|g| g["handler"] == gate)
        .unwrap_or_else(|| panic!("no report of {gate} in {decision}"))
}

/// The gates that answered, in order.
fn gate_names(decision: &Value) -> Vec<&str> {
    decision["gates"]
        .as_array()
        .expect("`gates` is a list")
        .iter()
        .map(|g| g["handler"].as_str().expect("handler"))
        .collect()
}

/// Runs the case through `hookwasm serve` and checks everything every case shares: the cause
/// reported (gate answer, log, counters, metrics), the other handlers unaffected, the host alive
/// with bounded memory, and a clean shutdown.
fn contain(case: &Case) -> Contained {
    let work = Workdir::new();
    let mut entries = Vec::new();
    if case.gate {
        entries.push(case.entry(&case.gate_name(), true));
    }
    entries.push(case.entry(&case.observer_name(), false));
    entries.extend([
        console_logger(),
        chaos_gate("steady-gate", "ok"),
        protect_main(),
    ]);
    let mut host = Hookwasm::new().shared_cache().serve(&work.config(&entries));
    let rss_before = host.rss_kib();

    let mut culprit_events = Vec::new();
    let mut every_event = Vec::new();
    for n in 0..case.events {
        let id = format!("{}-{n}", case.stem);
        let started = Instant::now();
        let response = host.post_events(&custom(&id));
        let took = started.elapsed();
        let what = format!("{id}: {response}");
        assert_eq!(response.status, 200, "{what}");
        let decision = response.json();
        assert_eq!(decision["eventId"], id.as_str(), "{what}");
        assert_eq!(
            decision["verdict"], "allow",
            "the culprit fails open and the steady gate allows: {what}"
        );
        assert_eq!(decision["reasons"], json!([]), "{what}");
        assert_eq!(decision["observersQueued"], 2, "{what}");
        let steady = gate_report(&decision, "steady-gate");
        assert_eq!(steady["status"], "ok", "{what}");
        assert_eq!(steady["annotations"], json!({ "seen": id }), "{what}");
        if case.gate {
            assert_eq!(
                gate_names(&decision),
                [case.gate_name().as_str(), "steady-gate"]
            );
            let report = gate_report(&decision, &case.gate_name());
            assert_eq!(report["eventId"], id.as_str(), "{what}");
            assert_eq!(report["status"], case.status, "{what}");
            assert_eq!(report["verdict"], "allow", "failurePolicy open: {what}");
            let reason = report["reason"].as_str().expect("a failure says why");
            let expected = format!(
                "{} failed ({}: {}",
                case.gate_name(),
                case.status,
                case.cause
            );
            assert!(
                reason.starts_with(&expected) && reason.ends_with("; failurePolicy open allows"),
                "{reason:?} should start with {expected:?}"
            );
            if let Some(deadline) = case.deadline {
                assert!(
                    took < deadline + DEADLINE_SLACK,
                    "a gate with a {deadline:?} deadline answered in {took:?}"
                );
            }
        }
        culprit_events.push(id.clone());
        every_event.push(id.clone());

        // Events dispatched meanwhile get exactly the healthy gates' verdicts.
        for (suffix, event_type, verdict) in [
            ("force", "git.branch.force-pushed", "deny"),
            ("create", "git.branch.created", "allow"),
        ] {
            let branch_id = format!("{id}-{suffix}");
            let response = host.post_events(&ref_update(&branch_id, event_type, "refs/heads/main"));
            let what = format!("{branch_id}: {response}");
            assert_eq!(response.status, 200, "{what}");
            let decision = response.json();
            assert_eq!(decision["verdict"], verdict, "{what}");
            assert_eq!(
                gate_names(&decision),
                ["steady-gate", "protect-main"],
                "{what}"
            );
            assert_eq!(
                gate_report(&decision, "steady-gate")["status"],
                "ok",
                "{what}"
            );
            assert_eq!(
                gate_report(&decision, "protect-main")["status"],
                "ok",
                "{what}"
            );
            let reasons: Vec<&str> = decision["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .map(|r| r["handler"].as_str().expect("handler"))
                .collect();
            let expected: &[&str] = if verdict == "deny" {
                &["protect-main"]
            } else {
                &[]
            };
            assert_eq!(reasons, expected, "{what}");
            every_event.push(branch_id);
        }
    }

    let total = every_event.len() as u64;
    let events = case.events as u64;
    host.wait_until_within(
        case.settle,
        "every observer has handled every event",
        || {
            host.all_invocations(&case.observer_name()) == events
                && host.invocations("console-logger", "ok") == total
        },
    );

    // The cause, counted against the culprits alone.
    for culprit in case.culprits() {
        let entry = host.handler(&culprit);
        assert_eq!(
            entry["counters"]["invocations"],
            json!({ case.status: events }),
            "{culprit}: {entry}"
        );
    }
    assert_eq!(
        host.handler("console-logger")["counters"]["invocations"],
        json!({ "ok": total })
    );
    assert_eq!(
        host.handler("steady-gate")["counters"]["invocations"],
        json!({ "ok": total })
    );
    let protect = host.handler("protect-main");
    assert_eq!(
        protect["counters"]["invocations"],
        json!({ "ok": 2 * events })
    );
    assert_eq!(protect["counters"]["denied"], events);
    let metrics = host.metrics();
    for culprit in case.culprits() {
        let series = format!(
            "hookwasm_handler_invocations_total{{handler=\"{culprit}\",status=\"{}\"}}",
            case.status
        );
        assert_eq!(metrics.expect(&series), events as f64, "{series}");
    }

    // The host is alive, answers, and its memory did not grow with the misbehaviour.
    let rss_after = host.rss_kib();
    assert!(
        rss_after < rss_before + RSS_GROWTH_BOUND_KIB,
        "the host's memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(host.is_running(), "the host process exited");
    let health = host.get("/healthz");
    assert_eq!(health.status, 200, "{health}");

    let stopped = host.terminate();
    assert!(
        stopped.status.success(),
        "{:?}\n{}",
        stopped.status,
        stopped.log
    );
    let log = stopped.log;

    // The console logger printed every event once, in the order they were accepted.
    let printed: Vec<String> = log
        .guest_stdout("console-logger")
        .iter()
        .map(|line| {
            let line: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("console-logger printed non-JSON ({e}): {line}"));
            line["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(printed, every_event);

    // Each failure logged once, with the handler, the event and the cause.
    for culprit in case.culprits() {
        let failures = log.failures_of(&culprit);
        if case.status == "ok" {
            assert!(failures.is_empty(), "{culprit} did not fail\n{log}");
            continue;
        }
        let ids: Vec<&str> = failures
            .iter()
            .map(|l| l.field("event").expect("event"))
            .collect();
        assert_eq!(ids, culprit_events, "{culprit}\n{log}");
        for failure in &failures {
            assert_eq!(failure.field("cause"), Some(case.status), "{log}");
            let message = failure.message().expect("message");
            assert!(
                message.contains(case.cause),
                "{message:?} lacks {:?}",
                case.cause
            );
        }
    }
    for healthy in ["console-logger", "steady-gate", "protect-main"] {
        assert!(
            log.failures_of(healthy).is_empty(),
            "{healthy} failed\n{log}"
        );
    }
    Contained {
        log,
        culprit_events,
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    contain(&Case::failing(
        "spinner",
        "loop",
        "out-of-fuel",
        "used up its fuel (50000000 units) before answering",
    ));
}

#[test]
fn an_endless_loop_with_fuel_to_spare_is_stopped_at_its_deadline() {
    // Fuel would last for hours: only the 300 ms deadline stops it, and the producer has the
    // gate's answer within that deadline (plus slack), not after the spin.
    let mut case = Case::failing("racer", "loop", "timeout", "did not answer within 300 ms");
    case.limits = Some(json!({ "fuel": 1_000_000_000_000_u64, "timeoutMs": 300 }));
    case.deadline = Some(Duration::from_millis(300));
    contain(&case);
}

#[test]
fn a_handler_blocked_in_a_host_call_is_stopped_at_its_deadline() {
    // `sleep` waits 60 s inside a host call (wasi:clocks) and burns no fuel: the deadline must
    // cover time spent in the host too.
    let mut case = Case::failing(
        "sleeper",
        "sleep",
        "timeout",
        "did not answer within 300 ms",
    );
    case.limits = Some(json!({ "timeoutMs": 300 }));
    case.deadline = Some(Duration::from_millis(300));
    contain(&case);
}

#[test]
fn an_allocation_bomb_hits_the_memory_limit() {
    contain(&Case::failing(
        "hoarder",
        "alloc",
        "memory-limit",
        "tried to grow memory past its limit of 64 MiB",
    ));
}

#[test]
fn unbounded_recursion_overflows_the_wasm_stack() {
    contain(&Case::failing(
        "diver",
        "recurse",
        "stack-overflow",
        "overflowed the wasm stack",
    ));
}

#[test]
fn a_panic_is_a_trap_reported_with_the_panic_message() {
    contain(&Case::failing(
        "panicker",
        "panic",
        "trap",
        "panicked: chaos: asked to panic",
    ));
}

#[test]
fn a_100_mib_error_message_is_refused_as_oversize_when_memory_lets_the_guest_build_it() {
    // With room to build it (128 MiB, fuel for the 100 MiB write), the string reaches the
    // boundary and is refused there: the producer and the log get the size, not the string.
    let mut case = Case::failing(
        "bigmouth",
        "big-string",
        "oversize",
        "returned a 104857600-byte error message; the limit is 4096 bytes",
    );
    case.limits = Some(json!({ "memoryMiB": 128, "fuel": 400_000_000, "timeoutMs": 20_000 }));
    let contained = contain(&case);
    assert!(
        contained.log.0.iter().all(|line| line.len() < 64 * 1024),
        "no log line carries the string"
    );
}

#[test]
fn a_100_mib_error_message_hits_the_memory_limit_under_default_limits() {
    contain(&Case::failing(
        "bigmouth-default",
        "big-string",
        "memory-limit",
        "tried to grow memory past its limit of 64 MiB",
    ));
}

/// The log lines of one invocation of `handler` on `event`.
fn invocation_lines(log: &Log, handler: &str, event: &str) -> Vec<LogLine> {
    log.lines()
        .filter(|l| l.field("handler") == Some(handler) && l.field("event") == Some(event))
        .collect()
}

/// A flood case: one event, as an observer only, with fuel and time to finish.
fn flood(stem: &'static str, behavior: &str) -> Case {
    Case {
        stem,
        config: json!({ "behavior": behavior }),
        // Measured: about 0.9 G fuel for log-flood, 1.7 G for stdout-flood; a debug host takes
        // tens of seconds for a million stdout writes.
        limits: Some(json!({ "fuel": 4_000_000_000_u64, "timeoutMs": 240_000 })),
        status: "ok",
        cause: "",
        gate: false,
        events: 1,
        deadline: None,
        settle: Duration::from_secs(300),
    }
}

/// The host forwarded exactly the first 1,000 lines of the flood and reported the rest once.
fn assert_flood_cut(contained: &Contained, handler: &str, prefix: &str) {
    let event = &contained.culprit_events[0];
    let lines = invocation_lines(&contained.log, handler, event);
    let kept: Vec<&str> = lines
        .iter()
        .filter_map(LogLine::message)
        .filter(|m| m.starts_with(prefix))
        .collect();
    assert_eq!(
        kept.len(),
        1_000,
        "1,000 lines per invocation are forwarded"
    );
    assert_eq!(kept[0], format!("{prefix}0"));
    assert_eq!(kept[999], format!("{prefix}999"));
    let dropped: Vec<&str> = lines
        .iter()
        .filter_map(LogLine::message)
        .filter(|m| m.starts_with("dropped "))
        .collect();
    assert_eq!(
        dropped,
        ["dropped 999000 lines of guest output over the limit of 1000 per invocation"],
        "the rest is counted in one warning"
    );
    assert_eq!(
        lines.len(),
        1_001,
        "nothing else logged for that invocation"
    );
}

#[test]
fn a_million_log_calls_are_cut_at_1000_lines_and_counted() {
    let contained = contain(&flood("chatterbox", "log-flood"));
    assert_flood_cut(&contained, "chatterbox-observer", "chaos: log flood ");
}

#[test]
fn a_million_stdout_lines_are_cut_at_1000_lines_and_counted() {
    let contained = contain(&flood("printer", "stdout-flood"));
    assert_flood_cut(&contained, "printer-observer", "chaos: stdout flood ");
}

#[test]
fn an_init_that_never_returns_is_refused_at_load() {
    // `init` runs under the same limits as events: under the defaults it runs out of fuel; with
    // fuel to spare the deadline stops it. Either way the handler is not loaded: `check` exits 2
    // naming both, and `serve` refuses to start.
    let work = Workdir::new();
    let mut patient = chaos("patient-init", "init-loop");
    patient["limits"] = json!({ "fuel": 1_000_000_000_000_u64, "timeoutMs": 300 });
    let config = work.config(&[
        console_logger(),
        chaos("spinning-init", "init-loop"),
        patient,
    ]);
    let config = config.to_string_lossy();

    let run = Hookwasm::new()
        .shared_cache()
        .args(&["check", "--config", &config])
        .run();
    run.assert_code(2);
    let error = run.error();
    assert!(
        error.contains("2 of 3 enabled handlers could not be loaded"),
        "{run}"
    );
    assert!(
        error.contains(
            "eventHandlers[1] (spinning-init): init failed (out-of-fuel): used up its fuel \
             (50000000 units) before answering"
        ),
        "{run}"
    );
    assert!(
        error.contains(
            "eventHandlers[2] (patient-init): init failed (timeout): did not answer within 300 ms"
        ),
        "{run}"
    );

    let run = Hookwasm::new()
        .shared_cache()
        .args(&["serve", "--config", &config, "--listen", "127.0.0.1:0"])
        .run();
    run.assert_code(2);
    assert!(run.error().contains("spinning-init"), "{run}");
    assert!(run.error().contains("patient-init"), "{run}");
    assert!(!run.stderr.contains("listening on"), "{run}");
}

#[test]
fn wasi_gives_a_handler_no_files_environment_arguments_or_sockets() {
    // The host runs with a variable of its own in its environment; the handler sees no
    // variable at all, no arguments, no files and no sockets, only clocks and randomness.
    let work = Workdir::new();
    let mut probe = chaos_gate("prober", "wasi-probe");
    probe["failurePolicy"] = json!("open");
    let host = Hookwasm::new()
        .shared_cache()
        .args(&[])
        .envs(&[("HOOKWASM_E2E_CANARY", "the handler must not see this")])
        .serve(&work.config(&[probe, console_logger()]));
    let response = host.post_events(&custom("probe-1"));
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    let report = gate_report(&decision, "prober");
    assert_eq!(report["status"], "ok", "{response}");
    let seen = &report["annotations"];
    for denied in ["fs", "env", "net-connect", "net-bind"] {
        let value = seen[denied].as_str().unwrap_or_default();
        assert!(value.starts_with("denied: "), "{denied}: {value:?}");
    }
    assert_eq!(seen["env-count"], "0", "{response}");
    assert_eq!(seen["args"], "0 []", "{response}");
    for allowed in ["clock", "random"] {
        let value = seen[allowed].as_str().unwrap_or_default();
        assert!(value.starts_with("allowed: "), "{allowed}: {value:?}");
    }
    host.wait_until("the console logger has the event", || {
        host.invocations("console-logger", "ok") == 1
    });
}
