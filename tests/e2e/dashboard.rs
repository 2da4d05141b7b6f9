//! The dashboard in a real browser: headless Chromium driven through chromedriver (W3C
//! WebDriver over loopback HTTP). It signs in, watches an event posted meanwhile appear live
//! with its gate's verdict and an observer's annotation, opens its outcomes, retries a dead
//! letter and sees it delivered, and sees a quarantined handler marked so; and it stays usable
//! with 10,000 events in the history and 100 handlers. A screenshot of each page is written under
//! `target/dashboard-screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{Host, Workdir, chaos, chaos_gate, http_with, proxy_action, workspace_root};

const ADMIN: &str = "dashboard-admin-token-0123456789";
const PRODUCER: &str = "dashboard-producer-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, stopped on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
    _profile: Workdir,
}

impl Driver {
    fn start() -> Driver {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: run `cargo xtask test`, which installs Debian's chromium and chromium-driver"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = Workdir::new();
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1500,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let answer = webdriver(addr, "POST", "/session", Some(capabilities));
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Driver {
            child,
            addr,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.addr, method, &path, body)
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page and returns its value.
    fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks the element `css` finds. The live pages re-render rows as events arrive, so an
    /// element found may be replaced before the click lands: then it is found again.
    fn click(&self, css: &str) {
        for _ in 0..20 {
            let element = self.element(css);
            let path = format!("/session/{}/element/{element}/click", self.session);
            let (status, answer) = webdriver_answer(self.addr, "POST", &path, Some(json!({})));
            if status == 200 {
                return;
            }
            assert_eq!(
                answer["value"]["error"], "stale element reference",
                "POST {path}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{css} was re-rendered under every one of 20 clicks");
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Waits until `script` returns something truthy; returns it.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(script);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting until {what}; page: {}",
                self.run("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        let folder = workspace_root().join("target/dashboard-screenshots");
        std::fs::create_dir_all(&folder).expect("the screenshot folder");
        let path = folder.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("the screenshot is written");
        path
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| webdriver(self.addr, "DELETE", &path, None));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver command; returns its `value`, which must come with a 200.
fn webdriver(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, json) = webdriver_answer(addr, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {json}");
    json["value"].clone()
}

/// One WebDriver command; returns its status and whole answer. chromedriver keeps connections
/// open whatever the request says, so the answer is read by its `Content-Length`, not to the end.
fn webdriver_answer(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(addr).expect("chromedriver answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("a timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("the command is sent");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header");
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).expect("the whole answer");
    let json: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&answer)
        )
    });
    (status, json)
}

fn config(work: &Workdir, fragile: &str) -> PathBuf {
    let mut broken = chaos_gate("broken", "error");
    broken["events"] = json!(["custom.break"]);
    broken["quarantine"] =
        json!({ "afterFailures": 1, "backoffMs": 600000, "maxBackoffMs": 600000 });
    let mut reviewer = chaos_gate("reviewer", "ok");
    reviewer["events"] = json!(["push.*"]);
    let mut summary = chaos("summary", "ok");
    summary["events"] = json!(["push.*"]);
    let mut fragile_entry = chaos("fragile", fragile);
    fragile_entry["events"] = json!(["push.error"]);
    fragile_entry["retry"] = json!({ "maxAttempts": 1 });
    let config = json!({
        "auth": { "tokens": [
            { "name": "operator", "token": ADMIN, "scopes": ["read", "admin"] },
            { "name": "producer", "token": PRODUCER, "scopes": ["ingest"] },
        ]},
        "eventHandlers": [reviewer, summary, fragile_entry, broken],
    });
    work.write("proxy.config.json", config.to_string())
}

fn post(host: &Host, path: &str, body: &Value, token: &str) -> crate::support::Response {
    let authorization = format!("Bearer {token}");
    http_with(
        host.addr(),
        "POST",
        path,
        &[("Authorization", &authorization)],
        Some(&body.to_string()),
    )
}

