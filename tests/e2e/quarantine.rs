//! Quarantine: after repeated failures a handler is taken out of service with a backoff; then
//! one event probes it (half-open), and success puts it back. While it is out, a gate answers at
//! once by its failure policy and an observer holds its events. Everything is visible over HTTP.
//!
//! The handler is the webhook plugin posting to a receiver the test controls: the receiver
//! answers 500 (the delivery fails), then holds the probe until the test has seen the half-open
//! state, then answers 200.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::receiver::{Latch, Received, Receiver, Reply};
use crate::support::Hookwasm;
use crate::support::{Host, Workdir, console_logger, custom, http, webhook_module};

/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers now.
#[derive(Debug, Clone)]
enum Mode {
    /// 500: every delivery fails.
    Fail,
    /// Hold each request until the latch opens, then answer 200.
    HoldThenOk(Arc<Latch>),
}

/// A receiver answering as `mode` says at the time each request arrives.
fn switchable_receiver(mode: &Arc<Mutex<Mode>>) -> Receiver {
    let mode = mode.clone();
    Receiver::start(move |_| {
        let now = mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match now {
            Mode::Fail => Reply::status(500, "receiver down"),
            Mode::HoldThenOk(latch) => {
                latch.wait();
                Reply::status(200, "ok")
            }
        }
    })
}

fn set(mode: &Arc<Mutex<Mode>>, new: Mode) {
    *mode.lock().unwrap_or_else(|p| p.into_inner()) = new;
}

/// The webhook plugin delivering to `receiver`, granted to reach it, with a deadline long
/// enough for the test to look at a held probe.
fn webhook(name: &str, receiver: &Receiver, quarantine: Value) -> Value {
    json!({
        "name": name,
        "module": webhook_module(),
        "config": { "url": receiver.url(&format!("/{name}")), "secret": SECRET },
        "capabilities": { "allowedHosts": [receiver.origin()] },
        "limits": { "timeoutMs": 20_000 },
        "quarantine": quarantine,
    })
}

/// The `webhook-id`s the receiver saw, in order, with the status each got.
fn deliveries(requests: &[Received]) -> Vec<(String, Option<u16>)> {
    requests
        .iter()
        .map(|r| {
            (
                r.header("webhook-id").unwrap_or("?").to_owned(),
                r.answered.map(|(status, _)| status),
            )
        })
        .collect()
}

fn delivered(ids: &[(&str, u16)]) -> Vec<(String, Option<u16>)> {
    ids.iter()
        .map(|&(id, status)| (id.to_owned(), Some(status)))
        .collect()
}

/// The request for event `id`.
fn request_for<'a>(requests: &'a [Received], id: &str) -> &'a Received {
    requests
        .iter()
        .find(|r| r.header("webhook-id") == Some(id))
        .unwrap_or_else(|| panic!("the receiver saw no delivery of {id}"))
}

/// `hookwasm_handler_quarantined` for `handler`.
fn quarantined_metric(host: &Host, handler: &str) -> f64 {
    host.metrics().expect(&format!(
        "hookwasm_handler_quarantined{{handler=\"{handler}\"}}"
    ))
}

/// The quarantine transitions logged for `handler`, in order.
fn transitions(host: &Host, handler: &str) -> Vec<String> {
    host.log()
        .lines()
        .filter(|l| l.field("handler") == Some(handler) && l.field("event").is_none())
        .filter_map(|l| l.message().map(str::to_owned))
        .filter(|m| m.contains("quarantined") || m.contains("probe"))
        .collect()
}

/// Waits until the breaker's backoff has run out (the next event will be the probe).
fn wait_for_probe_time(host: &Host, handler: &str) {
    host.wait_until(&format!("{handler}'s backoff has passed"), || {
        let view = &host.handler(handler)["quarantine"];
        view["state"] == "open" && view["probeInMs"] == 0
    });
}

