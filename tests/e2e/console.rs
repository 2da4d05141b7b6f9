//! The operator console's locks and stream: every endpoint against every scope, sessions with
//! CSRF, the refusal to listen beyond loopback without tokens, and `GET /v1/stream` resuming,
//! cutting off a slow consumer, and refusing what was pruned.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Host, Workdir, chaos, hookwasm, http_with, proxy_action};

const INGEST: &str = "ingest-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const EXPIRED: &str = "expired-token-0123456789abcdef";

/// A config with one observer and the four tokens; `session_seconds` for the dashboard.
fn locked_config(work: &Workdir, session_seconds: u64) -> std::path::PathBuf {
    let config = json!({
        "auth": {
            "tokens": [
                {"name": "producer", "token": INGEST, "scopes": ["ingest"]},
                {"name": "viewer", "token": READ, "scopes": ["read"]},
                {"name": "operator", "token": ADMIN, "scopes": ["read", "admin"]},
                {"name": "former", "token": EXPIRED, "scopes": ["ingest", "read", "admin"],
                 "expires": "2001-01-01T00:00:00Z"},
            ],
            "sessionSeconds": session_seconds,
        },
        "eventHandlers": [chaos("notes", "ok")],
    });
    work.write("proxy.config.json", config.to_string())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn every_endpoint_answers_each_token_by_its_scopes() {
    let work = Workdir::new();
    let host = Host::serve(&locked_config(&work, 60));
    let event = proxy_action("scoped", "push.started").to_string();
    // (method, path, body, scope it needs; None: open to anyone)
    let endpoints: [(&str, &str, Option<&str>, Option<&str>); 14] = [
        ("POST", "/v1/events", Some(&event), Some("ingest")),
        ("GET", "/v1/events", None, Some("read")),
        ("GET", "/v1/events/scoped", None, Some("read")),
        ("GET", "/v1/handlers", None, Some("read")),
        ("GET", "/v1/deliveries", None, Some("read")),
        ("GET", "/v1/dead-letters", None, Some("read")),
        ("GET", "/v1/session", None, Some("read")),
        ("GET", "/metrics", None, Some("read")),
        ("GET", "/", None, Some("read")),
        ("POST", "/v1/dead-letters/1/retry", None, Some("admin")),
        ("DELETE", "/v1/dead-letters/1", None, Some("admin")),
        ("POST", "/v1/reload", None, Some("admin")),
        ("GET", "/healthz", None, None),
        ("GET", "/login", None, None),
    ];
    let callers: [(&str, Option<&str>, &[&str]); 6] = [
        ("no token", None, &[]),
        ("a wrong token", Some("not-a-token-at-all-0123456789"), &[]),
        ("an expired token", Some(EXPIRED), &[]),
        ("the ingest token", Some(INGEST), &["ingest"]),
        ("the read token", Some(READ), &["read"]),
        ("the admin token", Some(ADMIN), &["read", "admin"]),
    ];
    let mut checked = 0;
    for (method, path, body, needed) in endpoints {
        for (who, token, scopes) in callers {
            let authorization = token.map(bearer);
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("Authorization", value.as_str()))
                .collect();
            let answer = http_with(host.addr(), method, path, &headers, body);
            let expected = match needed {
                None => "allowed",
                Some(_) if scopes.is_empty() => "401",
                Some(scope) if scopes.contains(&scope) => "allowed",
                Some(_) => "403",
            };
            let got = match answer.status {
                401 => "401",
                403 => "403",
                _ => "allowed",
            };
            assert_eq!(got, expected, "{method} {path} with {who}: {answer}");
            if answer.status == 401 {
                assert_eq!(
                    answer.header("www-authenticate"),
                    Some("Bearer realm=\"hookwasm\"")
                );
                assert!(answer.json()["error"].as_str().is_some(), "{answer}");
            }
            if answer.status == 403 {
                let message = answer.json()["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(message.contains("lacks the"), "{message}");
            }
            checked += 1;
        }
    }
    // The stream is read-scoped too (it answers with a body that never ends: headers only).
    for (token, status) in [(None, 401), (Some(INGEST), 403), (Some(READ), 200)] {
        let stream = SseClient::connect(host.addr(), "/v1/stream", token);
        assert_eq!(stream.status, status, "GET /v1/stream with {token:?}");
        checked += 1;
    }
    println!("auth: {checked} endpoint x caller combinations answered as their scopes say");
    let log = host.log().to_string();
    for secret in [INGEST, READ, ADMIN, EXPIRED] {
        assert!(!log.contains(secret), "a token reached the log");
    }
}

#[test]
fn the_dashboard_session_is_an_http_only_cookie_whose_changes_need_the_csrf_token() {
    let work = Workdir::new();
    let host = Host::serve(&locked_config(&work, 2));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];

    let refused = http_with(host.addr(), "POST", "/login", &form, Some("token=wrong"));
    assert_eq!(refused.status, 401, "{refused}");
    assert!(refused.header("set-cookie").is_none());
    assert!(refused.body.contains("not valid"), "{refused}");

    let page = http_with(host.addr(), "GET", "/", &[("Accept", "text/html")], None);
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );

    let signed_in = http_with(
        host.addr(),
        "POST",
        "/login",
        &form,
        Some(&format!("token={ADMIN}")),
    );
    assert_eq!(signed_in.status, 303, "{signed_in}");
    let set_cookie = signed_in.header("set-cookie").expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let with_cookie = |extra: Option<&'static str>, csrf: &str| -> Vec<(String, String)> {
        let mut headers = vec![("Cookie".to_owned(), cookie.clone())];
        if let Some(name) = extra {
            headers.push((name.to_owned(), csrf.to_owned()));
        }
        headers
    };
    let call = |method: &str, path: &str, headers: Vec<(String, String)>| {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        http_with(host.addr(), method, path, &headers, None)
    };
    let session = call("GET", "/v1/session", with_cookie(None, "")).json();
    assert_eq!(session["name"], "operator");
    let csrf = session["csrf"].as_str().expect("a CSRF token").to_owned();
    assert!(csrf.len() >= 32);

    let path = "/v1/dead-letters/12345/retry";
    let no_csrf = call("POST", path, with_cookie(None, ""));
    assert_eq!(no_csrf.status, 403, "{no_csrf}");
    assert!(no_csrf.body.contains("CSRF"), "{no_csrf}");
    let forged = call("POST", path, with_cookie(Some("X-CSRF-Token"), "forged"));
    assert_eq!(forged.status, 403, "{forged}");
    let genuine = call("POST", path, with_cookie(Some("X-CSRF-Token"), &csrf));
    assert_eq!(
        genuine.status, 404,
        "past the lock, no such dead letter: {genuine}"
    );

    std::thread::sleep(Duration::from_millis(2500));
    let expired = call("GET", "/v1/handlers", with_cookie(None, ""));
    assert_eq!(expired.status, 401, "{expired}");
    assert!(expired.body.contains("session has expired"), "{expired}");
}

