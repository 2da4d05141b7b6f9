//! Events as the ecosystem speaks them: the official CloudEvents SDKs (Python and JavaScript)
//! send in structured, binary and batch modes and the handler receives the same event each way;
//! declared event types are validated at ingest and listed the same way over HTTP and the CLI;
//! a `traceparent` reaches a handler's outbound request and the spans exported over OTLP; and
//! malformed headers and attributes get a 400 with a reason, never a panic.
//!
//! The SDKs are installed by `cargo xtask test` (pip into `target/pip`, npm into
//! `tests/interop/node_modules`), which tells these tests where through
//! `HOOKWASM_INTEROP_PYTHONPATH` and `HOOKWASM_INTEROP_NODE_MODULES`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use prost::Message as _;
use serde_json::{Value, json};

use crate::receiver::{Received, Receiver};
use crate::support::Hookwasm;
use crate::support::{Host, POLL_DEADLINE, Workdir, hookwasm, webhook_module, workspace_root};

/// The Standard Webhooks example secret (see `capabilities.rs`).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The producer's trace context in the interop events and the trace test.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// The interop events' type, declared with a schema so the SDKs' events are also checked.
fn interop_types() -> Value {
    json!([{
        "type": "com.example.interop.sent",
        "displayName": "Interop event",
        "description": "sent by the official CloudEvents SDKs in the interop tests",
        "category": "tests",
        "dataSchema": {
            "type": "object",
            "required": ["message", "count"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "count": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        }
    }])
}

/// A config of `handlers` with `extra` top-level keys (`eventTypes`, `strictTypes`).
fn config_with(work: &Workdir, handlers: &[Value], extra: Value) -> PathBuf {
    let mut config = json!({ "proxyUrl": "https://github.com", "eventHandlers": handlers });
    for (key, value) in extra.as_object().expect("an object").clone() {
        config[key] = value;
    }
    work.write(
        "proxy.config.json",
        serde_json::to_string_pretty(&config).expect("JSON"),
    )
}

/// The webhook plugin delivering every event to `receiver`: a recording observer that sees the
/// whole event JSON, extension attributes included.
fn recorder(receiver: &Receiver) -> Value {
    json!({
        "name": "recorder",
        "module": webhook_module(),
        "config": { "url": receiver.url("/events"), "secret": SECRET },
        "capabilities": { "allowedHosts": [receiver.origin()] },
        "limits": { "timeoutMs": 10_000 },
    })
}

/// Where `cargo xtask test` put an SDK; fails with what to do when it did not.
fn installed(variable: &str, marker: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{variable} is not set: run `cargo xtask test`, which installs the CloudEvents SDKs"
            )
        });
    assert!(
        path.join(marker).exists(),
        "{} has no {marker}: run `cargo xtask test`, which installs the CloudEvents SDKs",
        path.display()
    );
    path
}

/// Runs one of the interop senders; returns its answers, one JSON object per mode.
fn send_with(
    program: &str,
    script: &str,
    env: (&str, PathBuf),
    host: &Host,
    prefix: &str,
) -> Vec<Value> {
    let script = workspace_root().join("tests/interop").join(script);
    let output = Command::new(program)
        .arg(&script)
        .arg(format!("http://{}", host.addr()))
        .arg(prefix)
        .env(env.0, env.1)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{program} {} failed: {}\n{stdout}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The delivered event with id `id`, as JSON.
fn delivered(requests: &[Received], id: &str) -> Value {
    requests
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} was not delivered"))
}

