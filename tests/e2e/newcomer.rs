//! A plugin author's first hour, played by a test: `hookwasm new` (Rust, then JavaScript) →
//! build → the generated tests pass → `hookwasm call` allows and denies → `hookwasm serve`
//! loads it → an edit of the source is rebuilt and swapped in by `--watch --build` while events
//! flow, and every event is answered. The wall time of each step is printed (`--nocapture`).
//!
//! To stay affordable, the Rust crate depends on this checkout's `sdk/` (`--sdk-path`) and
//! builds into a target folder shared across runs (its `target` is a link to
//! `target/newcomer`), and the JavaScript package uses the componentize-js that
//! `cargo xtask build-guests` installed into `sdk-js/node_modules`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Hookwasm;
use crate::support::{LOG_HANDLED, Workdir, hookwasm, http, shared_cache_dir, workspace_root};

/// How long a build (and the reload after it) may take on a busy two-core machine.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

/// Runs `step`, printing how long it took.
fn timed<T>(lang: &str, step: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    eprintln!(
        "newcomer ({lang}): {step}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    value
}

/// Runs a program in `dir` to completion; fails the test with its output if it fails.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{program} {}` failed in {}:\n{text}",
        args.join(" "),
        dir.display()
    );
    text
}

/// `hookwasm call MODULE --event EVENT` in the project; returns (exit code, report).
fn call(project: &Path, module: &str, event: &Path) -> (Option<i32>, Value) {
    let module = project.join(module);
    let run = hookwasm(&[
        "call",
        &module.to_string_lossy(),
        "--event",
        &event.to_string_lossy(),
    ]);
    assert!(matches!(run.code, Some(0 | 1)), "{run}");
    (run.code, run.report())
}

/// The project's `event.json` with `ref` set to `ref_name`, written beside it.
fn event_for(project: &Path, ref_name: &str) -> PathBuf {
    let text = std::fs::read_to_string(project.join("event.json")).expect("event.json");
    let mut event: Value = serde_json::from_str(&text).expect("event.json is JSON");
    event["data"]["ref"] = ref_name.into();
    let path = project.join(format!("event-{}.json", ref_name.replace('/', "-")));
    std::fs::write(&path, event.to_string()).expect("write the event");
    path
}

