//! Golden tests for config mistakes: every folder under `tests/config-errors/` holds one
//! `proxy.config.json` with one mistake and the `expected.txt` that `hookwasm check` must print
//! for it, byte for byte (exit code, stdout, stderr). A message is part of the interface: a
//! change to one shows up here as a diff, not as a `contains` that still passes.
//!
//! After changing a message on purpose, rewrite the expectations with
//! `BLESS=1 cargo test -p hookwasm --test e2e config_golden` and review the diff.

use std::path::{Path, PathBuf};

use crate::support::{Guest, Hookwasm, workspace_root};

/// The folder of cases.
fn cases_dir() -> PathBuf {
    workspace_root().join("tests/config-errors")
}

/// What `check` printed for one case, with the machine-specific parts replaced: the case's own
/// folder becomes `$CASE`, and a loaded module's digest `<digest>`.
fn observed(case: &Path) -> String {
    let config = case.join("proxy.config.json");
    let config = config.to_str().expect("a UTF-8 path");
    // No log lines (they carry times), and no ambient event-types or auth file.
    let run = Hookwasm::new()
        .args(&["check", "--config", config])
        .envs(&[
            ("RUST_LOG", "off"),
            ("HOOKWASM_EVENT_TYPES", ""),
            ("HOOKWASM_AUTH_FILE", ""),
        ])
        .run();
    let text = format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        run.code.map_or("signal".to_owned(), |c| c.to_string()),
        run.stdout,
        run.stderr
    );
    let text = text.replace(case.to_str().expect("a UTF-8 path"), "$CASE");
    mask_digests(&text)
}

/// Replaces the 12 hex digits after each `sha256:` with `<digest>`: they change with every
/// rebuild of a guest.
fn mask_digests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sha256:") {
        let (before, after) = rest.split_at(at + "sha256:".len());
        out.push_str(before);
        let hex = after.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex >= 12 {
            out.push_str("<digest>");
            rest = &after[hex..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn every_config_mistake_prints_exactly_its_expected_message() {
    // Cases that load a healthy handler beside the mistake use this guest.
    Guest::ConsoleLogger.path();
    let bless = std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/config-errors exists")
        .map(|entry| entry.expect("a readable folder").path())
        .filter(|path| path.join("proxy.config.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().expect("a name").to_string_lossy();
        let got = observed(case);
        let expected_file = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_file, &got).expect("expected.txt is writable");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_else(|_| {
            panic!("{name}: no expected.txt; run with BLESS=1 to write it, then review it")
        });
        if got != expected {
            failed.push(format!(
                "--- {name}: expected\n{expected}--- {name}: got\n{got}"
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases print something else (BLESS=1 rewrites expected.txt):\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