#[test]
fn the_official_sdks_send_in_every_mode_and_the_handler_receives_the_same_event() {
    let python = installed("HOOKWASM_INTEROP_PYTHONPATH", "cloudevents");
    let node = installed("HOOKWASM_INTEROP_NODE_MODULES", "cloudevents/package.json");
    let receiver = Receiver::answering(200);
    let work = Workdir::new();
    let config = config_with(
        &work,
        &[recorder(&receiver)],
        json!({ "eventTypes": interop_types(), "strictTypes": true }),
    );
    let host = Hookwasm::new().shared_cache().serve(&config);

    let mut ids = Vec::new();
    for (program, script, env, prefix) in [
        ("python3", "send.py", ("PYTHONPATH", python), "py"),
        ("node", "send.js", ("NODE_PATH", node), "js"),
    ] {
        let answers = send_with(program, script, env, &host, prefix);
        let modes: Vec<&str> = answers
            .iter()
            .map(|a| a["mode"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(modes, ["structured", "binary", "batch"], "{answers:?}");
        for answer in &answers[..2] {
            assert_eq!(answer["status"], 202, "{answer}");
            assert_eq!(answer["answer"]["observersQueued"], 1, "{answer}");
        }
        let batch = &answers[2];
        assert_eq!(batch["status"], 202, "{batch}");
        let results = batch["answer"]["results"].as_array().expect("results");
        assert_eq!(results.len(), 2, "{batch}");
        for (index, result) in results.iter().enumerate() {
            assert_eq!(result["status"], "accepted", "{batch}");
            assert_eq!(result["index"], index);
            assert_eq!(result["eventId"], format!("{prefix}-batch-{}", index + 1));
        }
        for suffix in ["structured", "binary", "batch-1", "batch-2"] {
            ids.push(format!("{prefix}-{suffix}"));
        }
    }
    let requests = receiver.wait_until("eight deliveries", |r| r.len() >= 8);

    let common: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("tests/interop/common.json"))
            .expect("common.json"),
    )
    .expect("JSON");
    let without_id = |mut event: Value| {
        event.as_object_mut().expect("an object").remove("id");
        event
    };
    for prefix in ["py", "js"] {
        let mine: Vec<&String> = ids.iter().filter(|i| i.starts_with(prefix)).collect();
        let first = without_id(delivered(&requests, mine[0]));
        for id in &mine[1..] {
            assert_eq!(
                without_id(delivered(&requests, id)),
                first,
                "{id} differs from {}",
                mine[0]
            );
        }
        // The event is the one the SDK was given: attributes, extension and data.
        for (name, value) in common["attributes"].as_object().expect("attributes") {
            if name == "time" {
                let sent: jiff::Timestamp = value.as_str().expect("time").parse().expect("time");
                let got: jiff::Timestamp =
                    first["time"].as_str().expect("time").parse().expect("time");
                assert_eq!(sent, got, "{prefix}: time");
            } else if name == "subject" && prefix == "py" {
                // Percent-encoded in binary mode by the Python SDK, decoded by the host.
                assert_eq!(first[name], common["pythonSubject"], "{prefix}: subject");
            } else {
                assert_eq!(&first[name], value, "{prefix}: attribute {name}");
            }
        }
        assert_eq!(first["data"], common["data"], "{prefix}: data");
    }
    // The receiver answered the eighth before the host recorded it: wait for the record.
    host.wait_until("eight deliveries recorded as ok", || {
        host.invocations("recorder", "ok") == 8
    });
    assert_eq!(
        receiver.requests().len(),
        8,
        "every event was delivered once"
    );
}

