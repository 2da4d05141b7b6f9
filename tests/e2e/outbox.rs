//! The outbox: an accepted event is stored with one delivery per observer before the producer
//! hears back; failed deliveries are retried with backoff under the same event id, dead-lettered
//! when their attempts run out, and put back by an operator; an event id is stored once; and a
//! host killed mid-stream loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::receiver::{Receiver, Reply};
use crate::support::{Host, Workdir, custom, hookwasm, webhook_module};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The webhook plugin delivering to `receiver` at `/{name}`, retrying quickly.
fn webhook(name: &str, receiver: &Receiver, max_attempts: u32) -> Value {
    json!({
        "name": name,
        "module": webhook_module(),
        "config": { "url": receiver.url(&format!("/{name}")), "secret": SECRET },
        "capabilities": { "allowedHosts": [receiver.origin()] },
        "retry": { "maxAttempts": max_attempts, "backoffMs": 50, "maxBackoffMs": 200 },
        // These tests are about retries: keep the breaker out of the way.
        "quarantine": { "afterFailures": 1_000 },
    })
}

/// A receiver that fails every request while `failing` is above zero, counting it down.
fn failing_first(failing: Arc<AtomicUsize>) -> Receiver {
    Receiver::start(move |_| {
        let left = failing.load(Ordering::SeqCst);
        if left > 0 {
            failing.store(left - 1, Ordering::SeqCst);
            Reply::status(500, "receiver down")
        } else {
            Reply::status(200, "ok")
        }
    })
}

/// The `webhook-id` of each request, in order, with the status it got.
fn seen(receiver: &Receiver) -> Vec<(String, Option<u16>)> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            let id = r.header("webhook-id").unwrap_or("?").to_owned();
            (id, r.answered.map(|(status, _)| status))
        })
        .collect()
}

/// `GET /v1/deliveries`, the row of `handler`.
fn counts(host: &Host, handler: &str) -> Value {
    let response = host.get("/v1/deliveries");
    assert_eq!(response.status, 200, "{response}");
    response.json()["deliveries"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["handler"] == handler).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn a_failing_receiver_gets_the_event_after_k_retries_with_the_same_webhook_id() {
    const K: usize = 3;
    let receiver = failing_first(Arc::new(AtomicUsize::new(K)));
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[webhook("hook", &receiver, 8)]));

    let response = host.post_events(&custom("k-retries"));
    assert_eq!(response.status, 202, "{response}");
    assert_eq!(response.json()["observersQueued"], 1, "{response}");

    receiver.wait_for_answered(K + 1);
    host.wait_until("the delivery is done", || {
        counts(&host, "hook")["done"] == 1
    });
    let expected: Vec<(String, Option<u16>)> = (0..=K)
        .map(|n| ("k-retries".to_owned(), Some(if n < K { 500 } else { 200 })))
        .collect();
    assert_eq!(seen(&receiver), expected, "K failures, then one success");
    let requests = receiver.requests();
    let bodies: BTreeSet<String> = requests.iter().map(|r| r.text()).collect();
    assert_eq!(bodies.len(), 1, "every attempt carries the same event");
    let metrics = host.metrics();
    assert_eq!(
        metrics.expect("hookwasm_delivery_retries_total{handler=\"hook\"}"),
        K as f64
    );
    assert_eq!(
        metrics.expect("hookwasm_observer_queue_depth{handler=\"hook\"}"),
        0.0
    );
    let row = counts(&host, "hook");
    assert_eq!(
        (row["pending"].clone(), row["dead"].clone()),
        (json!(0), json!(0)),
        "{row}"
    );
}

