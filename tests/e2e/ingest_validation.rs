//! Ingest validation (issue 17): the real host refuses, with one line naming the rule, what it
//! used to take — a content type that is not an event format, an id no delivery can carry, a
//! time outside RFC 3339, a control character in a string attribute, a list where a typed
//! payload has an object — and stores none of it. What the official SDKs send is still taken
//! (`cloudevents::the_official_sdks_*`).

use prost::Message as _;
use serde_json::{Value, json};

use crate::cloudevents::raw_post;
use crate::receiver::Receiver;
use crate::support::Hookwasm;
use crate::support::{Host, POLL_DEADLINE, Workdir, chaos, custom, proxy_action, ref_update};

/// The error of a refused request, checked to be one line.
fn one_line_error(answer: &str) -> String {
    let answer: Value =
        serde_json::from_str(answer).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {answer}"))
        .to_owned();
    assert!(!error.contains('\n'), "{error}");
    error
}

/// Whether the host's history has an event with this id (it keeps every accepted event).
fn stored(host: &Host, id: &str) -> bool {
    match host.get(&format!("/v1/events/{id}")).status {
        200 => true,
        404 => false,
        other => panic!("GET /v1/events/{id}: {other}"),
    }
}

#[test]
fn content_types_that_are_not_event_formats_are_a_415_naming_the_ones_read() {
    // `text/plain`, a form, or no content type at all used to be read as JSON and accepted.
    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .serve(&work.config(&[chaos("watcher", "ok")]));
    let body = custom("ct-1").to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("text/json"),
        Some("application/cloudevents+avro"),
        None,
    ] {
        let headers: Vec<(&str, &[u8])> = content_type
            .map(|c| vec![("content-type", c.as_bytes())])
            .unwrap_or_default();
        let (status, answer) = raw_post(host.addr(), &headers, body.as_bytes());
        println!("content-type {content_type:?}: {status} {answer}");
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        let error = one_line_error(&answer);
        for named in [
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "application/json",
            "binary mode (a ce-specversion header",
        ] {
            assert!(error.contains(named), "{named} not in {error}");
        }
    }
    assert!(!stored(&host, "ct-1"), "nothing of a 415 is stored");
    // The same event as JSON, and as binary mode with a text body, are taken.
    let (status, answer) = raw_post(
        host.addr(),
        &[("content-type", b"application/json; charset=utf-8")],
        body.as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = raw_post(
        host.addr(),
        &[
            ("ce-specversion", b"1.0"),
            ("ce-id", b"ct-2"),
            ("ce-source", b"https://idp.example.com"),
            ("ce-type", b"acme.note.written"),
            ("content-type", b"text/plain"),
        ],
        b"a note",
    );
    assert_eq!(status, 202, "{answer}");
    assert!(stored(&host, "ct-1") && stored(&host, "ct-2"));
    host.wait_until("the watcher handled both", || {
        host.invocations("watcher", "ok") == 2
    });
}

