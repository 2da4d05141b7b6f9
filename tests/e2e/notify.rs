//! Reviewer notifications and the `smtp` capability: the notify plugin's Slack and Teams
//! messages reach a loopback receiver, its e-mail reaches a real SMTP server (Python's
//! `aiosmtpd`, started here), a handler without the grant or asking for another relay is
//! refused, and a component built against WIT 0.1.0 still loads and runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::{Receiver, closed_port};
use crate::support::{Host, POLL_DEADLINE, Workdir, hookwasm, proxy_action, workspace_root};

/// Where `cargo xtask test` tells the tests it installed Python packages.
const PYTHONPATH_VAR: &str = "HOOKWASM_PYTHONPATH";
/// GitProxy's UI in the tests' configs.
const UI_URL: &str = "https://proxy.example.com";

/// A real SMTP server on 127.0.0.1 (tests/e2e/smtp_sink.py, on aiosmtpd), killed when dropped.
struct SmtpSink {
    child: Child,
    port: u16,
    folder: tempfile::TempDir,
}

/// One message the sink received.
#[derive(Debug)]
struct Mail {
    /// The SMTP envelope and the decoded parts: `{"from", "to", "text", "html"}`.
    envelope: Value,
    /// The message as received, CRLF line ends included.
    raw: String,
}

impl Mail {
    /// The value of the first header called `name`, unfolded.
    fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next()?;
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            match (&mut found, line.starts_with([' ', '\t'])) {
                // Unfolding removes the line break only, keeping the whitespace after it.
                (Some(value), true) => value.push_str(line),
                (Some(_), false) => break,
                (None, _) => {
                    if let Some((n, v)) = line.split_once(':')
                        && n.eq_ignore_ascii_case(name)
                    {
                        found = Some(v.trim().to_owned());
                    }
                }
            }
        }
        found
    }
}