#[test]
fn declared_types_are_validated_at_ingest_and_listed_alike_over_http_and_the_cli() {
    let work = Workdir::new();
    work.write(
        "user-created.schema.json",
        json!({
            "type": "object",
            "required": ["login", "email"],
            "properties": {
                "login": {"type": "string", "pattern": "^[a-z]+$", "examples": ["ada"]},
                "email": {"type": "string", "format": "email"},
                "roles": {"type": "array", "items": {"enum": ["admin", "dev"]}, "minItems": 1}
            }
        })
        .to_string(),
    );
    let types = json!([
        {
            "type": "acme.user.created",
            "displayName": "User created",
            "description": "a user signed up at the identity gateway",
            "category": "Identity",
            "dataSchema": "user-created.schema.json"
        },
        {
            "type": "acme.invoice.paid",
            "description": "an invoice was paid",
            "dataSchema": {"type": "object", "required": ["amount"],
                           "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}}}
        }
    ]);
    let handlers = [json!({
        "name": "audit",
        "module": crate::support::Guest::Chaos.module(),
        "mode": "gate",
        "events": ["acme.user.created", "acme.user.renamed"],
        "config": { "behavior": "echo" },
        // A loaded CI machine must not turn `allow` into a timeout.
        "limits": { "timeoutMs": 10_000 },
    })];
    let config = config_with(
        &work,
        &handlers,
        json!({ "eventTypes": types, "strictTypes": true }),
    );
    let host = Hookwasm::new().shared_cache().serve(&config);
    let config_arg = config.to_string_lossy().into_owned();

    // The handler subscribes to a type nobody declared: one warning, naming both.
    let warnings = host
        .log()
        .with_message("which no `eventTypes` entry declares");
    assert_eq!(warnings.len(), 1, "{}", host.log());
    assert_eq!(warnings[0].field("handler"), Some("audit"));

    // `--example` prints an event that passes its own schema: the server accepts it.
    for event_type in [
        "acme.user.created",
        "acme.invoice.paid",
        "git.branch.created",
    ] {
        let run = hookwasm(&["events", event_type, "--example", "--config", &config_arg]);
        run.assert_code(0);
        let example: Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(example["type"], event_type);
        let response = host.post_events(&example);
        assert!(
            response.status == 200 || response.status == 202,
            "{event_type}: {response}\n{example}"
        );
    }

    let user = |id: &str, data: Value| {
        json!({"specversion": "1.0", "id": id, "source": "https://idp.example.com",
               "type": "acme.user.created", "data": data})
    };
    let valid = host.post_events(&user(
        "u-1",
        json!({"login": "grace", "email": "grace@example.com", "roles": ["dev"]}),
    ));
    assert_eq!(valid.status, 200, "{valid}");
    assert_eq!(valid.json()["verdict"], "allow", "{valid}");

    for (data, pointer, rule) in [
        (
            json!({"login": "grace", "email": "no-at-sign"}),
            "/data/email",
            "/properties/email/format",
        ),
        (
            json!({"login": "Grace1", "email": "g@example.com"}),
            "/data/login",
            "/properties/login/pattern",
        ),
        (
            json!({"login": "grace", "email": "g@example.com", "roles": ["root"]}),
            "/data/roles/0",
            "/properties/roles/items/enum",
        ),
        (json!({"login": "grace"}), "/data", "/required"),
    ] {
        let response = host.post_events(&user("u-bad", data.clone()));
        assert_eq!(response.status, 400, "{data}: {response}");
        let body = response.json();
        assert_eq!(body["pointer"], pointer, "{body}");
        assert_eq!(body["rule"], rule, "{body}");
        let error = body["error"].as_str().expect("error");
        assert!(
            error.contains("acme.user.created") && error.contains(pointer),
            "{error}"
        );
    }
    let undeclared = host.post_events(&json!({"specversion": "1.0", "id": "x-1",
        "source": "s", "type": "acme.user.renamed", "data": {}}));
    assert_eq!(undeclared.status, 400, "{undeclared}");
    assert!(
        undeclared.json()["error"]
            .as_str()
            .expect("error")
            .contains("strictTypes")
    );
    // Nothing refused was stored or run: only the valid event and the examples reached the gate.
    assert_eq!(
        host.all_invocations("audit"),
        2,
        "u-1 and the acme.user.created example"
    );

    // The listing over HTTP is the CLI's.
    let listed = host.get("/v1/event-types");
    assert_eq!(listed.status, 200, "{listed}");
    let run = hookwasm(&["events", "--config", &config_arg]);
    run.assert_code(0);
    let cli: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(listed.json()["eventTypes"], cli);
    assert_eq!(listed.json()["strictTypes"], true);
    let entry = cli
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["type"] == "acme.user.created")
        .expect("the declared type is listed");
    assert_eq!(entry["category"], "Identity");
    assert_eq!(entry["displayName"], "User created");
    assert_eq!(entry["builtin"], false);
    assert_eq!(
        entry["dataSchema"]["properties"]["email"]["format"],
        "email"
    );
    assert!(
        cli.as_array()
            .expect("list")
            .iter()
            .any(|e| e["type"] == "git.branch.created")
    );
    assert!(
        cli.as_array()
            .expect("list")
            .iter()
            .all(|e| e["type"] != "*"),
        "strict: no catch-all"
    );

    // `replay` checks declared types as ingest does, before it runs anything.
    let events = work.ndjson(
        "events.ndjson",
        &[
            user(
                "r-1",
                json!({"login": "grace", "email": "grace@example.com"}),
            ),
            user("r-2", json!({"login": "grace", "email": 7})),
        ],
    );
    let run = hookwasm(&["replay", "--config", &config_arg, &events.to_string_lossy()]);
    run.assert_code(2);
    assert!(
        run.error().contains("line 2") && run.error().contains("/data/email"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "nothing ran: {run}");

    // A broken declaration is named by `check` (and refuses `serve`), with what to do.
    let broken = config_with(
        &work,
        &[],
        json!({ "eventTypes": [{"type": "acme.x.y", "description": "d", "dataSchema": {"type": "nope"}}] }),
    );
    let run = hookwasm(&["check", "--config", &broken.to_string_lossy()]);
    run.assert_code(2);
    assert!(
        run.error()
            .contains("`eventTypes[0]` (acme.x.y): `dataSchema` is not a valid JSON Schema"),
        "{run}"
    );

    // A config shared with GitProxy keeps the keys in a file named by HOOKWASM_EVENT_TYPES.
    let sidecar = work.write(
        "event-types.json",
        json!({ "eventTypes": [{"type": "acme.thing.done", "description": "d"}] }).to_string(),
    );
    let plain = work.write(
        "plain.config.json",
        json!({"eventHandlers": []}).to_string(),
    );
    let run = Hookwasm::new()
        .args(&[
            "events",
            "acme.thing.done",
            "--config",
            &plain.to_string_lossy(),
        ])
        .envs(&[("HOOKWASM_EVENT_TYPES", &sidecar.to_string_lossy())])
        .run();
    run.assert_code(0);
    let entry: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(entry["type"], "acme.thing.done");
}

/// One raw HTTP/1.1 request (headers exactly as given, bytes and repeats included) and the
/// status and body of its answer.
pub(crate) fn raw_post(addr: SocketAddr, headers: &[(&str, &[u8])], body: &[u8]) -> (u16, String) {
    let mut request = b"POST /v1/events HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".to_vec();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(POLL_DEADLINE))
        .expect("timeout");
    stream.write_all(&request).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Headers, body, and how the error must start.
type Case<'a> = (Vec<(&'a str, &'a [u8])>, Vec<u8>, &'a str);