#[test]
fn exhausted_deliveries_become_dead_letters_and_an_operator_puts_them_back() {
    // Three attempts each against a receiver that is down: both events end as dead letters with
    // the receiver's answer as their cause. Once it is back, `dead-letters retry` from the CLI
    // delivers one and `POST /v1/dead-letters/{id}/retry` the other, each under its own id;
    // a third one is discarded.
    let failing = Arc::new(AtomicUsize::new(usize::MAX));
    let receiver = failing_first(failing.clone());
    let work = Workdir::new();
    let config = work.config(&[webhook("hook", &receiver, 3)]);
    let config_arg = config.to_string_lossy().into_owned();
    let host = Host::serve(&config);
    for id in ["dead-1", "dead-2", "dead-3"] {
        assert_eq!(host.post_events(&custom(id)).status, 202);
    }
    host.wait_until("all three are dead letters", || {
        counts(&host, "hook")["dead"] == 3
    });
    assert_eq!(receiver.requests().len(), 9, "three attempts each");

    let listed = hookwasm(&["dead-letters", "list", "--config", &config_arg, "--json"]);
    listed.assert_code(0);
    let letters = listed.reports();
    let ids: Vec<&str> = letters
        .iter()
        .filter_map(|l| l["eventId"].as_str())
        .collect();
    assert_eq!(ids, ["dead-1", "dead-2", "dead-3"], "{listed}");
    for letter in &letters {
        assert_eq!(letter["handler"], "hook", "{letter}");
        assert_eq!(letter["attempts"], 3, "{letter}");
        assert_eq!(letter["eventType"], "user.created", "{letter}");
        let cause = letter["cause"].as_str().unwrap_or_default();
        assert!(
            cause.contains("500"),
            "the cause names the receiver's answer: {letter}"
        );
    }
    // Query values are percent-decoded: `ho%6Fk` is `hook`.
    let over_http = host.get("/v1/dead-letters?handler=ho%6Fk");
    assert_eq!(over_http.status, 200, "{over_http}");
    assert_eq!(
        over_http.json()["deadLetters"].as_array().map(Vec::len),
        Some(3)
    );
    let metrics = host.metrics();
    assert_eq!(
        metrics.expect("hookwasm_observer_dead_letters{handler=\"hook\"}"),
        3.0
    );
    assert_eq!(
        metrics.expect("hookwasm_delivery_dead_lettered_total{handler=\"hook\"}"),
        3.0
    );

    // Acting on every dead letter takes an explicit --all.
    let unfiltered = hookwasm(&["dead-letters", "retry", "--config", &config_arg]);
    unfiltered.assert_code(2);
    assert!(unfiltered.error().contains("--all"), "{unfiltered}");

    failing.store(0, Ordering::SeqCst);
    let retried = hookwasm(&[
        "dead-letters",
        "retry",
        "--config",
        &config_arg,
        "--event",
        "dead-1",
    ]);
    retried.assert_code(0);
    assert!(retried.stdout.starts_with("1 "), "{retried}");
    receiver.wait_until("dead-1 is delivered", |requests| {
        requests.iter().any(|r| {
            r.header("webhook-id") == Some("dead-1") && r.answered.map(|a| a.0) == Some(200)
        })
    });

    let id_of = |event: &str| {
        letters
            .iter()
            .find(|l| l["eventId"] == event)
            .and_then(|l| l["id"].as_i64())
            .expect("listed")
    };
    let retry = host.post(&format!("/v1/dead-letters/{}/retry", id_of("dead-2")), "");
    assert_eq!(retry.status, 200, "{retry}");
    receiver.wait_until("dead-2 is delivered", |requests| {
        requests.iter().any(|r| {
            r.header("webhook-id") == Some("dead-2") && r.answered.map(|a| a.0) == Some(200)
        })
    });
    let discarded = hookwasm(&[
        "dead-letters",
        "discard",
        "--config",
        &config_arg,
        "--id",
        &id_of("dead-3").to_string(),
    ]);
    discarded.assert_code(0);
    host.wait_until("nothing is dead or open any more", || {
        let row = counts(&host, "hook");
        row["dead"] == 0 && row["pending"] == 0 && row["done"] == 2
    });
    let missing = host.post(&format!("/v1/dead-letters/{}/retry", id_of("dead-3")), "");
    assert_eq!(missing.status, 404, "{missing}");
    assert!(
        !seen(&receiver).contains(&("dead-3".to_owned(), Some(200))),
        "a discarded dead letter is never delivered"
    );

    let table = hookwasm(&["deliveries", "--config", &config_arg]);
    table.assert_code(0);
    assert!(
        table.stdout.lines().any(|l| l.starts_with("hook ")),
        "{table}"
    );
}

#[test]
fn the_same_event_id_posted_twice_is_stored_and_delivered_once_even_across_restarts() {
    let receiver = Receiver::answering(200);
    let work = Workdir::new();
    let config = work.config(&[webhook("hook", &receiver, 8)]);
    let host = Host::serve(&config);

    let first = host.post_events(&custom("twice"));
    assert_eq!(first.status, 202, "{first}");
    assert_eq!(first.json()["observersQueued"], 1, "{first}");
    assert!(first.json().get("duplicate").is_none(), "{first}");
    let again = host.post_events(&custom("twice"));
    assert_eq!(again.status, 202, "a repeat is not an error: {again}");
    assert_eq!(again.json()["duplicate"], true, "{again}");
    assert_eq!(again.json()["observersQueued"], 0, "{again}");
    let batch = host.post_events(&json!([custom("twice"), custom("once-more")]));
    let results = batch.json()["results"].clone();
    assert_eq!(results[0]["duplicate"], true, "{batch}");
    assert!(results[1].get("duplicate").is_none(), "{batch}");

    receiver.wait_for_answered(2);
    host.wait_until("both deliveries are done", || {
        counts(&host, "hook")["done"] == 2
    });
    assert_eq!(
        host.metrics().expect("hookwasm_events_duplicate_total"),
        2.0
    );
    drop(host);

    // The outbox remembers the id after a restart.
    let host = Host::serve(&config);
    let after_restart = host.post_events(&custom("twice"));
    assert_eq!(after_restart.json()["duplicate"], true, "{after_restart}");
    assert_eq!(host.post_events(&custom("marker")).status, 202);
    receiver.wait_for_answered(3);
    let ids: Vec<String> = seen(&receiver).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        ["twice", "once-more", "marker"],
        "each id delivered once"
    );
}