impl SmtpSink {
    /// Starts the sink, or fails saying how to install aiosmtpd.
    fn start() -> SmtpSink {
        let pythonpath = python_path();
        let folder = tempfile::tempdir().expect("a temporary folder");
        let script = workspace_root().join("tests/e2e/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(folder.path())
            .env("PYTHONPATH", &pythonpath)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot run python3");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the sink's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP sink did not start: {line:?}"));
        SmtpSink {
            child,
            port,
            folder,
        }
    }

    /// `smtp://127.0.0.1:PORT`.
    fn relay(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in order.
    fn received(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.folder.path())
            .expect("the sink's folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|eml| Mail {
                envelope: serde_json::from_str(
                    &std::fs::read_to_string(eml.with_extension("json")).expect("envelope"),
                )
                .expect("envelope JSON"),
                raw: std::fs::read_to_string(eml).expect("message"),
            })
            .collect()
    }

    /// Waits until `n` messages arrived.
    fn wait_for(&self, n: usize) -> Vec<Mail> {
        let start = Instant::now();
        loop {
            let mails = self.received();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                start.elapsed() < POLL_DEADLINE,
                "the SMTP sink received {} of {n} messages within {POLL_DEADLINE:?}",
                mails.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where aiosmtpd is: `HOOKWASM_PYTHONPATH` (set by `cargo xtask test`), else `target/pip`.
/// Fails, never skips, when it is not there.
fn python_path() -> PathBuf {
    let path = std::env::var_os(PYTHONPATH_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/pip"));
    let found = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", &path)
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "Python's aiosmtpd is not in {} (the e-mail tests' real SMTP server): run `cargo xtask test`, which installs it there",
        path.display()
    );
    path
}

/// `plugins/notify.wasm`.
fn notify_module() -> String {
    let path = workspace_root().join("plugins/notify.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build-guests` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A `capabilities.smtp` grant of `relay` to send from notify@example.com to example.com.
fn smtp_grant(relay: &str) -> Value {
    json!({
        "relay": relay,
        "tls": "none",
        "from": ["notify@example.com"],
        "allowedRecipients": ["*@example.com"],
    })
}

/// A notify entry that mails `to`, one attempt per event (a refusal is final, not retried).
fn mailer(name: &str, to: &str, email_relay: Option<&str>, grant: Option<Value>) -> Value {
    let mut entry = json!({
        "name": name,
        "module": notify_module(),
        "config": { "uiUrl": UI_URL, "email": { "to": [to] } },
        "limits": { "timeoutMs": 10_000 },
        "retry": { "maxAttempts": 1 },
    });
    if let Some(relay) = email_relay {
        entry["config"]["email"]["relay"] = json!(relay);
    }
    if let Some(grant) = grant {
        entry["capabilities"] = json!({ "smtp": grant });
    }
    entry
}

/// A `push.pending-review` event whose commit message, pusher and branch try to break out of
/// their place in each format.
fn pending_review(id: &str) -> Value {
    let mut event = proxy_action(id, "push.pending-review");
    event["data"]["user"]["username"] = json!("grace <!channel>");
    event["data"]["branch"] = json!("refs/heads/feature\r\nBcc: victim@evil.example.org");
    event["data"]["commits"] = json!([
        {
            "id": "0123456789abcdef0123456789abcdef01234567",
            "message": "Fix the *widget* <script>alert(1)</script>\n\nLonger body.",
            "author": "Ada Lovelace",
            "authorEmail": "ada@example.com",
        },
        {
            "id": "89abcdef0123456789abcdef0123456789abcdef",
            "message": "Add tests",
            "author": "Grace Hopper",
            "authorEmail": "grace@example.com",
        },
    ]);
    event
}

#[test]
fn notify_posts_slack_and_teams_cards_and_mails_reviewers_through_a_real_smtp_server() {
    let sink = SmtpSink::start();
    let receiver = Receiver::answering(200);
    let work = Workdir::new();
    let entry = json!({
        "name": "notify",
        "module": notify_module(),
        "config": {
            "uiUrl": UI_URL,
            "chat": [
                { "format": "slack", "url": receiver.url("/slack/T000/B000/secret") },
                { "format": "teams", "url": receiver.url("/teams/workflow?sig=secret") },
            ],
            "email": { "to": ["reviewers@example.com"] },
        },
        "limits": { "timeoutMs": 10_000 },
        "capabilities": {
            "allowedHosts": [receiver.origin()],
            "smtp": smtp_grant(&sink.relay()),
        },
    });
    let host = Host::serve(&work.config(&[entry]));

    // Not in the plugin's `events` (default: push.pending-review only): nothing is sent.
    assert_eq!(
        host.post_events(&proxy_action("n-0", "push.completed"))
            .status,
        202
    );
    let event = pending_review("n-1");
    assert_eq!(host.post_events(&event).status, 202);
    host.wait_until("both events handled", || {
        host.invocations("notify", "ok") == 2
    });

    let requests = receiver.wait_for_answered(2);
    assert_eq!(requests.len(), 2, "only the pending-review event notifies");
    let link = format!("{UI_URL}/dashboard/push/action-n-1");

    let slack = requests
        .iter()
        .find(|r| r.path.starts_with("/slack/"))
        .expect("a Slack request");
    assert_eq!(slack.header("content-type"), Some("application/json"));
    let slack: Value = serde_json::from_slice(&slack.body).expect("Slack JSON");
    let blocks = slack["blocks"].as_array().expect("Block Kit `blocks`");
    let types: Vec<&str> = blocks.iter().filter_map(|b| b["type"].as_str()).collect();
    assert_eq!(
        types,
        ["header", "section", "section", "section", "actions"]
    );
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    let header = blocks[0]["text"]["text"].as_str().expect("header text");
    assert!(
        header.starts_with("acme/widgets: push to feature"),
        "{header}"
    );
    assert_eq!(
        blocks[1]["text"]["text"],
        "grace &lt;!channel&gt; pushed 2 commit(s) to feature\r\nBcc: victim@evil.example.org of acme/widgets."
    );
    let commits = blocks[3]["text"]["text"].as_str().expect("commits");
    assert!(
        commits.contains(
            "• `0123456` Fix the *widget* &lt;script&gt;alert(1)&lt;/script&gt; — Ada Lovelace"
        ),
        "{commits}"
    );
    assert!(
        commits.contains("• `89abcde` Add tests — Grace Hopper"),
        "{commits}"
    );
    assert_eq!(blocks[4]["elements"][0]["type"], "button");
    assert_eq!(blocks[4]["elements"][0]["url"], link.as_str());

    let teams = requests
        .iter()
        .find(|r| r.path.starts_with("/teams/"))
        .expect("a Teams request");
    let teams: Value = serde_json::from_slice(&teams.body).expect("Teams JSON");
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    let body = card["body"].as_array().expect("card body");
    assert_eq!(body[0]["type"], "TextBlock");
    assert!(
        body[1]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("grace \\<!channel\\> pushed 2 commit(s)")),
        "{card}"
    );
    assert_eq!(body[2]["type"], "FactSet");
    assert_eq!(body[2]["facts"][0]["value"], "acme/widgets");
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(card["actions"][0]["url"], link.as_str());

    let mails = sink.wait_for(1);
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    // The envelope holds the reviewers only: the branch's `Bcc:` never became a header.
    assert_eq!(mail.envelope["from"], "notify@example.com");
    assert_eq!(mail.envelope["to"], json!(["reviewers@example.com"]));
    let head = mail.raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        !head.to_ascii_lowercase().contains("\r\nbcc:"),
        "{}",
        mail.raw
    );
    assert_eq!(mail.header("From").as_deref(), Some("notify@example.com"));
    assert_eq!(mail.header("To").as_deref(), Some("reviewers@example.com"));
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("acme/widgets: push to feature  Bcc: victim@evil.example.org is waiting for review")
    );
    assert!(
        mail.header("Content-Type")
            .is_some_and(|t| t.starts_with("multipart/alternative")),
        "{}",
        mail.raw
    );
    let text = mail.envelope["text"]
        .as_str()
        .expect("a text part")
        .replace("\r\n", "\n");
    assert!(
        text.starts_with("grace <!channel> pushed 2 commit(s) to feature"),
        "{text}"
    );
    assert!(
        text.contains("- 0123456 Fix the *widget* <script>alert(1)</script> (Ada Lovelace)\n- 89abcde Add tests (Grace Hopper)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Open in GitProxy: {link}")),
        "{text}"
    );
    let html = mail.envelope["html"].as_str().expect("an HTML part");
    assert!(
        html.contains("Fix the *widget* &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains(&format!("<a href=\"{link}\">")), "{html}");
    let sent = host.log().with_message("e-mail sent");
    assert_eq!(sent.len(), 1, "{}", host.log());
    assert_eq!(sent[0].field("handler"), Some("notify"));
}

