//! Hardening (issue 17): a handler cannot forge the host's log, and every failure is reported
//! as one line naming its cause.

use serde_json::json;

use crate::support::{Guest, Hookwasm, Workdir, chaos, custom};

/// Guest text made to look like the host's own lines: a newline then a fake host line, a
/// carriage return, a NUL and a terminal escape sequence.
const FORGERY: &str =
    "harmless\nFORGED INFO hookwasm: listening on http://0.0.0.0:1\rFORGED\0 \u{1b}[2J";

/// Lines of `text` that start with the forged prefix: each is a line the guest wrote as if it
/// were the host.
fn forged_lines(text: &str) -> usize {
    text.split(['\n', '\r'])
        .filter(|line| line.trim_start().starts_with("FORGED"))
        .count()
}

#[test]
fn a_handler_cannot_forge_the_hosts_log() {
    // The guest writes FORGERY to stdout, stderr and `log`, returns it as its error, and (in a
    // second handler) as its `init` error. In the plain-text log, none of it may start a line or
    // carry a raw control character; it shows as visible escapes instead.
    let work = Workdir::new();
    let event = work.write("event.json", custom("forge-1").to_string());
    let config = json!({ "behavior": "forge", "reason": FORGERY }).to_string();
    let text_log = [("HOOKWASM_LOG_FORMAT", "text")];
    let run = Hookwasm::new()
        .args(&[
            "call",
            &Guest::Chaos.module(),
            "--event",
            &event.to_string_lossy(),
            "--handler-config",
            &config,
        ])
        .envs(&text_log)
        .run();
    assert_eq!(run.code, Some(1), "the handler failed\n{run}");
    let report = run.report();
    assert_eq!(report["status"], "error", "{run}");
    let escaped =
        "harmless\\nFORGED INFO hookwasm: listening on http://0.0.0.0:1\\rFORGED\\0 \\u{1b}[2J";
    assert_eq!(
        report["reason"],
        format!("error: {escaped}"),
        "the reported cause is escaped\n{run}"
    );
    // Output is logged line by line (each tagged with the handler); within a line, control
    // characters show as escapes.
    let shown = run.stderr.matches("\\rFORGED\\0 \\u{1b}[2J").count();
    let forged = forged_lines(&run.stderr);
    let raw_controls = run
        .stderr
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .count();
    println!(
        "forge via call: {shown} escaped copies in the log, {forged} forged lines, \
         {raw_controls} raw control characters"
    );
    assert_eq!(forged, 0, "a guest line passed for the host's\n{run}");
    assert_eq!(
        raw_controls, 0,
        "raw control characters reached the log\n{run}"
    );
    assert!(
        shown >= 3,
        "stdout, stderr and log each shown escaped\n{run}"
    );

    // `init` errors are printed by `check` (and `serve`, reload) as the host's own error text.
    let mut entry = chaos("init-forger", "init-forge");
    entry["config"]["reason"] = json!(FORGERY);
    let config = work.config(&[entry]);
    let run = Hookwasm::new()
        .args(&["check", "--config", &config.to_string_lossy()])
        .envs(&text_log)
        .run();
    assert_eq!(run.code, Some(2), "init refused the load\n{run}");
    let forged = forged_lines(&run.stderr);
    println!("forge via init: {forged} forged lines");
    assert_eq!(forged, 0, "an init error forged a line\n{run}");
    assert!(run.stderr.contains(escaped), "{run}");
}

#[test]
fn exit_is_reported_as_one_line_with_its_status() {
    // `std::process::exit(n)` inside `on-event` used to come back as wasmtime's multi-line wasm
    // backtrace; now it is one line naming the status.
    let work = Workdir::new();
    let event = work.write("event.json", custom("exit-1").to_string());
    for status in [1, 0] {
        let config = json!({ "behavior": "exit", "status": status }).to_string();
        let run = Hookwasm::new()
            .args(&[
                "call",
                &Guest::Chaos.module(),
                "--event",
                &event.to_string_lossy(),
                "--handler-config",
                &config,
            ])
            .envs(&[])
            .run();
        let report = run.report();
        let reason = report["reason"].as_str().unwrap_or_default();
        println!(
            "exit({status}): status {}, cause {} bytes: {reason}",
            report["status"],
            reason.len()
        );
        assert_eq!(report["status"], "trap", "{run}");
        assert_eq!(
            reason,
            format!("trap: exited with status {status} instead of answering"),
            "{run}"
        );
    }
}

