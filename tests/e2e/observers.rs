//! Observers: fire-and-forget for the producer, but every accepted event reaches each observer
//! exactly once, in the order it was accepted; a full queue pushes back instead of dropping; a
//! graceful shutdown drains the queues.

use serde_json::{Value, json};

use crate::support::Hookwasm;
use crate::support::{Guest, Host, Workdir, console_logger, custom, ref_update};

/// An observer that spends `timeout_ms` on every event: the chaos guest spins until its deadline
/// (with fuel enough never to run out first), so each event ends as a `timeout`. It fails every
/// time, so quarantine and retries are kept out of the way (one attempt, then a dead letter):
/// these tests are about queues, not the breaker or the outbox's retries.
fn slow_observer(name: &str, timeout_ms: u64, queue_capacity: usize) -> Value {
    json!({
        "name": name,
        "module": Guest::Chaos.module(),
        "config": { "behavior": "loop" },
        "limits": { "fuel": 1_000_000_000_000_u64, "timeoutMs": timeout_ms },
        "queueCapacity": queue_capacity,
        "quarantine": { "afterFailures": 1_000 },
        "retry": { "maxAttempts": 1 },
    })
}

#[test]
fn every_accepted_event_reaches_the_observer_once_in_the_order_accepted() {
    // 50 events, sent one by one and in batches, must come out of the console logger's stdout
    // in exactly the order the host accepted them, each once.
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[console_logger()]));

    let mut sent = Vec::new();
    let event = |n: usize| {
        let id = format!("order-{n:02}");
        if n.is_multiple_of(3) {
            ref_update(&id, "git.branch.updated", "refs/heads/main")
        } else {
            custom(&id)
        }
    };
    for n in 0..20 {
        let response = host.post_events(&event(n));
        assert_eq!(
            response.status, 202,
            "only observers: 202 Accepted; {response}"
        );
        let decision = response.json();
        assert_eq!(decision["eventId"], format!("order-{n:02}"));
        assert_eq!(decision["observersQueued"], 1, "{response}");
        assert_eq!(decision["verdict"], "allow", "no gate, nothing to deny");
        sent.push(format!("order-{n:02}"));
    }
    for batch in 0..3 {
        let events: Vec<Value> = (20 + batch * 10..30 + batch * 10).map(event).collect();
        let response = host.post_events(&Value::Array(events));
        assert_eq!(response.status, 202, "{response}");
        let results = response.json()["results"].clone();
        let ids: Vec<&str> = results
            .as_array()
            .expect("a batch is answered with `results`")
            .iter()
            .map(|d| d["eventId"].as_str().expect("eventId"))
            .collect();
        let expected: Vec<String> = (20 + batch * 10..30 + batch * 10)
            .map(|n| format!("order-{n:02}"))
            .collect();
        assert_eq!(ids, expected, "one decision per event, in order");
        sent.extend(expected);
    }

    host.wait_until("the console logger has handled all 50 events", || {
        host.invocations("console-logger", "ok") >= 50
    });
    let stopped = host.terminate();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);

    let seen: Vec<String> = stopped
        .log
        .guest_stdout("console-logger")
        .iter()
        .map(|line| {
            let line: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("console-logger printed a non-JSON line ({e}): {line}"));
            line["id"].as_str().expect("each line has an id").to_owned()
        })
        .collect();
    assert_eq!(
        seen, sent,
        "the observer must see every event once, in the order accepted"
    );
}