/// Serves the project's `proxy.config.json` with `--watch --build BUILD`, posts the sample
/// event again and again with new ids, edits the source (`from` → `to` in `source`), and
/// checks that the new version answers while every event got an answer from a gate.
fn serve_edit_and_check(
    lang: &str,
    project: &Path,
    build: &str,
    source: &str,
    from: &str,
    to: &str,
) {
    let config = project.join("proxy.config.json");
    let cache = shared_cache_dir();
    let host = timed(lang, "hookwasm serve loads it", || {
        Hookwasm::new()
            .args(&["--watch", "--build", build])
            .envs(&[
                ("RUST_LOG", LOG_HANDLED),
                ("HOOKWASM_CACHE_DIR", &cache.to_string_lossy()),
            ])
            .serve(&config)
    });
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("event.json")).expect("event.json"),
    )
    .expect("JSON");
    let answers: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let (answers, stop, addr) = (answers.clone(), stop.clone(), host.addr());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut event = template.clone();
                event["id"] = format!("flow-{n}").into();
                let response = http(addr, "POST", "/v1/events", Some(&event.to_string()));
                let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
                answers
                    .lock()
                    .expect("answers")
                    .push((response.status, body));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let reason = |answer: &Value| answer["reasons"][0]["value"].as_str().map(str::to_owned);
    // The old version answers first.
    let started = Instant::now();
    while answers.lock().expect("answers").len() < 5 {
        assert!(
            started.elapsed() < BUILD_DEADLINE,
            "no answers\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = project.join(source);
    let text = std::fs::read_to_string(&path).expect("the source");
    assert!(text.contains(from), "{from:?} is in {source}");
    timed(
        lang,
        "edit picked up: rebuilt and swapped in while events flow",
        || {
            std::fs::write(&path, text.replace(from, to)).expect("edit the source");
            let started = Instant::now();
            loop {
                let latest = answers.lock().expect("answers").last().cloned();
                if latest.is_some_and(|(_, body)| reason(&body).is_some_and(|r| r.contains(to))) {
                    break;
                }
                assert!(
                    started.elapsed() < BUILD_DEADLINE,
                    "the edit was never served\n{}",
                    host.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    poster.join().expect("the poster");
    let answers = answers.lock().expect("answers");
    let (old, new): (Vec<_>, Vec<_>) = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "every event is answered by the gate: {body}");
            assert_eq!(body["verdict"], "deny", "{body}");
            reason(body).expect("a reason")
        })
        .partition(|r| !r.contains(to));
    assert!(!old.is_empty() && !new.is_empty(), "{old:?} {new:?}");
    eprintln!(
        "newcomer ({lang}): {} events answered during the edit, {} by the old version, {} by the new",
        answers.len(),
        old.len(),
        new.len()
    );
    assert!(
        !host
            .log()
            .with_message("build succeeded: reloading")
            .is_empty(),
        "{}",
        host.log()
    );
}

#[test]
fn a_newcomer_writes_builds_tests_calls_serves_and_edits_a_rust_gate() {
    let lang = "rust";
    let root = workspace_root();
    let work = Workdir::new();
    let sdk = root.join("sdk");
    timed(lang, "hookwasm new", || {
        hookwasm(&[
            "new",
            "first-gate",
            "--gate",
            "--sdk-path",
            &sdk.to_string_lossy(),
            "--dir",
            &work.path().to_string_lossy(),
        ])
        .assert_code(0);
    });
    let project = work.path().join("first-gate");
    for file in [
        ".gitignore",
        ".cargo/config.toml",
        "README.md",
        "event.json",
    ] {
        assert!(project.join(file).exists(), "{file}");
    }
    // Shared with every run: the SDK's dependencies compile once.
    let shared = root.join("target").join("newcomer");
    std::fs::create_dir_all(&shared).expect("target/newcomer");
    std::os::unix::fs::symlink(&shared, project.join("target")).expect("link target/");

    timed(lang, "cargo build --release", || {
        run_in(&project, "cargo", &["build", "--release"]);
    });
    let tests = timed(lang, "cargo test-native", || {
        run_in(&project, "cargo", &["test-native"])
    });
    assert!(tests.contains("test result: ok. 3 passed"), "{tests}");

    let module = "target/wasm32-wasip2/release/first_gate.wasm";
    let (code, report) = timed(lang, "hookwasm call (deny)", || {
        call(&project, module, &project.join("event.json"))
    });
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report["reason"],
        "force-pushed of protected branch main is not allowed"
    );
    let (code, report) = timed(lang, "hookwasm call (allow)", || {
        call(&project, module, &event_for(&project, "refs/heads/feature"))
    });
    assert_eq!(
        (code, &report["verdict"]),
        (Some(0), &"allow".into()),
        "{report}"
    );

    serve_edit_and_check(
        lang,
        &project,
        "cargo build --release",
        "src/lib.rs",
        "is not allowed",
        "is refused by version two",
    );
}

#[test]
fn a_newcomer_writes_builds_tests_calls_serves_and_edits_a_javascript_gate() {
    let lang = "js";
    let root = workspace_root();
    let installed = root.join("sdk-js/node_modules/.bin/componentize-js");
    assert!(
        installed.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        installed.display()
    );
    let work = Workdir::new();
    timed(lang, "hookwasm new --lang js", || {
        hookwasm(&[
            "new",
            "first-js-gate",
            "--lang",
            "js",
            "--dir",
            &work.path().to_string_lossy(),
        ])
        .assert_code(0);
    });
    let project = work.path().join("first-js-gate");
    // `npm install` would fetch componentize-js: use the copy xtask installed.
    std::os::unix::fs::symlink(
        root.join("sdk-js/node_modules"),
        project.join("node_modules"),
    )
    .expect("link node_modules/");

    let tests = timed(lang, "npm test", || run_in(&project, "npm", &["test"]));
    assert!(
        tests.contains("# pass 3") && tests.contains("# fail 0"),
        "{tests}"
    );
    timed(lang, "npm run build", || {
        run_in(&project, "npm", &["run", "build"]);
    });

    let module = "first-js-gate.wasm";
    let (code, report) = timed(lang, "hookwasm call (deny, compiles the component)", || {
        call(&project, module, &project.join("event.json"))
    });
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report["reason"],
        "force-pushed of protected branch main is not allowed"
    );
    let (code, report) = timed(
        lang,
        "hookwasm call (allow, from the compile cache)",
        || call(&project, module, &event_for(&project, "refs/heads/feature")),
    );
    assert_eq!(
        (code, &report["verdict"]),
        (Some(0), &"allow".into()),
        "{report}"
    );

    serve_edit_and_check(
        lang,
        &project,
        "npm run build",
        "handler.js",
        "is not allowed",
        "is refused by version two",
    );
}
