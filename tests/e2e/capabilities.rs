//! Capabilities: outbound HTTP only where a handler's entry grants it, enforced in the host, and
//! the webhook plugin's signed deliveries, checked against an implementation of the Standard
//! Webhooks specification written here from the spec.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::receiver::{Latch, Received, Receiver, Reply, closed_port};
use crate::support::Hookwasm;
use crate::support::{Host, Workdir, chaos_gate, custom, proxy_action, ref_update, webhook_module};

/// The specification's example secret (also used in its published test vector).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How far a delivery's timestamp may be from now (the specification suggests five minutes).
const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The Standard Webhooks signature of a message, as the specification defines it: the base64 of
/// HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`, keyed with the base64-decoded part of the
/// secret after `whsec_`.
fn sign(secret: &str, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("the secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key size");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Whether a request carries a valid `v1` signature of its id, timestamp and raw body under
/// `secret`, with a timestamp close to now: what a receiver must check.
fn verify(secret: &str, request: &Received, body: &[u8]) -> bool {
    let (Some(id), Some(timestamp), Some(signatures)) = (
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        request.header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64;
    if (now - seconds).abs() > TOLERANCE_SECONDS {
        return false;
    }
    let expected = sign(secret, id, timestamp, body);
    signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .any(|(version, signature)| version == "v1" && signature == expected)
}

#[test]
fn the_signature_check_agrees_with_the_specification_test_vector() {
    // The test vector published with the Standard Webhooks specification.
    assert_eq!(
        sign(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        ),
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// The webhook plugin as an observer delivering to `url`, with the spec's example secret.
fn webhook(name: &str, url: &str, allowed_hosts: Option<Vec<String>>) -> Value {
    let mut entry = json!({
        "name": name,
        "module": webhook_module(),
        "config": { "url": url, "secret": SECRET },
        "limits": { "timeoutMs": 10_000 },
    });
    if let Some(hosts) = allowed_hosts {
        entry["capabilities"] = json!({ "allowedHosts": hosts });
    }
    entry
}

/// The chaos guest as a gate making one GET to `url`.
fn fetch(name: &str, url: &str, allowed_hosts: Option<Vec<String>>) -> Value {
    let mut entry = chaos_gate(name, "http");
    entry["config"]["url"] = json!(url);
    entry["limits"] = json!({ "timeoutMs": 10_000 });
    if let Some(hosts) = allowed_hosts {
        entry["capabilities"] = json!({ "allowedHosts": hosts });
    }
    entry
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

/// The host's `outbound request refused` warnings about `handler`.
fn refusals(host: &Host, handler: &str) -> Vec<String> {
    host.log()
        .with_message("outbound request refused: ")
        .iter()
        .filter(|l| l.field("handler") == Some(handler))
        .filter_map(|l| l.message().map(str::to_owned))
        .collect()
}

#[test]
fn webhook_deliveries_reach_a_real_receiver_signed_as_the_specification_says() {
    let receiver = Receiver::answering(200);
    let work = Workdir::new();
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[webhook(
        "audit-webhook",
        &receiver.url("/hooks/hookwasm?token=t0p"),
        Some(vec![receiver.origin()]),
    )]));

    let mut with_extension = proxy_action("wh-1", "push.completed");
    with_extension["myext"] = json!("kept");
    let events = [
        with_extension,
        ref_update("wh-2", "git.branch.force-pushed", "refs/heads/main"),
        custom("wh-3"),
    ];
    for event in &events {
        let response = host.post_events(event);
        assert_eq!(response.status, 202, "{response}");
    }
    let requests = receiver.wait_for_answered(3);
    host.wait_until("three deliveries recorded as ok", || {
        host.invocations("audit-webhook", "ok") == 3
    });

    for (event, request) in events.iter().zip(&requests) {
        let id = event["id"].as_str().expect("id");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/hookwasm?token=t0p");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("webhook-id"), Some(id));
        let timestamp = request
            .header("webhook-timestamp")
            .expect("webhook-timestamp");
        assert!(
            !timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()),
            "unix seconds: {timestamp:?}"
        );
        let signature = request
            .header("webhook-signature")
            .expect("webhook-signature");
        assert!(signature.starts_with("v1,"), "{signature}");
        assert!(
            verify(SECRET, request, &request.body),
            "{id}: the signature {signature} does not verify"
        );
        // The check is not trivially true: another secret, or one byte changed, fails it.
        assert!(!verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            request,
            &request.body
        ));
        let mut tampered = request.body.clone();
        tampered.push(b' ');
        assert!(!verify(SECRET, request, &tampered));
        let body: Value = serde_json::from_slice(&request.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", request.text()));
        assert_eq!(&body, event, "the body is the CloudEvent as posted");
    }
    let body: Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    assert_eq!(body["myext"], "kept", "extension attributes are kept");

    let stopped = host.terminate();
    assert!(
        !stopped
            .log
            .0
            .iter()
            .any(|l| l.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        "the secret never appears in the log"
    );
}

#[test]
fn without_allowed_hosts_a_handler_cannot_reach_the_receiver() {
    // Four handlers aim at one receiver; only the one whose entry lists it gets through. The
    // others are refused in the host before any connection: the receiver sees exactly one.
    // The two without `allowedHosts` are not even linked with the real `wasi:http`: their
    // request fails with the line naming the missing grant. The one granted another port gets
    // the real interface, whose policy refuses the target.
    let receiver = Receiver::answering(200);
    let origin = receiver.origin();
    let elsewhere = format!("http://127.0.0.1:{}", closed_port());
    let work = Workdir::new();
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[
        fetch(
            "granted-fetch",
            &receiver.url("/granted"),
            Some(vec![origin.clone()]),
        ),
        fetch("ungranted-fetch", &receiver.url("/ungranted-fetch"), None),
        webhook(
            "ungranted-webhook",
            &receiver.url("/ungranted-webhook"),
            None,
        ),
        webhook(
            "other-port-webhook",
            &receiver.url("/other-port-webhook"),
            Some(vec![elsewhere]),
        ),
    ]));
    let no_grant = |handler: &str| {
        format!(
            "request to {origin} failed: handler {handler} may not make HTTP requests: it has no \
             capabilities.allowedHosts; list the hosts it may call there, or pass --allow-host \
             to hookwasm call"
        )
    };
    let not_listed = format!(
        "request to {origin} refused by the host: not granted in capabilities.allowedHosts"
    );

    let response = host.post_events(&custom("cap-1"));
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    let granted = gate_report(&decision, "granted-fetch");
    assert_eq!(granted["status"], "ok", "{response}");
    assert_eq!(granted["annotations"]["status"], "200", "{response}");
    let refused = gate_report(&decision, "ungranted-fetch");
    assert_eq!(refused["status"], "error", "{response}");
    assert_eq!(refused["verdict"], "deny", "{response}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&no_grant("ungranted-fetch"))),
        "{response}"
    );

    host.wait_until("both webhooks have tried", || {
        host.invocations("ungranted-webhook", "error") == 1
            && host.invocations("other-port-webhook", "error") == 1
    });
    for (webhook, expected) in [
        ("ungranted-webhook", no_grant("ungranted-webhook")),
        ("other-port-webhook", not_listed),
    ] {
        let failures = host.log().failures_of(webhook);
        assert_eq!(failures.len(), 1);
        let message = failures[0].message().expect("message");
        assert!(
            message.contains(&format!("event cap-1 not delivered: {expected}")),
            "{message}"
        );
    }
    let port = receiver.addr().port();
    for handler in ["ungranted-fetch", "ungranted-webhook"] {
        assert_eq!(
            refusals(&host, handler),
            ["outbound request refused: it has no capabilities.allowedHosts"],
            "{handler}"
        );
    }
    assert_eq!(
        refusals(&host, "other-port-webhook"),
        [format!(
            "outbound request refused: http://127.0.0.1:{port} is not in capabilities.allowedHosts"
        )],
    );
    assert_eq!(
        receiver.connections(),
        1,
        "only the granted handler connected"
    );
    let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/granted"]);
}

#[test]
fn a_name_that_resolves_to_loopback_is_refused_even_when_granted_by_name() {
    // `localhost` is granted by name, but it resolves to a loopback address that is not itself
    // listed: the SSRF guard refuses it, and nothing connects.
    let receiver = Receiver::answering(200);
    let by_name = format!("http://localhost:{}", receiver.addr().port());
    let work = Workdir::new();
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[
        fetch(
            "by-name-fetch",
            &format!("{by_name}/fetch"),
            Some(vec![by_name.clone()]),
        ),
        webhook(
            "by-name-webhook",
            &format!("{by_name}/hook"),
            Some(vec![by_name.clone()]),
        ),
    ]));

    let response = host.post_events(&custom("ssrf-1"));
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    let report = gate_report(&decision, "by-name-fetch");
    assert_eq!(report["status"], "error", "{response}");
    let expected = format!(
        "request to {by_name} refused by the host: destination IP prohibited (the name \
         resolves to an internal address; list that address in capabilities.allowedHosts to \
         allow it)"
    );
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&expected)),
        "{response}"
    );
    host.wait_until("the webhook has tried", || {
        host.invocations("by-name-webhook", "error") == 1
    });
    let failure = &host.log().failures_of("by-name-webhook")[0];
    assert!(
        failure
            .message()
            .is_some_and(|m| m.contains(&format!("event ssrf-1 not delivered: {expected}"))),
        "{failure:?}"
    );
    for handler in ["by-name-fetch", "by-name-webhook"] {
        let refused = refusals(&host, handler);
        assert_eq!(refused.len(), 1, "{handler}: {refused:?}");
        assert!(
            refused[0].starts_with("outbound request refused: localhost resolves to ")
                && refused[0].contains("an internal address"),
            "{refused:?}"
        );
    }
    assert_eq!(receiver.connections(), 0, "nothing connected");
}