#[test]
fn a_full_observer_queue_answers_503_with_retry_after_and_loses_nothing() {
    // A slow observer (300 ms per event) with room for one queued event: flooding it must get a
    // 503 with Retry-After before anything is dropped; once it drains, events are accepted
    // again, and it is invoked exactly once per accepted event.
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[slow_observer("slow", 300, 1)]));

    // A batch bigger than the queue can ever hold is refused outright, not half-queued.
    let too_big = json!([custom("big-1"), custom("big-2")]);
    let response = host.post_events(&too_big);
    assert_eq!(response.status, 413, "{response}");
    assert!(
        response.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("slow") && e.contains("smaller batches")),
        "{response}"
    );

    let mut accepted = 0_u64;
    let mut busy = None;
    for n in 0..50 {
        let response = host.post_events(&custom(&format!("flood-{n}")));
        match response.status {
            202 => accepted += 1,
            503 => {
                busy = Some(response);
                break;
            }
            other => panic!("unexpected status {other}: {response}"),
        }
    }
    let busy = busy.expect("50 events in a row into a queue of 1 must hit a full queue");
    let retry_after = busy
        .header("retry-after")
        .expect("a 503 carries Retry-After");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|secs| secs >= 1),
        "Retry-After: {retry_after}"
    );
    assert!(
        busy.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("slow") && e.contains("queueCapacity")),
        "the answer names the full observer: {busy}"
    );
    assert!(accepted >= 1, "the first event fits");

    host.wait_until("the slow observer has worked through its queue", || {
        host.handler("slow")["queueDepth"] == 0 && host.all_invocations("slow") == accepted
    });
    let response = host.post_events(&custom("after-drain"));
    assert_eq!(
        response.status, 202,
        "accepted again once drained: {response}"
    );
    accepted += 1;
    host.wait_until("the event accepted after the drain is delivered", || {
        host.all_invocations("slow") >= accepted
    });

    assert_eq!(
        host.all_invocations("slow"),
        accepted,
        "invoked once per accepted event: nothing lost, nothing refused was run"
    );
    assert_eq!(host.invocations("slow", "timeout"), accepted);
    let metrics = host.metrics();
    assert!(metrics.expect("hookwasm_events_refused_total{reason=\"busy\"}") >= 1.0);
    assert_eq!(
        metrics.expect("hookwasm_events_received_total"),
        accepted as f64,
        "refused submissions are not counted as received"
    );
}

#[test]
fn sigterm_drains_queued_observer_events_before_exiting() {
    // Six events queued for an observer that takes 500 ms each: SIGTERM must let it make every
    // delivery that is due, say that none is left, and exit 0.
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[slow_observer("slow", 500, 16)]));
    let ids: Vec<String> = (0..6).map(|n| format!("drain-{n}")).collect();
    for id in &ids {
        let response = host.post_events(&custom(id));
        assert_eq!(response.status, 202, "{response}");
    }
    let depth = host.handler("slow")["queueDepth"].as_u64();
    assert!(
        depth.is_some_and(|d| d >= 1),
        "events must still be queued when SIGTERM is sent (queueDepth {depth:?})"
    );

    let stopped = host.terminate();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let log = &stopped.log;
    let handled: Vec<String> = log
        .failures_of("slow")
        .iter()
        .filter_map(|l| l.field("event").map(str::to_owned))
        .collect();
    assert_eq!(
        handled, ids,
        "every queued event is run, in order, before exit\n{log}"
    );
    assert_eq!(log.with_message("no delivery left open").len(), 1, "{log}");
    assert!(log.with_message("deliveries stay in").is_empty(), "{log}");
}

#[test]
fn shutdown_says_how_many_events_were_left_when_the_drain_deadline_passes() {
    // With no time to drain (`--drain-secs 0`) and eight 1-second events queued, the host must
    // not hang or pretend: it reports the deliveries it left in the outbox, and every event is
    // either delivered or counted.
    let work = Workdir::new();
    let config = work.config(&[slow_observer("slow", 1_000, 16)]);
    let host = Hookwasm::new().args(&["--drain-secs", "0"]).serve(&config);
    for n in 0..8 {
        let response = host.post_events(&custom(&format!("left-{n}")));
        assert_eq!(response.status, 202, "{response}");
    }
    let stopped = host.terminate();
    assert!(stopped.status.success(), "exit: {:?}", stopped.status);
    let log = &stopped.log;
    let warning = log
        .with_message("deliveries stay in")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no word about deliveries left in the outbox\n{log}"));
    let message = warning.message().expect("a message");
    let abandoned: usize = message
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the warning starts with a count: {message}"));
    let delivered = log.failures_of("slow").len();
    assert!(abandoned >= 1, "{message}");
    assert!(
        delivered + abandoned >= 8,
        "every event is delivered or counted as left ({delivered} delivered, {abandoned} left)"
    );
    assert!(log.with_message("no delivery left open").is_empty());
}