#[test]
fn an_operator_signs_in_watches_events_live_retries_a_dead_letter_and_sees_quarantine() {
    let work = Workdir::new();
    let config_path = config(&work, "error");
    let host = Host::serve(&config_path);
    // Before the browser: a dead letter (fragile fails its only attempt) and a quarantined gate.
    let doomed = proxy_action("doomed", "push.error");
    assert_eq!(post(&host, "/v1/events", &doomed, PRODUCER).status, 200);
    let mut breaking = proxy_action("break-1", "push.started");
    breaking["type"] = json!("custom.break");
    breaking["data"] = json!({ "reason": "test" });
    let broke = post(&host, "/v1/events", &breaking, PRODUCER);
    assert_eq!(broke.status, 200, "{broke}");

    let browser = Driver::start();
    let base = format!("http://{}", host.addr());
    browser.open(&format!("{base}/"));
    browser.wait_for(
        "the sign-in form",
        "return document.querySelector('#token') !== null",
    );
    browser.screenshot("0-sign-in");
    browser.type_into("#token", ADMIN);
    browser.click("#sign-in");
    browser.wait_for(
        "the handlers page",
        "return document.querySelector('tr[data-handler=\"broken\"] .state')?.textContent",
    );
    let state = browser
        .run("return document.querySelector('tr[data-handler=\"broken\"] .state').textContent");
    assert!(
        state.as_str().is_some_and(|s| s.starts_with("quarantined")),
        "{state}"
    );
    let who = browser.run("return document.querySelector('#who').textContent");
    assert!(
        who.as_str().is_some_and(|w| w.contains("operator")),
        "{who}"
    );
    let screenshot = browser.screenshot("1-handlers");
    println!("dashboard: handlers page in {}", screenshot.display());

    // Events: one posted while the page is open appears live, with its verdict and outcomes.
    browser.open(&format!("{base}/#events"));
    browser.wait_for(
        "the live stream",
        "return document.querySelector('#live').textContent === 'live'",
    );
    let live = proxy_action("live-1", "push.started");
    let answer = post(&host, "/v1/events", &live, PRODUCER);
    assert_eq!(answer.json()["verdict"], "allow", "{answer}");
    browser.wait_for(
        "the live row with its gate's verdict",
        "return document.querySelector('tr.event[data-id=\"live-1\"] .verdict')?.textContent === 'allow'",
    );
    browser.click("tr.event[data-id=\"live-1\"]");
    let annotation = browser.wait_for(
        "the observer's annotation in the opened outcomes",
        "const row = document.querySelector('tr.event[data-id=\"live-1\"]').nextElementSibling; \
         const note = row.querySelector('tr.outcome[data-handler=\"summary\"] .annotation[data-key=\"seen\"]'); \
         return row.hidden ? null : note?.textContent",
    );
    assert!(
        annotation.as_str().is_some_and(|a| a.contains("live-1")),
        "{annotation}"
    );
    browser.screenshot("2-events");

    // Deliveries: fix the fragile observer, then retry its dead letter from the page.
    config(&work, "ok");
    let reloaded = post(&host, "/v1/reload", &json!({}), ADMIN);
    assert_eq!(reloaded.status, 200, "{reloaded}");
    browser.open(&format!("{base}/#deliveries"));
    browser.wait_for(
        "the dead letter",
        "return document.querySelector('tr.dead button.retry:not([disabled])') !== null",
    );
    browser.screenshot("3-dead-letters");
    browser.click("tr.dead button.retry");
    browser.wait_for(
        "the dead letter delivered",
        "const row = document.querySelector('tr[data-handler=\"fragile\"] .done'); \
         return document.querySelector('tr.dead') === null && row?.textContent === '1'",
    );
    browser.screenshot("4-delivered");
    let record = host_get(&host, "/v1/events/doomed");
    let fragile: Vec<&str> = record["outcomes"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter(|o| o["handler"] == "fragile")
                .filter_map(|o| o["status"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        fragile,
        ["error", "ok"],
        "the failed attempt, then the retried one: {record}"
    );
}

fn host_get(host: &Host, path: &str) -> Value {
    let authorization = format!("Bearer {ADMIN}");
    http_with(
        host.addr(),
        "GET",
        path,
        &[("Authorization", &authorization)],
        None,
    )
    .json()
}

#[test]
fn the_dashboard_stays_usable_with_10000_events_and_100_handlers() {
    let work = Workdir::new();
    let mut handlers = vec![chaos("notes", "ok")];
    for i in 0..99 {
        let mut idle = chaos(&format!("idle-{i:02}"), "ok");
        idle["events"] = json!(["never.posted"]);
        handlers.push(idle);
    }
    let config = json!({
        "auth": { "tokens": [{ "name": "operator", "token": ADMIN, "scopes": ["read", "admin"] },
                             { "name": "producer", "token": PRODUCER, "scopes": ["ingest"] }] },
        "eventHandlers": handlers,
    });
    let host = Host::serve(&work.write("proxy.config.json", config.to_string()));
    for round in 0..10 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| proxy_action(&format!("bulk-{round}-{i:03}"), "push.completed"))
            .collect();
        let answer = post(&host, "/v1/events", &json!(batch), PRODUCER);
        assert_eq!(answer.status, 202, "{answer}");
    }

    let browser = Driver::start();
    let base = format!("http://{}", host.addr());
    browser.open(&format!("{base}/login"));
    browser.type_into("#token", ADMIN);
    let started = Instant::now();
    browser.click("#sign-in");
    let rows = browser.wait_for(
        "100 handler rows",
        "const n = document.querySelectorAll('#handler-rows tr').length; return n === 100 ? n : null",
    );
    let handlers_ms = started.elapsed().as_millis();
    browser.open(&format!("{base}/#events"));
    let started = Instant::now();
    browser.wait_for(
        "the first page of events",
        "return document.querySelectorAll('tr.event').length === 100 && !document.querySelector('#older').hidden",
    );
    let events_ms = started.elapsed().as_millis();
    browser.click("#older");
    browser.wait_for(
        "the second page",
        "return document.querySelectorAll('tr.event').length === 200",
    );
    let newest = browser.run("return document.querySelector('tr.event').dataset.id");
    assert_eq!(newest, "bulk-9-999");
    browser.screenshot("5-events-at-scale");
    println!(
        "dashboard: {rows} handlers shown {handlers_ms} ms after sign-in; the first 100 of 10,000 \
         events in {events_ms} ms, the next 100 on request"
    );
}