/// A test's config with the outbox at `outbox` and one observer, so events make deliveries.
fn config_with_outbox(work: &Workdir, outbox: &std::path::Path) -> std::path::PathBuf {
    let config = json!({
        "eventDelivery": { "path": outbox },
        "eventHandlers": [chaos("watcher", "ok")],
    });
    work.write("proxy.config.json", config.to_string())
}

#[test]
fn a_zero_length_outbox_is_refused_with_one_line() {
    // An empty `outbox.db` (a truncated copy, a failed restore) used to start silently as a new,
    // empty outbox: every event it should have held was gone without a word.
    let work = Workdir::new();
    let outbox = work.write("outbox.db", "");
    let config = config_with_outbox(&work, &outbox);
    let run = Hookwasm::new()
        .args(&[
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(&[])
        .run();
    assert_eq!(run.code, Some(2), "{run}");
    let error = run.error();
    println!("zero-length outbox: {}", error.trim());
    assert!(
        error.contains("is an empty file (0 bytes), not an outbox"),
        "{run}"
    );
    assert_eq!(error.trim().lines().count(), 1, "one line\n{run}");
    assert_eq!(
        std::fs::metadata(&outbox).map(|m| m.len()).ok(),
        Some(0),
        "the file is left as it was"
    );
}

/// A small tmpfs the test can fill, unmounted on drop; `None` where mounting is not allowed
/// (not root, or a container without `CAP_SYS_ADMIN`).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: std::path::PathBuf) -> Option<SmallDisk> {
        std::fs::create_dir_all(&at).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk(at))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros into `path` until the disk refuses; returns the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("the filler can be created");
    let chunk = vec![0_u8; 16 << 10];
    let mut written = 0;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.sync_all();
    written
}