#[test]
fn a_failing_gate_is_quarantined_answers_by_policy_at_once_then_a_probe_puts_it_back() {
    let mode = Arc::new(Mutex::new(Mode::Fail));
    let receiver = switchable_receiver(&mode);
    let mut gate = webhook(
        "flaky-gate",
        &receiver,
        json!({ "afterFailures": 3, "backoffMs": 1_000, "maxBackoffMs": 4_000 }),
    );
    gate["mode"] = json!("gate");
    gate["failurePolicy"] = json!("closed");
    let work = Workdir::new();
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[gate]));
    let report = |id: &str| {
        let response = host.post_events(&custom(id));
        assert_eq!(response.status, 200, "{id}: {response}");
        let decision = response.json();
        assert_eq!(decision["gates"][0]["eventId"], id, "{response}");
        decision["gates"][0].clone()
    };
    let view = || host.handler("flaky-gate")["quarantine"].clone();

    // Three failures in a row: each denied by the closed policy, with the receiver's answer.
    for n in 1..=3 {
        let id = format!("q-{n}");
        let report = report(&id);
        assert_eq!(report["status"], "error", "{report}");
        assert_eq!(report["verdict"], "deny", "{report}");
        let reason = report["reason"].as_str().expect("reason");
        assert!(
            reason.contains(&format!(
                "event {id} not delivered: {} answered 500",
                receiver.origin()
            )) && reason.ends_with("failurePolicy closed denies"),
            "{reason}"
        );
    }
    let open = view();
    assert_eq!(open["state"], "open", "{open}");
    assert_eq!(open["consecutiveFailures"], 3, "{open}");
    assert_eq!(open["quarantines"], 1, "{open}");
    assert!(
        open["probeInMs"].as_u64().is_some_and(|ms| ms <= 1_000),
        "{open}"
    );
    assert_eq!(quarantined_metric(&host, "flaky-gate"), 1.0);
    assert_eq!(
        host.metrics()
            .expect("hookwasm_handler_quarantines_total{handler=\"flaky-gate\"}"),
        1.0
    );

    // Quarantined: the next event is answered by the policy without running the handler.
    let refused = report("q-4");
    assert_eq!(refused["status"], "quarantined", "{refused}");
    assert_eq!(refused["verdict"], "deny", "{refused}");
    assert_eq!(refused["fuelConsumed"], 0, "not run: {refused}");
    let reason = refused["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(
            "flaky-gate failed (quarantined: quarantined after repeated failures; next probe in "
        ) && reason.ends_with("failurePolicy closed denies"),
        "{reason}"
    );

    // After the backoff one event probes it; the receiver still fails, so it is quarantined
    // again, for twice as long.
    wait_for_probe_time(&host, "flaky-gate");
    let probe = report("q-5");
    assert_eq!(
        probe["status"], "error",
        "the probe ran and failed: {probe}"
    );
    let reopened = view();
    assert_eq!(reopened["state"], "open", "{reopened}");
    assert_eq!(reopened["quarantines"], 2, "{reopened}");
    assert_eq!(reopened["consecutiveFailures"], 4, "{reopened}");

    // The receiver recovers, but holds the next probe: meanwhile the breaker is half-open and
    // every other event is answered at once by the policy.
    let latch = Latch::new();
    set(&mode, Mode::HoldThenOk(latch.clone()));
    wait_for_probe_time(&host, "flaky-gate");
    let addr = host.addr();
    let probe = std::thread::spawn(move || {
        http(addr, "POST", "/v1/events", Some(&custom("q-6").to_string()))
    });
    receiver.wait_until("the probe q-6 reached the receiver", |requests| {
        requests
            .iter()
            .any(|r| r.header("webhook-id") == Some("q-6"))
    });
    let probing = view();
    assert_eq!(probing["state"], "half-open", "{probing}");
    assert_eq!(quarantined_metric(&host, "flaky-gate"), 1.0);
    let refused = report("q-7");
    assert_eq!(
        refused["status"], "quarantined",
        "one probe at a time: {refused}"
    );
    assert_eq!(refused["verdict"], "deny", "{refused}");
    latch.open();
    let probe = probe.join().expect("the probe's request thread");
    assert_eq!(probe.status, 200, "{probe}");
    let probe = probe.json()["gates"][0].clone();
    assert_eq!(probe["eventId"], "q-6", "{probe}");
    assert_eq!(probe["status"], "ok", "{probe}");
    assert_eq!(probe["verdict"], "allow", "{probe}");
    assert_eq!(probe["annotations"], json!({ "status": "200" }), "{probe}");

    // Closed: back in service.
    let closed = view();
    assert_eq!(closed["state"], "closed", "{closed}");
    assert_eq!(closed["consecutiveFailures"], 0, "{closed}");
    assert_eq!(closed["quarantines"], 2, "{closed}");
    assert!(closed.get("probeInMs").is_none(), "{closed}");
    assert_eq!(quarantined_metric(&host, "flaky-gate"), 0.0);
    let normal = report("q-8");
    assert_eq!(normal["status"], "ok", "{normal}");
    assert_eq!(normal["verdict"], "allow", "{normal}");

    // The quarantined events never reached the receiver; each probe came after its backoff.
    let requests = receiver.wait_for_answered(6);
    assert_eq!(
        deliveries(&requests),
        delivered(&[
            ("q-1", 500),
            ("q-2", 500),
            ("q-3", 500),
            ("q-5", 500),
            ("q-6", 200),
            ("q-8", 200),
        ])
    );
    let answered = |id: &str| request_for(&requests, id).answered.expect("answered").1;
    assert!(
        request_for(&requests, "q-5").arrived >= answered("q-3") + Duration::from_millis(1_000),
        "the first probe waited for the 1,000 ms backoff"
    );
    assert!(
        request_for(&requests, "q-6").arrived >= answered("q-5") + Duration::from_millis(2_000),
        "the second probe waited for the doubled backoff"
    );
    let counters = &host.handler("flaky-gate")["counters"];
    assert_eq!(
        counters["invocations"],
        json!({ "ok": 2, "error": 4, "quarantined": 2 }),
        "{counters}"
    );
    assert_eq!(counters["denied"], 6, "{counters}");
    assert_eq!(
        transitions(&host, "flaky-gate"),
        [
            "quarantined after 3 consecutive failures; probing again in 1000 ms",
            "probe failed; quarantined again, probing in 2000 ms",
            "probe succeeded; back in service",
        ]
    );
}