#[test]
fn a_receiver_answering_non_2xx_fails_the_delivery() {
    // A 503 is not a delivery: the invocation fails naming the origin, the status and the
    // answer, so it is logged, counted and (for a gate) decided by the failure policy.
    let receiver = Receiver::start(|_| Reply::status(503, "try later"));
    let origin = receiver.origin();
    let mut gate = webhook(
        "picky-gate",
        &receiver.url("/gate"),
        Some(vec![origin.clone()]),
    );
    gate["mode"] = json!("gate");
    let work = Workdir::new();
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[
        gate,
        webhook(
            "picky-observer",
            &receiver.url("/observer"),
            Some(vec![origin.clone()]),
        ),
    ]));

    let response = host.post_events(&custom("nak-1"));
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    assert_eq!(
        decision["verdict"], "deny",
        "a closed gate that failed: {response}"
    );
    let report = gate_report(&decision, "picky-gate");
    assert_eq!(report["status"], "error", "{response}");
    let expected = format!("event nak-1 not delivered: {origin} answered 503: \"try later\"");
    assert_eq!(
        report["reason"],
        format!("picky-gate failed (error: {expected}); failurePolicy closed denies")
    );
    host.wait_until("the observer has tried", || {
        host.invocations("picky-observer", "error") == 1
    });
    let failure = &host.log().failures_of("picky-observer")[0];
    assert_eq!(failure.field("cause"), Some("error"));
    assert_eq!(failure.field("event"), Some("nak-1"));
    assert!(
        failure.message().is_some_and(|m| m.contains(&expected)),
        "{failure:?}"
    );
    let requests = receiver.wait_for_answered(2);
    assert!(
        requests
            .iter()
            .all(|r| r.answered.map(|(s, _)| s) == Some(503))
    );
}