#[test]
fn smtp_is_refused_without_the_grant_for_another_relay_and_outside_the_recipients() {
    let sink = SmtpSink::start();
    let elsewhere = format!("smtp://127.0.0.1:{}", closed_port());
    let work = Workdir::new();
    let host = Host::serve(&work.config(&[
        mailer("no-grant", "reviewers@example.com", None, None),
        mailer(
            "other-relay",
            "reviewers@example.com",
            Some(&elsewhere),
            Some(smtp_grant(&sink.relay())),
        ),
        mailer(
            "outsider",
            "someone@elsewhere.example.org",
            None,
            Some(smtp_grant(&sink.relay())),
        ),
    ]));
    assert_eq!(host.post_events(&pending_review("r-1")).status, 202);
    for handler in ["no-grant", "other-relay", "outsider"] {
        host.wait_until(&format!("{handler} failed"), || {
            host.invocations(handler, "error") == 1
        });
    }
    let log = host.log();
    let refusal = |handler: &str| -> String {
        let failures = log.failures_of(handler);
        assert_eq!(failures.len(), 1, "{log}");
        failures[0].message().expect("a message").to_owned()
    };
    assert!(
        refusal("no-grant").ends_with(
            "email: e-mail not sent: smtp is not granted to handler no-grant: add capabilities.smtp to its entry"
        ),
        "{log}"
    );
    assert!(
        refusal("other-relay").ends_with(&format!(
            "email: e-mail not sent: relay {elsewhere} is not granted to handler other-relay: its capabilities.smtp.relay is {}",
            sink.relay()
        )),
        "{log}"
    );
    assert!(
        refusal("outsider").ends_with(
            "email: e-mail not sent: recipient someone@elsewhere.example.org is not allowed by capabilities.smtp.allowedRecipients"
        ),
        "{log}"
    );
    assert_eq!(log.with_message("smtp send refused: ").len(), 3, "{log}");
    // Give a wrongly sent message time to land before saying none did.
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.received().is_empty(), "nothing reaches the relay");
}