#[test]
fn malformed_headers_and_attributes_get_a_400_with_a_reason_and_never_a_panic() {
    let work = Workdir::new();
    let host = Hookwasm::new()
        .shared_cache()
        .serve(&work.config(&[crate::support::console_logger()]));
    let addr = host.addr();
    let ce = |id: &'static [u8]| -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("ce-specversion", b"1.0"),
            ("ce-id", id),
            ("ce-source", b"https://fuzz.example.com"),
            ("ce-type", b"acme.fuzz.sent"),
        ]
    };
    let huge = "x".repeat(9000);
    let cases: Vec<Case<'_>> = vec![
        ([ce(b"f1"), vec![("ce-id", b"f2")]].concat(), vec![], "binary mode: header `ce-id` appears 2 times"),
        (ce(b"caf\xc3\x28"), vec![], "binary mode: header `ce-id` is not valid UTF-8"),
        (ce(b"%FF%FE"), vec![], "binary mode: header `ce-id` is not valid UTF-8"),
        ([ce(b"f3"), vec![("ce-subject", huge.as_bytes())]].concat(), vec![], "binary mode: header `ce-subject` is 9000 bytes long"),
        ([ce(b"f4"), vec![("ce-time", b"42")]].concat(), vec![], "binary mode: invalid event: `time` \"42\""),
        ([ce(b"f5"), vec![("content-type", b"application/json")]].concat(), b"{oops".to_vec(), "binary mode: the body is not valid JSON"),
        (vec![("content-type", b"application/cloudevents+json")],
         br#"{"specversion": 1.0, "id": "f6", "source": "s", "type": "acme.fuzz.sent"}"#.to_vec(),
         "structured mode: invalid event: `specversion`"),
        (vec![("content-type", b"application/cloudevents+json")],
         br#"{"specversion": "1.0", "id": ["f7"], "source": "s", "type": "acme.fuzz.sent"}"#.to_vec(),
         "structured mode: invalid event: `id` must be a string"),
        (vec![("content-type", b"application/cloudevents-batch+json")],
         br#"[{"specversion": "1.0", "id": "f8", "source": "s", "type": "acme.fuzz.sent", "traceparent": 7}]"#.to_vec(),
         "batch mode: invalid event: extension attribute `traceparent`"),
    ];
    for (headers, body, expected) in &cases {
        let (status, answer) = raw_post(addr, headers, body);
        assert_eq!(status, 400, "{expected}: {answer}");
        let answer: Value =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
        // A batch answers for each event; a single event or request as a whole.
        let error = answer["results"][0]["error"]
            .as_str()
            .or_else(|| answer["error"].as_str())
            .unwrap_or_else(|| panic!("{expected}: no error in {answer}"));
        assert!(
            error.starts_with(expected),
            "expected {expected:?}, got {error:?}"
        );
    }
    // A bounded random loop of header soup and byte bodies: every answer is a 4xx with a
    // reason or an acceptance; the server stays up and never panics.
    let mut rng = fastrand::Rng::with_seed(1616);
    for round in 0..200 {
        let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
        for _ in 0..rng.usize(0..6) {
            let name = [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-time",
                "ce-x",
                "content-type",
                "traceparent",
            ][rng.usize(0..8)];
            let len = rng.usize(0..40);
            // Any byte a header value may hold (visible ASCII and obs-text); control bytes are
            // refused by the HTTP parser before the host sees them.
            let value: Vec<u8> = (0..len)
                .map(|_| match rng.u8(0x21..=0xfe) {
                    0x7f => b'%',
                    b => b,
                })
                .collect();
            headers.push((name, value));
        }
        let len = rng.usize(0..64);
        let body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let borrowed: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let (status, answer) = raw_post(addr, &borrowed, &body);
        assert!(
            (200..=202).contains(&status) || ((400..500).contains(&status) && !answer.is_empty()),
            "round {round}: {status} {answer}"
        );
    }
    let stopped = host.terminate();
    assert!(stopped.status.success(), "{}", stopped.log);
}