#[test]
fn outbound_responses_are_capped_in_size_and_bounded_by_the_event_deadline() {
    // A 2 MiB answer is refused past 1 MiB; an answer that never comes ends at the event's
    // 500 ms deadline as a timeout, and the producer has the gate's answer by then.
    let big = Receiver::start(|_| Reply {
        status: 200,
        headers: Vec::new(),
        body: vec![b'x'; 2 << 20],
    });
    let latch = Latch::new();
    let stalled = {
        let latch = latch.clone();
        Receiver::start(move |_| {
            latch.wait();
            Reply::status(200, "too late")
        })
    };
    let mut slow = fetch(
        "stalled-fetch",
        &stalled.url("/stall"),
        Some(vec![stalled.origin()]),
    );
    slow["limits"] = json!({ "timeoutMs": 500 });
    slow["failurePolicy"] = json!("open");
    let work = Workdir::new();
    let host = Hookwasm::new().shared_cache().serve(&work.config(&[
        fetch(
            "oversized-fetch",
            &big.url("/big"),
            Some(vec![big.origin()]),
        ),
        slow,
    ]));

    let started = Instant::now();
    let response = host.post_events(&custom("cap-size"));
    let took = started.elapsed();
    latch.open();
    assert_eq!(response.status, 200, "{response}");
    let decision = response.json();
    let oversized = gate_report(&decision, "oversized-fetch");
    assert_eq!(oversized["status"], "error", "{response}");
    let expected = format!(
        "request to {} failed: reading the response body: ",
        big.origin()
    );
    assert!(
        oversized["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&expected)),
        "{response}"
    );
    let stalled_report = gate_report(&decision, "stalled-fetch");
    assert_eq!(stalled_report["status"], "timeout", "{response}");
    assert!(
        stalled_report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not answer within 500 ms")),
        "{response}"
    );
    assert!(
        took < Duration::from_millis(500 + 1_500),
        "a gate with a 500 ms deadline answered in {took:?}"
    );
    assert_eq!(stalled.requests().len(), 1, "the request was sent");
}
