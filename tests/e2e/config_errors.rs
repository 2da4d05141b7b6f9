//! Every mistake in `eventHandlers` is reported with the entry's index and name and what to do;
//! `check` reports all of them in one run, and `serve` refuses to start rather than run with a
//! handler missing.

use serde_json::json;

use crate::support::{Guest, Run, Workdir, chaos, console_logger, hookwasm};

/// A config with one entry per kind of module problem, and a healthy entry and a disabled one
/// around them. Returns the config's path and, per broken entry, the texts its error line must
/// hold.
fn every_module_problem(work: &Workdir) -> (std::path::PathBuf, Vec<(String, Vec<String>)>) {
    let not_wasm = work.write("notes.wasm", "these are notes, not WebAssembly\n");
    let core = work.write("core.wasm", b"\0asm\x01\0\0\0");
    let wrong_pin = "0".repeat(64);
    let entries = [
        console_logger(),
        json!({ "name": "missing", "module": "plugins/missing.wasm" }),
        json!({
            "name": "pinned",
            "module": Guest::ConsoleLogger.module(),
            "sha256": wrong_pin,
        }),
        json!({ "name": "notes", "module": not_wasm }),
        json!({ "name": "core", "module": core }),
        json!({ "name": "other-world", "module": Guest::OtherWorld.module() }),
        chaos("refuses-init", "init-error"),
        json!({ "name": "switched-off", "module": "nowhere.wasm", "enabled": false }),
    ];
    let config = work.config(&entries);
    let missing = work.path().join("plugins/missing.wasm");
    let expected = vec![
        (
            "eventHandlers[1] (missing): ".to_owned(),
            vec![
                "cannot read module".to_owned(),
                // Relative paths resolve against the config file's folder.
                missing.to_string_lossy().into_owned(),
            ],
        ),
        (
            "eventHandlers[2] (pinned): ".to_owned(),
            vec![
                format!("has sha256 {}", Guest::ConsoleLogger.sha256()),
                format!("pins {wrong_pin}"),
                "rebuild it or update `sha256`".to_owned(),
            ],
        ),
        (
            "eventHandlers[3] (notes): ".to_owned(),
            vec![
                "is not a WebAssembly file".to_owned(),
                "wasm32-wasip2".to_owned(),
            ],
        ),
        (
            "eventHandlers[4] (core): ".to_owned(),
            vec![
                "core WebAssembly module, not a component".to_owned(),
                "--target wasm32-wasip2".to_owned(),
            ],
        ),
        (
            "eventHandlers[5] (other-world): ".to_owned(),
            vec![
                "is not a hookwasm event handler".to_owned(),
                "wasi:cli/run".to_owned(),
                "hookwasm:handler/event-handler@0.2.0".to_owned(),
            ],
        ),
        (
            "eventHandlers[6] (refuses-init): ".to_owned(),
            vec!["init failed".to_owned(), "chaos: init refused".to_owned()],
        ),
    ];
    (config, expected)
}

/// Asserts that `run`'s error has exactly one line per expected entry, each holding its texts.
fn assert_reports(run: &Run, expected: &[(String, Vec<String>)]) {
    let error = run.error();
    let entry_lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("eventHandlers["))
        .collect();
    assert_eq!(
        entry_lines.len(),
        expected.len(),
        "one line per broken entry\n{run}"
    );
    for (prefix, texts) in expected {
        let line = entry_lines
            .iter()
            .find(|l| l.starts_with(prefix.as_str()))
            .unwrap_or_else(|| panic!("no line for {prefix}\n{run}"));
        for text in texts {
            assert!(
                line.contains(text.as_str()),
                "{text:?} missing from {line:?}"
            );
        }
    }
}

#[test]
fn check_reports_every_module_problem_in_one_run() {
    // Missing file, digest mismatch, not wasm, a core module, a component of another world and
    // an `init` that refuses: all six reported at once, the healthy entry listed as ok.
    let work = Workdir::new();
    let (config, expected) = every_module_problem(&work);
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    run.assert_code(2);
    assert!(
        run.error()
            .contains("6 of 7 enabled handlers could not be loaded"),
        "{run}"
    );
    assert_reports(&run, &expected);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("console-logger") && l.contains("observer")),
        "the healthy entry is listed\n{run}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("disabled") && l.contains("switched-off")),
        "the disabled entry is listed, not loaded\n{run}"
    );
}