#[test]
fn a_quarantined_observer_holds_its_events_and_delivers_each_once_in_order_after_recovery() {
    // Two failures quarantine the observer (one attempt each, so they are dead letters and
    // retries stay out of the way). Events sent meanwhile wait in the outbox (3 places) without
    // using up attempts, and the fourth is refused with 503 (nothing dropped, nothing
    // half-queued: the console logger does not get it either). When the receiver recovers, the
    // probe and then every held event are delivered once, in order, and the refused one is
    // accepted when sent again.
    let mode = Arc::new(Mutex::new(Mode::Fail));
    let receiver = switchable_receiver(&mode);
    let mut observer = webhook(
        "flaky-observer",
        &receiver,
        json!({ "afterFailures": 2, "backoffMs": 1_000, "maxBackoffMs": 4_000 }),
    );
    observer["queueCapacity"] = json!(3);
    observer["retry"] = json!({ "maxAttempts": 1 });
    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .serve(&work.config(&[observer, console_logger()]));
    let accept = |id: &str| {
        let response = host.post_events(&custom(id));
        assert_eq!(response.status, 202, "{id}: {response}");
        assert_eq!(response.json()["observersQueued"], 2, "{response}");
    };
    let view = || host.handler("flaky-observer");

    accept("o-1");
    accept("o-2");
    host.wait_until("two failures quarantine the observer", || {
        view()["quarantine"]["state"] == "open"
    });
    assert_eq!(
        view()["counters"]["invocations"],
        json!({ "error": 2 }),
        "{}",
        view()
    );
    assert_eq!(quarantined_metric(&host, "flaky-observer"), 1.0);

    let latch = Latch::new();
    set(&mode, Mode::HoldThenOk(latch.clone()));
    for id in ["o-3", "o-4", "o-5"] {
        accept(id);
    }
    let full = host.post_events(&custom("o-6"));
    assert_eq!(full.status, 503, "the queue is full: {full}");
    assert_eq!(full.header("retry-after"), Some("1"), "{full}");
    let held = view();
    assert_eq!(held["queueDepth"], 3, "{held}");
    let state = held["quarantine"]["state"].clone();
    assert!(state == "open" || state == "half-open", "{held}");
    assert_eq!(quarantined_metric(&host, "flaky-observer"), 1.0);

    // After the backoff, o-3 is the probe: the receiver holds it, the breaker is half-open.
    receiver.wait_until("the probe o-3 reached the receiver", |requests| {
        requests
            .iter()
            .any(|r| r.header("webhook-id") == Some("o-3"))
    });
    let probing = view();
    assert_eq!(probing["quarantine"]["state"], "half-open", "{probing}");
    assert_eq!(probing["queueDepth"], 3, "{probing}");
    assert_eq!(quarantined_metric(&host, "flaky-observer"), 1.0);
    latch.open();

    receiver.wait_for_answered(5);
    accept("o-6");
    accept("o-7");
    let requests = receiver.wait_for_answered(7);
    assert_eq!(
        deliveries(&requests),
        delivered(&[
            ("o-1", 500),
            ("o-2", 500),
            ("o-3", 200),
            ("o-4", 200),
            ("o-5", 200),
            ("o-6", 200),
            ("o-7", 200),
        ]),
        "held events delivered once each, in order"
    );
    let answered_o2 = request_for(&requests, "o-2").answered.expect("answered").1;
    assert!(
        request_for(&requests, "o-3").arrived >= answered_o2 + Duration::from_millis(1_000),
        "o-3 was held for the backoff"
    );

    // Counters move when a delivery has run; the outbox, when its outcome has committed.
    host.wait_until("both observers are done", || {
        host.invocations("flaky-observer", "ok") == 5
            && host.invocations("console-logger", "ok") == 7
            && view()["queueDepth"] == 0
    });
    let done = view();
    assert_eq!(done["quarantine"]["state"], "closed", "{done}");
    assert_eq!(done["quarantine"]["quarantines"], 1, "{done}");
    assert_eq!(done["queueDepth"], 0, "{done}");
    assert_eq!(
        done["counters"]["invocations"],
        json!({ "ok": 5, "error": 2 }),
        "an observer never reports `quarantined`: it waits: {done}"
    );
    assert_eq!(quarantined_metric(&host, "flaky-observer"), 0.0);
    assert_eq!(
        transitions(&host, "flaky-observer"),
        [
            "quarantined after 2 consecutive failures; probing again in 1000 ms",
            "probe succeeded; back in service",
        ]
    );
    let stopped = host.terminate();
    let printed: Vec<String> = stopped
        .log
        .guest_stdout("console-logger")
        .iter()
        .map(|line| {
            let line: Value = serde_json::from_str(line).expect("console-logger prints JSON");
            line["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(
        printed,
        ["o-1", "o-2", "o-3", "o-4", "o-5", "o-6", "o-7"],
        "the other observer was never held, and never got the refused request twice"
    );
}
