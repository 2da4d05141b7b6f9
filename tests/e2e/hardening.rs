//! Hardening (issue 17): a handler cannot forge the host's log, and every failure is reported
//! as one line naming its cause.

use serde_json::json;

use crate::support::{Guest, Workdir, chaos, custom, hookwasm_with_env};

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
    let run = hookwasm_with_env(
        &[
            "call",
            &Guest::Chaos.module(),
            "--event",
            &event.to_string_lossy(),
            "--handler-config",
            &config,
        ],
        &text_log,
    );
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
    let run = hookwasm_with_env(&["check", "--config", &config.to_string_lossy()], &text_log);
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
        let run = hookwasm_with_env(
            &[
                "call",
                &Guest::Chaos.module(),
                "--event",
                &event.to_string_lossy(),
                "--handler-config",
                &config,
            ],
            &[],
        );
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