#[test]
fn serve_refuses_to_start_and_lists_every_broken_handler() {
    let work = Workdir::new();
    let (config, expected) = every_module_problem(&work);
    let run = hookwasm(&[
        "serve",
        "--config",
        &config.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]);
    run.assert_code(2);
    assert_reports(&run, &expected);
    assert!(
        !run.stderr.contains("listening on"),
        "it must not listen with handlers missing\n{run}"
    );
}

#[test]
fn check_names_the_line_and_column_of_malformed_json() {
    let work = Workdir::new();
    let config = work.write(
        "proxy.config.json",
        "{\n  \"eventHandlers\": [\n    \"plugins/console-logger.wasm\",\n  ]\n}\n",
    );
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    run.assert_code(2);
    let error = run.error();
    assert!(
        error.contains("proxy.config.json") && error.contains("not valid JSON"),
        "{run}"
    );
    assert!(error.contains("line 4 column 3"), "{run}");
}

#[test]
fn check_names_the_entry_with_an_unknown_field_and_lists_the_valid_ones() {
    let work = Workdir::new();
    let mut typo = console_logger();
    typo["failurePolicy"] = json!("closed");
    typo["timeoutMs"] = json!(100); // belongs in `limits`
    let config = work.config(&[chaos("fine", "ok"), typo]);
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    run.assert_code(2);
    let error = run.error();
    assert!(
        error.contains("eventHandlers[1] (console-logger): unknown field `timeoutMs`"),
        "{run}"
    );
    assert!(
        error.contains("expected one of") && error.contains("`limits`"),
        "{run}"
    );
    assert!(
        !error.contains("eventHandlers[0]"),
        "entry 0 is fine\n{run}"
    );
}

#[test]
fn check_reports_entry_mistakes_and_module_problems_together() {
    // The contract: `check` reports every mistake at once. An entry with an unknown field must
    // not hide that another entry's module is missing.
    let work = Workdir::new();
    let mut typo = chaos("typo", "ok");
    typo["colour"] = json!("red");
    let config = work.config(&[
        typo,
        json!({ "name": "missing", "module": "plugins/missing.wasm" }),
    ]);
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    run.assert_code(2);
    let error = run.error();
    assert!(
        error.contains("eventHandlers[0] (typo): unknown field `colour`"),
        "{run}"
    );
    assert!(
        error.contains("eventHandlers[1] (missing): cannot read module"),
        "the missing module must be reported in the same run\n{run}"
    );
}

#[test]
fn a_failing_init_says_to_fix_the_handler_config() {
    // "Every mistake is reported with the entry's index/name and what to do": for an `init`
    // that refuses, what to do is to fix the entry's `config`, which the message should say
    // beside the handler's own words.
    let work = Workdir::new();
    let config = work.config(&[chaos("refuses-init", "init-error")]);
    let run = hookwasm(&["check", "--config", &config.to_string_lossy()]);
    run.assert_code(2);
    let error = run.error();
    let line = error
        .lines()
        .find(|l| l.contains("eventHandlers[0] (refuses-init)"))
        .unwrap_or_else(|| panic!("no line for the entry\n{run}"));
    assert!(line.contains("chaos: init refused"), "{line}");
    assert!(
        line.contains("`config`"),
        "the line should point at the entry's `config`: {line}"
    );
}

#[test]
fn check_accepts_a_good_config_and_ignores_other_top_level_keys() {
    let work = Workdir::new();
    let config = json!({
        "proxyUrl": "https://github.com",
        "cookieSecret": "not ours",
        "plugins": ["./plugin.js"],
        "eventHandlers": [Guest::ConsoleLogger.module(), chaos("gatekeeper", "ok")],
    });
    let path = work.write("proxy.config.json", config.to_string());
    let run = hookwasm(&["check", "--config", &path.to_string_lossy()]);
    run.assert_code(0);
    let ok: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("ok")).collect();
    assert_eq!(ok.len(), 2, "{run}");
    assert!(
        ok[0].contains("console-logger") && ok[0].contains(&Guest::ConsoleLogger.sha256()[..12]),
        "a path entry is named after its file and shows its digest\n{run}"
    );
    assert!(ok[1].contains("gatekeeper"), "{run}");
}