#[test]
fn a_relay_that_never_answers_ends_with_the_deadline_and_the_host_carries_on() {
    // A "relay" that accepts connections and never says a word: the send must give up within
    // the event's deadline, as the handler's error, and the next event must still be handled.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let relay = format!("smtp://{}", silent.local_addr().expect("its address"));
    silent.set_nonblocking(true).expect("non-blocking accept");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut open = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((stream, _)) = silent.accept() {
                    open.push(stream);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            open.len()
        })
    };
    let work = Workdir::new();
    let mut entry = mailer(
        "silent",
        "reviewers@example.com",
        None,
        Some(smtp_grant(&relay)),
    );
    entry["limits"] = json!({ "timeoutMs": 800 });
    let host = Host::serve(&work.config(&[entry]));
    let started = Instant::now();
    assert_eq!(host.post_events(&pending_review("s-1")).status, 202);
    assert_eq!(host.post_events(&pending_review("s-2")).status, 202);
    host.wait_until("both sends gave up", || {
        host.invocations("silent", "error") == 2
    });
    let elapsed = started.elapsed();
    // Two sends of at most 800 ms each, one after the other (an observer's events are in order).
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    let log = host.log();
    for failure in log.failures_of("silent") {
        let message = failure.message().expect("a message");
        assert!(
            message.contains(&format!(
                "{relay} did not take the message within the event's deadline"
            )),
            "{log}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        held.join().expect("the silent relay"),
        2,
        "one connection per send"
    );
}

#[test]
fn smtp_grant_mistakes_are_reported_by_check_with_the_entry_and_field() {
    let work = Workdir::new();
    let mut bad_relay = mailer("bad-relay", "r@example.com", None, None);
    bad_relay["capabilities"] = json!({ "smtp": smtp_grant("smtps://mail.example.com") });
    let mut no_recipients = mailer("no-recipients", "r@example.com", None, None);
    let mut grant = smtp_grant("smtp://mail.example.com");
    grant["allowedRecipients"] = json!([]);
    no_recipients["capabilities"] = json!({ "smtp": grant });
    let mut unknown = mailer("unknown-field", "r@example.com", None, None);
    let mut grant = smtp_grant("smtp://mail.example.com");
    grant["port"] = json!(25);
    unknown["capabilities"] = json!({ "smtp": grant });
    let config = work.config(&[bad_relay, no_recipients, unknown]);
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    run.assert_code(2);
    for expected in [
        "eventHandlers[0] (bad-relay): `capabilities.smtp.relay` \"smtps://mail.example.com\" does not start with smtp://",
        "eventHandlers[1] (no-recipients): `capabilities.smtp.allowedRecipients` is empty",
        "eventHandlers[2] (unknown-field): unknown field `port`",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{run}");
    }
}

/// `tests/guests/wit-0-1.wasm`, built from the frozen `wit/0.1.0/`.
fn wit_0_1_module() -> String {
    let path: PathBuf = workspace_root().join("tests/guests/wit-0-1.wasm");
    assert!(
        Path::new(&path).is_file(),
        "{} is missing: run `cargo xtask build-guests` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

#[test]
fn a_component_built_against_wit_0_1_still_loads_and_runs() {
    let work = Workdir::new();
    let gate = json!({
        "name": "old-gate",
        "module": wit_0_1_module(),
        "mode": "gate",
        "config": { "kept": "as written" },
    });
    let host = Host::serve(&work.config(std::slice::from_ref(&gate)));
    let response = host.post_events(&proxy_action("old-1", "push.started"));
    assert_eq!(response.status, 200, "a gate ran: 200; {response}");
    let decision = response.json();
    assert_eq!(decision["verdict"], "allow", "{decision}");
    assert_eq!(decision["gates"][0]["handler"], "old-gate", "{decision}");
    assert_eq!(decision["gates"][0]["status"], "ok", "{decision}");
    let annotations: Vec<(String, String)> = decision["annotations"]
        .as_array()
        .expect("`annotations` is a list")
        .iter()
        .filter(|a| a["handler"] == "old-gate")
        .map(|a| {
            (
                a["key"].as_str().unwrap_or_default().to_owned(),
                a["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("wit", "0.1.0"),
        ("seen", "old-1"),
        ("payload", "proxy-action"),
        ("config", "{\"kept\":\"as written\"}"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(annotations, expected, "{decision}");
    host.wait_until("its 0.1.0 `log` call reached the host's log", || {
        !host.log().with_message("wit-0-1 saw old-1").is_empty()
    });

    // Its `init` export runs too: a config it refuses refuses the load.
    let mut refusing = gate;
    refusing["config"] = json!({ "mode": "refuse" });
    let config = work.config(&[refusing]);
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    assert!(
        run.stderr.contains("wit-0-1: init refused, as asked"),
        "{run}"
    );
}