#[test]
fn without_tokens_serve_refuses_a_non_loopback_address_unless_told_insecure() {
    let work = Workdir::new();
    let config = work.config(&[chaos("notes", "ok")]);
    let config = config.to_string_lossy();
    let refused = hookwasm(&["serve", "--config", &config, "--listen", "0.0.0.0:0"]);
    assert_ne!(refused.code, Some(0), "{refused}");
    let error = refused.error();
    assert!(error.contains("refusing to listen on 0.0.0.0:0"), "{error}");
    assert!(error.contains("--insecure"), "{error}");
    assert!(!error.trim().contains('\n'), "one line: {error}");

    let mut insecure = std::process::Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .args([
            "serve",
            "--config",
            &config,
            "--listen",
            "0.0.0.0:0",
            "--insecure",
        ])
        .env("HOOKWASM_CACHE_DIR", crate::support::shared_cache_dir())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("hookwasm starts");
    let stderr = insecure.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    let mut warned = false;
    while let Some(Ok(line)) = lines.next() {
        warned |= line.contains("--insecure: listening on 0.0.0.0");
        if line.contains("listening on http://") || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let _ = insecure.kill();
    let _ = insecure.wait();
    assert!(warned, "the start warns about --insecure");
}

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

/// One Server-Sent Events message.
#[derive(Debug, Clone)]
struct Message {
    id: Option<i64>,
    event: String,
    data: Value,
}

/// A minimal SSE client over HTTP/1.0 (no chunked framing: the body is the stream).
struct SseClient {
    status: u16,
    reader: Option<BufReader<TcpStream>>,
}

impl SseClient {
    fn connect(addr: SocketAddr, path: &str, token: Option<&str>) -> SseClient {
        SseClient::connect_with(addr, path, token, None)
    }

    fn connect_with(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
        last_event_id: Option<i64>,
    ) -> SseClient {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut request =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header");
            if line.trim().is_empty() {
                break;
            }
        }
        SseClient {
            status,
            reader: Some(reader),
        }
    }

    /// The rest of a non-200 answer.
    fn body(mut self) -> String {
        let mut body = String::new();
        if let Some(mut reader) = self.reader.take() {
            let _ = reader.read_to_string(&mut body);
        }
        body
    }

    /// The next message (comments such as heartbeats skipped); `None` at the end of the stream
    /// or when no message came for 20 s (heartbeats alone do not count).
    fn next(&mut self) -> Option<Message> {
        let reader = self.reader.as_mut()?;
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        let mut seen = false;
        let started = Instant::now();
        loop {
            if started.elapsed() > Duration::from_secs(20) {
                return None;
            }
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Some(Message { id, event, data });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            seen = true;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = value.parse().ok(),
                "event" => event = value.to_owned(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
    }
}

fn batch(prefix: &str, count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|i| proxy_action(&format!("{prefix}-{i}"), "push.completed"))
            .collect(),
    )
}