#[test]
fn ids_times_strings_and_typed_payloads_are_refused_with_the_rule_and_nothing_stored() {
    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .serve(&work.config(&[chaos("watcher", "ok")]));
    // Sets the member at `pointer` (its parent exists).
    let with = |mut event: Value, pointer: &str, value: Value| {
        let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
        event.pointer_mut(parent).expect("the parent")[name] = value;
        event
    };
    let cases: Vec<(Value, &str)> = vec![
        // Standard Webhooks forbids `.` in webhook-id: the webhook plugin dead-lettered these.
        (
            custom("evt.1"),
            "invalid event: `id` contains `.`: ids are 1 to 256 bytes of printable ASCII without spaces or `.`",
        ),
        (
            with(custom("t-1"), "/time", json!("2026-11-22T10:00:00+25:00")),
            "invalid event: `time` \"2026-11-22T10:00:00+25:00\" is not an RFC 3339 timestamp",
        ),
        (
            with(custom("t-2"), "/time", json!("2026-11-22T10:00:00")),
            "invalid event: `time` \"2026-11-22T10:00:00\" is not an RFC 3339 timestamp",
        ),
        (
            with(custom("s-1"), "/subject", json!("two\nlines")),
            "invalid event: `subject` contains U+000A: CloudEvents strings may not hold control characters",
        ),
        (
            with(
                custom("s-2"),
                "/type",
                json!(format!("acme.{}", "x".repeat(300))),
            ),
            "invalid event: `type` is 305 bytes long; the most is 256",
        ),
        (
            with(custom("c-1"), "/datacontenttype", json!("json")),
            "invalid event: `datacontenttype` \"json\" is not a media type",
        ),
        (
            with(
                proxy_action("p-1", "push.started"),
                "/data/repository",
                json!(["https://github.com/acme/widgets.git"]),
            ),
            "invalid event: `data` of a push.started event: `repository` is a list where an object is expected",
        ),
        (
            with(
                ref_update("r-1", "git.branch.created", "refs/heads/main"),
                "/data/pusher",
                json!(["ada"]),
            ),
            "invalid event: `data` of a git.branch.created event: `pusher` is a list where an object is expected",
        ),
        (
            {
                let mut event = ref_update("r-2", "git.branch.created", "refs/heads/main");
                event["datacontenttype"] = json!("application/merge-patch+json");
                event
            },
            "invalid event: `datacontenttype` is \"application/merge-patch+json\" but the `data` of a git.branch.created event is JSON",
        ),
    ];
    for (event, expected) in &cases {
        let id = event["id"].as_str().expect("id");
        let answer = host.post_events(event);
        println!("{id}: {} {}", answer.status, answer.body);
        assert_eq!(answer.status, 400, "{id}: {answer}");
        let error = one_line_error(&answer.body);
        assert!(
            error.starts_with(&format!("structured mode: {expected}")),
            "{id}: expected {expected:?}, got {error:?}"
        );
        assert!(!stored(&host, id), "{id} was stored");
    }
    // Binary mode follows the same rules: the time header, and the data type of a git event.
    let (status, answer) = raw_post(
        host.addr(),
        &[
            ("ce-specversion", b"1.0"),
            ("ce-id", b"b-1"),
            ("ce-source", b"s"),
            ("ce-type", b"acme.a.b"),
            ("ce-time", b"2026-11-22T10:00:00-24:00"),
        ],
        b"",
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        one_line_error(&answer).starts_with("binary mode: invalid event: `time`"),
        "{answer}"
    );
    // In a batch each refused event says why, and the valid one is taken.
    let batch = json!([custom("ok-1"), custom("bad.1")]).to_string();
    let (status, answer) = raw_post(
        host.addr(),
        &[("content-type", b"application/cloudevents-batch+json")],
        batch.as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    let results: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(results["results"][0]["status"], "accepted", "{results}");
    assert_eq!(results["results"][1]["status"], "refused", "{results}");
    assert!(stored(&host, "ok-1"));
    host.wait_until("the watcher handled only the valid event", || {
        host.invocations("watcher", "ok") == 1
    });
    let stopped = host.terminate();
    assert!(stopped.status.success(), "{}", stopped.log);
    println!(
        "{} refusals, each one line naming its rule; 1 valid event delivered",
        cases.len() + 2
    );
}

#[test]
fn a_refused_events_huge_attributes_do_not_travel_into_the_exported_span() {
    // The ingest span is started before the event is checked, so it used to carry whatever
    // `id`, `type` and `source` a refused event had, megabytes included, to the OTLP collector.
    let collector = Receiver::answering(200);
    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .args(&[])
        .envs(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.origin()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .serve(&work.config(&[chaos("watcher", "ok")]));
    let mut event = custom(&"i".repeat(100_000));
    event["source"] = json!("s".repeat(1 << 20));
    event["type"] = json!(format!("acme.{}", "t".repeat(100_000)));
    let answer = host.post_events(&event);
    assert_eq!(
        answer.status,
        400,
        "{}",
        &answer.body[..200.min(answer.body.len())]
    );
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let start = std::time::Instant::now();
    let span = loop {
        let found = collector
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/traces")
            .flat_map(|r| {
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                    r.body.as_slice(),
                )
                .expect("OTLP protobuf")
                .resource_spans
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .find(|s| s.name == "hookwasm ingest");
        if let Some(span) = found {
            break span;
        }
        assert!(
            start.elapsed() < POLL_DEADLINE,
            "no ingest span\n{}",
            host.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut longest = 0;
    for name in ["id", "type", "source"] {
        let key = format!("cloudevents.event_{name}");
        let value = span
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value);
        let Some(Any::StringValue(text)) = value else {
            panic!("no {key} on the span: {:?}", span.attributes)
        };
        assert!(text.len() <= 256, "{key} is {} bytes", text.len());
        longest = longest.max(text.len());
    }
    let size: usize = collector.requests().iter().map(|r| r.body.len()).sum();
    println!(
        "refused event of 1.2 MB: span attributes at most {longest} bytes, {size} bytes exported"
    );
    assert!(size < 64 << 10, "{size} bytes of spans exported");
}