#[test]
fn kill_9_mid_stream_loses_no_accepted_event() {
    // Two observers, 2,000 events accepted in batches. The host is killed with SIGKILL while
    // deliveries are under way; a new host on the same outbox must deliver every accepted event
    // to both observers. Repeats are allowed (at least once) but must carry the event's id.
    const EVENTS: usize = 2_000;
    let receiver = Receiver::answering(200);
    let work = Workdir::new();
    let config = work.config(&[webhook("a", &receiver, 8), webhook("b", &receiver, 8)]);
    let host = Host::serve(&config);

    let mut accepted = BTreeSet::new();
    for batch in 0..EVENTS / 100 {
        let events: Vec<Value> = (0..100)
            .map(|n| custom(&format!("k9-{:04}", batch * 100 + n)))
            .collect();
        let response = host.post_events(&Value::Array(events.clone()));
        assert_eq!(response.status, 202, "{response}");
        accepted.extend(
            events
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        );
    }
    receiver.wait_until("deliveries are under way", |requests| requests.len() >= 200);
    let before = host.kill();
    let delivered_before = receiver.requests().len();
    assert!(
        delivered_before < 2 * EVENTS,
        "the kill must come mid-stream ({delivered_before} deliveries already made)\n{}",
        before.0.join("\n")
    );

    let host = Host::serve(&config);
    let everything = |requests: &[crate::receiver::Received]| {
        ["/a", "/b"].iter().all(|path| {
            let ids: BTreeSet<&str> = requests
                .iter()
                .filter(|r| r.path == *path && r.answered.is_some())
                .filter_map(|r| r.header("webhook-id"))
                .collect();
            ids.len() == accepted.len()
        })
    };
    // A debug build on a busy 2-core machine needs a while for 4,000 webhook deliveries, plus
    // the lease of the batch the killed host had claimed (about 10 s).
    let requests = receiver.wait_until_within(
        std::time::Duration::from_secs(120),
        "every event reached both observers",
        everything,
    );
    host.wait_until("the outbox has nothing open", || {
        ["a", "b"].iter().all(|h| {
            let row = counts(&host, h);
            row["pending"] == 0 && row["claimed"] == 0
        })
    });

    let mut per_delivery: BTreeMap<(String, String), usize> = BTreeMap::new();
    for request in &requests {
        let id = request.header("webhook-id").expect("webhook-id").to_owned();
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
        assert_eq!(body["id"], id.as_str(), "a delivery carries its event's id");
        assert!(
            accepted.contains(&id),
            "only accepted events are delivered: {id}"
        );
        *per_delivery.entry((request.path.clone(), id)).or_default() += 1;
    }
    let duplicates: usize = per_delivery.values().map(|n| n - 1).sum();
    assert_eq!(
        per_delivery.len(),
        2 * EVENTS,
        "every event reached both observers"
    );
    println!(
        "kill -9 after {delivered_before} of {} deliveries: all {} delivered after restart, \
         {duplicates} delivered twice (same event id)",
        2 * EVENTS,
        2 * EVENTS
    );
    assert!(
        duplicates <= 2,
        "at most the delivery each observer had in hand is repeated ({duplicates})"
    );
}

#[test]
fn an_outbox_that_cannot_be_used_is_named_before_anything_is_accepted() {
    let work = Workdir::new();
    // A file where the outbox's folder should be: nothing can be created under it.
    work.write("occupied", "not a folder");
    let text = json!({
        "eventDelivery": { "path": "occupied/outbox.db" },
        "eventHandlers": [crate::support::console_logger()],
    });
    let config = work.write("proxy.config.json", text.to_string());
    let config_arg = config.to_string_lossy().into_owned();
    let refused = hookwasm(&["serve", "--config", &config_arg, "--listen", "127.0.0.1:0"]);
    refused.assert_code(2);
    let error = refused.error();
    assert!(
        error.contains("occupied/outbox.db") && error.contains("eventDelivery.path"),
        "{refused}"
    );
    assert_eq!(error.trim().lines().count(), 1, "one line: {refused}");

    // An in-memory outbox has nothing for another process to show: the CLI says where to look.
    let text = json!({ "eventDelivery": { "store": "memory" }, "eventHandlers": [] });
    let config = work.write("memory.config.json", text.to_string());
    let config_arg = config.to_string_lossy().into_owned();
    let run = hookwasm(&["deliveries", "--config", &config_arg]);
    run.assert_code(2);
    assert!(run.error().contains("GET /v1/deliveries"), "{run}");
    let bad = work.write(
        "bad.config.json",
        json!({ "eventDelivery": { "store": "postgres" } }).to_string(),
    );
    let run = hookwasm(&["check", "--config", &bad.to_string_lossy()]);
    run.assert_code(2);
    assert!(
        run.error().contains(
            "`eventDelivery` `store` is \"postgres\"; write one of `sqlite`, `memory`, `nats`"
        ),
        "{run}"
    );
}