#[test]
fn readiness_follows_the_outbox_through_a_full_disk_and_back() {
    // `/healthz` says the process lives; `/readyz` says it can take events now. On a full disk
    // the outbox cannot write: liveness stays 200, readiness turns 503 with the reason, and once
    // space is freed readiness comes back by itself, with no restart, and events are accepted.
    let work = Workdir::new();
    let Some(disk) = SmallDisk::mount(work.path().join("disk")) else {
        println!("SKIPPED the disk-full part: cannot mount a tmpfs here (needs root)");
        return;
    };
    let config = config_with_outbox(&work, &disk.0.join("outbox.db"));
    let host = crate::support::Host::serve(&config);
    assert_eq!(host.get("/healthz").status, 200);
    let ready = host.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");
    assert_eq!(ready.json()["status"], "ready");

    let filler = disk.0.join("filler");
    let filled = fill(&filler);
    // The WAL may still have room from earlier writes: write events until the disk refuses.
    let mut accepted = 0;
    for i in 0..2_000 {
        let event = custom(&format!("full-{i}"));
        let status = host.post_events(&event).status;
        if status != 202 && status != 200 {
            break;
        }
        accepted += 1;
    }
    let not_ready = host.get("/readyz");
    println!(
        "disk full after {filled} filler bytes and {accepted} events: /readyz {}, /healthz {}",
        not_ready.status,
        host.get("/healthz").status
    );
    assert_eq!(not_ready.status, 503, "{not_ready}");
    assert!(
        not_ready.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("the outbox cannot take a write"),
        "{not_ready}"
    );
    assert_eq!(
        host.get("/healthz").status,
        200,
        "liveness is not readiness"
    );

    std::fs::remove_file(&filler).expect("the filler can be removed");
    let freed = std::time::Instant::now();
    let mut back = None;
    while freed.elapsed() < std::time::Duration::from_secs(10) {
        if host.get("/readyz").status == 200 {
            back = Some(freed.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let back = back.expect("ready again within 10 s of space being freed");
    let after = host.post_events(&custom("after-full"));
    println!(
        "ready again {} ms after space was freed; an event then got {}",
        back.as_millis(),
        after.status
    );
    assert!(after.status == 202 || after.status == 200, "{after}");
    drop(host);
    drop(disk);
}

#[test]
fn the_wal_is_folded_into_the_outbox_file_at_exit() {
    // After SIGTERM the database file alone holds everything: the WAL is checkpointed and
    // truncated, so copying `outbox.db` is a complete backup.
    let work = Workdir::new();
    let outbox = work.path().join("state/outbox.db");
    let config = config_with_outbox(&work, &outbox);
    let host = crate::support::Host::serve(&config);
    for i in 0..50 {
        let status = host.post_events(&custom(&format!("wal-{i}"))).status;
        assert!(status == 202 || status == 200, "event {i}: {status}");
    }
    let wal = work.path().join("state/outbox.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let while_running = size(&wal);
    let stopped = host.terminate();
    assert!(stopped.status.success(), "{:?}", stopped.log);
    let after = size(&wal);
    println!(
        "WAL while serving: {while_running} bytes; after SIGTERM: {after} bytes; outbox.db: {} bytes",
        size(&outbox)
    );
    assert_eq!(after, 0, "the WAL is empty once the host has stopped");
}

/// `GET path` on a new connection with a short deadline: the status and how long it took, or
/// `None` when no answer came within `deadline`.
fn timed_get(
    addr: std::net::SocketAddr,
    path: &str,
    deadline: std::time::Duration,
) -> Option<(u16, std::time::Duration)> {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect_timeout(&addr, deadline).ok()?;
    stream.set_read_timeout(Some(deadline)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let status = String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, started.elapsed()))
}

/// The median and the largest of `samples`, in milliseconds.
fn p50_max(samples: &mut [std::time::Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    (
        ms(samples[samples.len() / 2]),
        ms(*samples.last().unwrap_or(&std::time::Duration::ZERO)),
    )
}

/// Reads from `stream` until the server closes it (or `limit` passes); how long that took.
fn time_to_close(
    stream: &mut std::net::TcpStream,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    use std::io::Read;
    let started = std::time::Instant::now();
    stream.set_read_timeout(Some(limit)).ok()?;
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(_) => Some(started.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(started.elapsed()),
        Err(_) => None,
    }
}

#[test]
fn silent_connections_cannot_lock_producers_out() {
    // 300 silent TCP connections against a host whose file-descriptor limit is 160 used to leave
    // it unable to accept anything: /healthz and ingest timed out with nothing logged. Now open
    // connections are bounded (64 here), the longest-idle one is closed to make room, and slow
    // heads and bodies time out (2 s here).
    const SILENT: usize = 300;
    let work = Workdir::new();
    let config = work.config(&[chaos("watcher", "ok")]);
    let host = Hookwasm::new()
        .args(&[])
        .envs(&[
            ("HOOKWASM_MAX_CONNECTIONS", "64"),
            ("HOOKWASM_CLIENT_TIMEOUT_SECS", "2"),
        ])
        .serve(&config);
    let limited = std::process::Command::new("prlimit")
        .args(["--nofile=160:160", "--pid", &host.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let deadline = std::time::Duration::from_secs(5);
    let mut alone: Vec<_> = (0..20)
        .map(|_| {
            timed_get(host.addr(), "/healthz", deadline)
                .expect("/healthz answers")
                .1
        })
        .collect();

    // A host that stopped accepting fills its backlog and then connects time out: stop trying
    // after a few, so the test ends in bounded time either way.
    let mut silent = Vec::new();
    let mut refused = 0;
    while silent.len() < SILENT && refused < 5 {
        match std::net::TcpStream::connect_timeout(&host.addr(), std::time::Duration::from_secs(1))
        {
            Ok(stream) => silent.push(stream),
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..20 {
        match timed_get(host.addr(), "/healthz", deadline) {
            Some((200, took)) => held.push(took),
            _ => failed += 1,
        }
    }
    let event = host.post_events(&custom("through-the-crowd"));
    let (alone_p50, alone_max) = p50_max(&mut alone);
    let (held_p50, held_max) = if held.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        p50_max(&mut held)
    };
    println!(
        "{} silent connections opened (bound 64, host fd limit {}): /healthz p50 {held_p50:.1} ms, \
         max {held_max:.1} ms, {failed} of 20 failed; alone p50 {alone_p50:.1} ms, max \
         {alone_max:.1} ms; an event got {}",
        silent.len(),
        if limited {
            "160"
        } else {
            "unchanged (no prlimit)"
        },
        event.status
    );
    assert_eq!(
        failed, 0,
        "every health check answered while connections were held"
    );
    assert!(
        held_max < 1_000.0,
        "health checks stay fast: max {held_max} ms"
    );
    assert!(event.status == 202 || event.status == 200, "{event}");
    drop(silent);

    // A head that never ends, and a body that never comes, are cut after the client timeout.
    use std::io::Write;
    let mut slow_head = std::net::TcpStream::connect(host.addr()).expect("connects");
    slow_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("writes");
    let head_cut = time_to_close(&mut slow_head, std::time::Duration::from_secs(10));
    let mut slow_body = std::net::TcpStream::connect(host.addr()).expect("connects");
    slow_body
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"id\":",
        )
        .expect("writes");
    let body_cut = time_to_close(&mut slow_body, std::time::Duration::from_secs(10));
    println!("slow head closed after {head_cut:?}, slow body after {body_cut:?} (timeout 2 s)");
    assert!(
        head_cut.is_some_and(|t| t < std::time::Duration::from_secs(5)),
        "a slow head is cut: {head_cut:?}"
    );
    assert!(
        body_cut.is_some_and(|t| t < std::time::Duration::from_secs(5)),
        "a slow body is cut: {body_cut:?}"
    );
}

#[test]
fn config_mistakes_that_would_disable_a_gate_are_caught() {
    // Each of these used to pass `check` and start `serve` with the gate never called, so every
    // push went through: a type that does not exist, a ref name that is not a full one. Now a
    // gate that can never be called is an error, an observer that can never run a warning, and
    // serde's raw messages name the field and what to write.
    let work = Workdir::new();
    let mut wrong_type = crate::support::chaos_gate("wrong-type", "deny");
    wrong_type["events"] = json!(["git.branch.update"]);
    let mut short_ref = crate::support::chaos_gate("short-ref", "deny");
    short_ref["events"] = json!(["git.branch.*"]);
    short_ref["refs"] = json!(["main"]);
    let mut deaf = chaos("deaf-observer", "ok");
    deaf["events"] = json!(["push.complete"]);
    let mut bad_limits = chaos("bad-limits", "ok");
    bad_limits["limits"] = json!(5);
    let mut nested = chaos("misplaced", "ok");
    nested["timeoutMs"] = json!(100);
    let config = work.config(&[wrong_type, short_ref, deaf, bad_limits, nested]);
    let run = crate::support::hookwasm(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(run.code, Some(2), "{run}");
    let error = run.error();
    println!("check said:\n{}\n{}", run.stdout.trim(), error.trim());
    for expected in [
        r#"eventHandlers[0] (wrong-type): this gate can never be called: `events` ["git.branch.update"] match no event type that can arrive (did you mean "git.branch.updated"?)"#,
        r#"eventHandlers[1] (short-ref): this gate can never be called: `refs` ["main"] can never match: events carry full ref names; write "refs/heads/main""#,
        r#"eventHandlers[3] (bad-limits): `limits` is integer `5`; write an object such as {"fuel": 50000000, "timeoutMs": 1000, "memoryMiB": 64}"#,
        "eventHandlers[4] (misplaced): unknown field `timeoutMs`; it belongs in `limits`: `limits.timeoutMs`",
    ] {
        assert!(error.contains(expected), "missing: {expected}\n{run}");
    }
    assert!(
        run.stdout.contains(
            r#"warning   eventHandlers[2] (deaf-observer): this handler can never run: `events` ["push.complete"] match no event type that can arrive (did you mean "push.completed"?)"#
        ),
        "{run}"
    );

    // A misspelled top-level key leaves hookwasm with no handlers: `check` says so twice.
    let typo = work.write(
        "typo.config.json",
        json!({ "proxyUrl": "https://github.com", "eventHandler": [chaos("lost", "ok")] })
            .to_string(),
    );
    let run = crate::support::hookwasm(&["check", "--config", &typo.to_string_lossy()]);
    println!("{}", run.stdout.trim());
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("top-level key `eventHandler` is not one of hookwasm's (GitProxy may read it); did you mean `eventHandlers`?"),
        "{run}"
    );
    assert!(
        run.stdout.contains("warning   no enabled event handlers"),
        "{run}"
    );
    assert!(
        !run.stdout.contains("proxyUrl"),
        "GitProxy's keys are left alone\n{run}"
    );
}

#[test]
fn ids_no_delivery_can_carry_are_refused_at_the_door() {
    // Ids with non-ASCII or control characters were acknowledged and then could never be
    // delivered by the webhook plugin (raw bytes fail its signature check); ids of any length
    // were copied into every log line; `.` cannot be a Standard Webhooks `webhook-id`. Now they
    // are refused with the rule, and nothing is stored.
    let work = Workdir::new();
    let config = work.config(&[chaos("watcher", "ok")]);
    let host = crate::support::Host::serve(&config);
    let long = "x".repeat(300);
    let mut refused = 0;
    for id in ["évènement", "a\u{1}b", "with space", "evt.1", long.as_str()] {
        let answer = host.post_events(&custom(id));
        let shown: String = id.chars().take(20).collect();
        println!(
            "id {shown:?}: {} {}",
            answer.status,
            answer.body.chars().take(200).collect::<String>()
        );
        assert_eq!(answer.status, 400, "{id:?}: {answer}");
        assert!(answer.body.contains("`id`"), "{answer}");
        refused += 1;
    }
    let fine = host.post_events(&custom("evt-1_2:3/push:gate"));
    assert_eq!(fine.status, 202, "{fine}");
    let queued = host.handler("watcher")["queueDepth"].clone();
    println!("{refused} ids refused; a valid one accepted; watcher queue {queued}");
}

#[test]
fn a_component_built_against_an_unknown_wit_version_is_refused() {
    // The real chaos component with its `hookwasm:handler` imports renamed to 0.2.1, a version
    // that does not exist: wasmtime binds it to 0.2.0, so it used to load and run. The rule is
    // now exact: only the versions the host links (0.1.0, 0.2.0) load.
    let work = Workdir::new();
    let original = std::fs::read(Guest::Chaos.path()).expect("chaos.wasm is built");
    let patched = String::from_utf8_lossy(&original).contains("hookwasm:handler/host@0.2.0");
    assert!(patched, "chaos.wasm imports hookwasm:handler/host@0.2.0");
    let mut bytes = original.clone();
    for (from, to) in [
        (
            &b"hookwasm:handler/host@0.2.0"[..],
            &b"hookwasm:handler/host@0.2.1"[..],
        ),
        (
            &b"hookwasm:handler/types@0.2.0"[..],
            &b"hookwasm:handler/types@0.2.1"[..],
        ),
    ] {
        let mut at = 0;
        while let Some(found) = bytes[at..].windows(from.len()).position(|w| w == from) {
            bytes[at + found..at + found + from.len()].copy_from_slice(to);
            at += found + from.len();
        }
    }
    let later = work.write("later.wasm", &bytes);
    let event = work.write("event.json", custom("wit-1").to_string());
    let run = crate::support::hookwasm(&[
        "call",
        &later.to_string_lossy(),
        "--event",
        &event.to_string_lossy(),
        "--handler-config",
        r#"{"behavior": "ok"}"#,
    ]);
    println!(
        "0.2.1 component: exit {:?}: {}",
        run.code,
        run.stderr.trim()
    );
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.error().contains(
            "it was built against hookwasm:handler@0.2.1, which this host does not know (it runs \
             0.1.0 and 0.2.0)"
        ),
        "{run}"
    );
}