#[test]
fn a_traceparent_reaches_the_handlers_outbound_request_and_the_otlp_receiver() {
    let webhook = Receiver::answering(200);
    let collector = Receiver::answering(200);
    let work = Workdir::new();
    let gate = json!({
        "name": "check",
        "module": crate::support::Guest::Chaos.module(),
        "mode": "gate",
        "config": { "behavior": "ok" },
    });
    let config = work.config(&[recorder(&webhook), gate]);
    let endpoint = collector.origin();
    let host = Hookwasm::new()
        .shared_cache()
        .args(&[])
        .envs(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "hookwasm-e2e"),
        ])
        .serve(&config);

    let traceparent = format!("00-{TRACE_ID}-{PRODUCER_SPAN}-01");
    let event = json!({
        "specversion": "1.0", "id": "traced-1", "source": "https://producer.example.com",
        "type": "acme.order.placed", "traceparent": traceparent, "tracestate": "vendor=x",
        "data": {"order": 1}
    });
    let response = host.post_events(&event);
    assert_eq!(response.status, 200, "{response}");

    let delivered = webhook.wait_for_answered(1);
    let outbound = delivered[0]
        .header("traceparent")
        .expect("the webhook request carries traceparent");
    let parts: Vec<&str> = outbound.split('-').collect();
    assert_eq!(parts.len(), 4, "{outbound}");
    assert_eq!(parts[1], TRACE_ID, "same trace id: {outbound}");
    assert_ne!(
        parts[2], PRODUCER_SPAN,
        "the delivery span is the request's parent"
    );
    assert_eq!(delivered[0].header("tracestate"), Some("vendor=x"));

    // The collector gets the ingest, gate and delivery spans, each a child of the producer's
    // span, and the delivery span is the one the outbound request named as its parent.
    let spans = || -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        collector
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
            .collect()
    };
    let start = std::time::Instant::now();
    let found = loop {
        let found = spans();
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        if [
            "hookwasm ingest",
            "hookwasm gate check",
            "hookwasm observer recorder",
        ]
        .iter()
        .all(|n| names.contains(n))
        {
            break found;
        }
        assert!(
            start.elapsed() < POLL_DEADLINE,
            "spans so far: {names:?}\n{}",
            host.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    for span in &found {
        assert_eq!(hex(&span.trace_id), TRACE_ID, "{}", span.name);
        assert_eq!(hex(&span.parent_span_id), PRODUCER_SPAN, "{}", span.name);
    }
    let observer = found
        .iter()
        .find(|s| s.name == "hookwasm observer recorder")
        .expect("the delivery span");
    assert_eq!(
        hex(&observer.span_id),
        parts[2],
        "the outbound request's parent"
    );
    let attribute = |name: &str| {
        observer
            .attributes
            .iter()
            .find(|a| a.key == name)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .unwrap_or_else(|| panic!("no attribute {name} on {observer:?}"))
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    assert_eq!(
        attribute("hookwasm.handler"),
        Any::StringValue("recorder".into())
    );
    assert_eq!(attribute("hookwasm.cause"), Any::StringValue("ok".into()));
    assert!(matches!(attribute("hookwasm.fuel"), Any::IntValue(n) if n > 0));
    assert!(matches!(attribute("hookwasm.digest"), Any::StringValue(d) if d.len() == 64));

    // The header form: an event without the extension, posted with a W3C `traceparent`
    // header, is stored with it, so its delivery (made later, from the outbox) has that parent.
    const HEADER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const HEADER_SPAN: &str = "b7ad6b7169203331";
    let header = format!("00-{HEADER_TRACE}-{HEADER_SPAN}-01");
    let body = json!({
        "specversion": "1.0", "id": "traced-2", "source": "https://producer.example.com",
        "type": "acme.order.placed", "data": {"order": 2}
    })
    .to_string();
    let (status, answer) = raw_post(
        host.addr(),
        &[
            ("content-type", b"application/cloudevents+json"),
            ("traceparent", header.as_bytes()),
        ],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let delivered = webhook.wait_for_answered(2);
    let stored: Value = serde_json::from_slice(&delivered[1].body).expect("JSON");
    assert_eq!(stored["id"], "traced-2");
    assert_eq!(stored["traceparent"], header, "stored with the event");
    let outbound = delivered[1].header("traceparent").expect("traceparent");
    assert!(
        outbound.starts_with(&format!("00-{HEADER_TRACE}-")),
        "{outbound}"
    );
    let start = std::time::Instant::now();
    loop {
        let delivery = spans()
            .into_iter()
            .find(|s| s.name == "hookwasm observer recorder" && hex(&s.trace_id) == HEADER_TRACE);
        if let Some(delivery) = delivery {
            assert_eq!(hex(&delivery.parent_span_id), HEADER_SPAN);
            break;
        }
        assert!(
            start.elapsed() < POLL_DEADLINE,
            "no delivery span of traced-2"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(host);
}

#[test]
fn a_reload_applies_new_event_types_without_a_restart() {
    let work = Workdir::new();
    let handlers = [crate::support::console_logger()];
    let config = config_with(&work, &handlers, json!({}));
    let host = Hookwasm::new().shared_cache().serve(&config);
    let event = json!({"specversion": "1.0", "id": "late-1", "source": "s",
                       "type": "acme.late.declared", "data": {"n": "one"}});
    assert_eq!(
        host.post_events(&event).status,
        202,
        "undeclared: accepted unchecked"
    );

    config_with(
        &work,
        &handlers,
        json!({ "eventTypes": [{
            "type": "acme.late.declared",
            "description": "declared after the start",
            "dataSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}
        }] }),
    );
    host.signal("HUP");
    host.wait_until("the reload lists the new type", || {
        host.get("/v1/event-types").json()["eventTypes"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t["type"] == "acme.late.declared"))
    });
    let mut again = event.clone();
    again["id"] = json!("late-2");
    let refused = host.post_events(&again);
    assert_eq!(refused.status, 400, "{refused}");
    assert_eq!(refused.json()["pointer"], "/data/n");
    again["data"]["n"] = json!(2);
    assert_eq!(host.post_events(&again).status, 202);
}