#[test]
fn a_consumer_that_reconnects_with_last_event_id_misses_nothing_and_sees_nothing_twice() {
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[chaos("notes", "ok")]));
    let mut first = SseClient::connect(host.addr(), "/v1/stream", None);
    assert_eq!(first.status, 200);
    let hello = first.next().expect("hello");
    assert_eq!(hello.event, "hello");

    assert_eq!(host.post_events(&batch("a", 20)).status, 202);
    let mut seen: Vec<Message> = Vec::new();
    while seen.len() < 15 {
        seen.push(first.next().expect("a message"));
    }
    drop(first);
    let last = seen.last().and_then(|m| m.id).expect("an id");
    assert_eq!(host.post_events(&batch("b", 20)).status, 202);

    let mut resumed = SseClient::connect_with(host.addr(), "/v1/stream", None, Some(last));
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.next().map(|m| m.event), Some("hello".into()));
    // 40 acceptances and 40 outcomes of the observer in all.
    while seen.len() < 80 {
        seen.push(resumed.next().expect("a message"));
    }
    let ids: Vec<i64> = seen
        .iter()
        .map(|m| m.id.expect("every message has an id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "increasing, no repeat: {ids:?}"
    );
    let accepted: BTreeSet<String> = seen
        .iter()
        .filter(|m| m.event == "accepted")
        .map(|m| m.data["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    let outcomes = seen.iter().filter(|m| m.event == "outcome").count();
    assert_eq!((accepted.len(), outcomes), (40, 40));
    let first_accepted = seen.iter().find(|m| m.event == "accepted").expect("one");
    assert_eq!(
        first_accepted.data["event"]["data"]["actionId"],
        "action-a-0"
    );
    let outcome = seen.iter().find(|m| m.event == "outcome").expect("one");
    assert_eq!(outcome.data["outcome"]["handler"], "notes");
    println!("stream: 80 messages across a reconnect, none lost, none repeated");
}

#[test]
fn a_slow_consumer_is_cut_off_with_a_reason_and_ingest_does_not_wait_for_it() {
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[chaos("notes", "ok")]));
    let ingest = |prefix: &str| {
        let started = Instant::now();
        for round in 0..10 {
            let answer = host.post_events(&batch(&format!("{prefix}{round}"), 100));
            assert_eq!(answer.status, 202, "{answer}");
        }
        started.elapsed()
    };
    let alone = ingest("alone");
    let mut slow = SseClient::connect(host.addr(), "/v1/stream", None);
    assert_eq!(slow.next().map(|m| m.event), Some("hello".into()));
    // The consumer reads one message every 20 ms (50 a second) while 1,000 events arrive.
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        let mut read = 0;
        loop {
            match slow.next() {
                Some(message) if message.event == "cut-off" => {
                    let ended = slow.next().is_none();
                    return (Some(message), read, started.elapsed(), ended);
                }
                Some(_) => read += 1,
                None => return (None, read, started.elapsed(), true),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let beside_slow = ingest("slow");
    let (cut, read, after, ended) = reader.join().expect("the reader does not panic");
    let cut = cut.unwrap_or_else(|| panic!("no cut-off after {read} messages"));
    let reason = cut.data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("too slowly") && reason.contains("Last-Event-ID"),
        "{reason}"
    );
    assert!(ended, "the stream ends after the cut-off");
    println!(
        "stream: 1,000 events ingested in {:.0} ms alone, {:.0} ms beside a consumer reading 50 \
         messages a second; it was cut off after {read} messages and {:.1} s",
        alone.as_secs_f64() * 1e3,
        beside_slow.as_secs_f64() * 1e3,
        after.as_secs_f64()
    );
}

#[test]
fn resuming_from_an_id_that_was_pruned_is_refused_plainly() {
    let work = Workdir::new();
    let mut failing = chaos("fragile", "error");
    failing["retry"] = json!({ "maxAttempts": 1 });
    let host = Host::serve(&work.config(&[failing]));
    let mut stream = SseClient::connect(host.addr(), "/v1/stream", None);
    stream.next().expect("hello");
    assert_eq!(
        host.post_events(&proxy_action("doomed", "push.error"))
            .status,
        202
    );
    let accepted = loop {
        let message = stream.next().expect("a message");
        if message.event == "accepted" {
            break message;
        }
    };
    let before = accepted.id.expect("an id") - 1;
    let mut letters = Value::Null;
    host.wait_until("the dead letter", || {
        letters = host.get("/v1/dead-letters").json();
        letters["deadLetters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
    let id = letters["deadLetters"][0]["id"].as_i64().expect("an id");
    let discarded = http_with(
        host.addr(),
        "DELETE",
        &format!("/v1/dead-letters/{id}"),
        &[],
        None,
    );
    assert_eq!(discarded.status, 200, "{discarded}");
    // Its only delivery is gone, so the event and its history are forgotten: a consumer that
    // last saw an id before them has missed them for good.
    let gone = SseClient::connect_with(host.addr(), "/v1/stream", None, Some(before));
    assert_eq!(gone.status, 410);
    let body = gone.body();
    assert!(
        body.contains("pruned") && body.contains("Last-Event-ID"),
        "{body}"
    );
    let history = host.get("/v1/events/doomed");
    assert_eq!(history.status, 404, "{history}");
    let later = accepted.id.expect("an id") + 1;
    let fine = SseClient::connect_with(host.addr(), "/v1/stream", None, Some(later));
    assert_eq!(fine.status, 200, "resuming after what was pruned works");
}
