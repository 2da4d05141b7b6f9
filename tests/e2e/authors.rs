//! A plugin author's first hour: the mistakes a newcomer makes get one line that says what to do,
//! `call` reuses compiled modules, and `serve --watch` reloads even while the host's own log is
//! being written in the watched folder.
//!
//! `newcomer.rs` plays the whole first hour (`hookwasm new` → build → test → call → serve →
//! edit under `--watch --build`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::Hookwasm;
use crate::support::{
    Guest, LOG_HANDLED, POLL_DEADLINE, Workdir, custom, hookwasm, ref_update, shared_cache_dir,
    with_custom_section, workspace_root, write_by_rename, write_in_place,
};

/// The one `error:` line of a bad-input exit.
fn one_line_error(run: &crate::support::Run) -> String {
    run.assert_code(2);
    let error = run.error();
    assert_eq!(error.trim_end().lines().count(), 1, "one line\n{run}");
    error
}

#[test]
fn a_crate_built_without_cdylib_is_named_in_one_line() {
    // `cargo build` of a lib crate without `crate-type = ["cdylib"]` leaves `libname.rlib` and
    // no `name.wasm`: the error says which line to add, and the OS error is not doubled.
    let work = Workdir::new();
    work.write("libmy_handler.rlib", b"!<arch>\n");
    let module = work.path().join("my_handler.wasm");
    let event = work.write("event.json", custom("c-1").to_string());
    let run = hookwasm(&[
        "call",
        &module.to_string_lossy(),
        "--event",
        &event.to_string_lossy(),
    ]);
    let error = one_line_error(&run);
    assert!(
        error.contains(r#"add `crate-type = ["cdylib"]` under `[lib]`"#),
        "{run}"
    );
    assert!(!error.contains("os error"), "no raw OS error\n{run}");

    // Without the .rlib beside it, it is a path or a build that has not happened.
    std::fs::remove_file(work.path().join("libmy_handler.rlib")).expect("remove the rlib");
    let run = hookwasm(&[
        "call",
        &module.to_string_lossy(),
        "--event",
        &event.to_string_lossy(),
    ]);
    let error = one_line_error(&run);
    assert!(
        error.contains("my_handler.wasm: no such file; build it first, or fix the path"),
        "{run}"
    );
}

#[test]
fn a_component_without_exports_names_export_handler() {
    // The smallest component (the preamble alone) is what a crate that forgot the macro is to
    // the host: a component exporting nothing.
    let work = Workdir::new();
    let module = work.write(
        "empty.wasm",
        [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00],
    );
    let event = work.write("event.json", custom("e-1").to_string());
    let error = one_line_error(&hookwasm(&[
        "call",
        &module.to_string_lossy(),
        "--event",
        &event.to_string_lossy(),
    ]));
    assert!(
        error.contains("it exports nothing")
            && error.contains("`hookwasm_sdk::export_handler!(YourHandler);`"),
        "{error}"
    );
}

#[test]
fn a_core_module_says_build_for_wasm32_wasip2() {
    // What wasm32-wasip1 and wasm32-unknown-unknown produce: a core module.
    let work = Workdir::new();
    let module = work.write(
        "core.wasm",
        [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    );
    let event = work.write("event.json", custom("m-1").to_string());
    let error = one_line_error(&hookwasm(&[
        "call",
        &module.to_string_lossy(),
        "--event",
        &event.to_string_lossy(),
    ]));
    assert!(
        error.contains("core WebAssembly module, not a component")
            && error.contains("`cargo build --release --target wasm32-wasip2`"),
        "{error}"
    );
}

#[test]
fn the_sdk_refuses_to_build_for_other_wasm_targets() {
    // Before the host ever sees the file: building a handler for wasm32-wasip1 fails at once,
    // naming the target to use. (`cargo xtask test` installs the wasip1 standard library.)
    let root = workspace_root();
    let out = Command::new(env!("CARGO"))
        .args([
            "check",
            "-q",
            "-p",
            "hookwasm-sdk",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(root.join("target").join("wasip1-check"))
        .current_dir(&root)
        .output()
        .expect("cannot run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build must fail\n{stderr}");
    assert!(
        stderr.contains("hookwasm handlers are WebAssembly components: build for wasm32-wasip2"),
        "{stderr}"
    );
}

#[test]
fn call_names_handler_config_when_init_refuses_it() {
    let work = Workdir::new();
    let event = work.write(
        "event.json",
        ref_update("h-1", "git.branch.updated", "refs/heads/main").to_string(),
    );
    let error = one_line_error(&hookwasm(&[
        "call",
        &Guest::BranchProtection.module(),
        "--event",
        &event.to_string_lossy(),
        "--handler-config",
        r#"{"protected": "main"}"#,
    ]));
    assert!(
        error.starts_with("init refused the handler config (error): invalid handler config:")
            && error.contains("pass the config it expects with --handler-config '<json>'")
            && !error.contains("entry"),
        "{error}"
    );
}

#[test]
fn events_into_a_closed_pipe_exits_quietly() {
    // `hookwasm events | head -1`: the reader is gone before hookwasm writes.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .arg("events")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("cannot run hookwasm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}

#[test]
fn call_keeps_compiled_modules_in_the_users_cache() {
    // Without HOOKWASM_CACHE_DIR, `call` caches in $XDG_CACHE_HOME/hookwasm: the second call
    // of the same module loads it from there instead of compiling it.
    let work = Workdir::new();
    let xdg = work.path().join("xdg-cache");
    let event = work.write("event.json", custom("cache-1").to_string());
    let module = work.write(
        "chaos.wasm",
        with_custom_section(
            &std::fs::read(Guest::Chaos.path()).expect("chaos.wasm is built"),
            "authors-cache",
            b"unique to this test",
        ),
    );
    let run = |label: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookwasm"));
        command
            .args(["call", &module.to_string_lossy(), "--event"])
            .arg(&event)
            .args(["--handler-config", r#"{"behavior": "ok"}"#])
            .env_remove("HOOKWASM_CACHE_DIR")
            .env("XDG_CACHE_HOME", &xdg)
            .env("RUST_LOG", "hookwasm=debug")
            .env("HOOKWASM_LOG_FORMAT", "json");
        let out = command.output().expect("cannot run hookwasm");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{label}: {stderr}");
        stderr
    };
    let first = run("first call");
    assert!(first.contains(r#""message":"compiled""#), "{first}");
    let entries: Vec<_> = std::fs::read_dir(xdg.join("hookwasm"))
        .expect("the cache folder exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "one compiled module in the cache");
    let second = run("second call");
    assert!(
        second.contains(r#""message":"loaded from the compile cache""#),
        "{second}"
    );
    assert!(!second.contains(r#""message":"compiled""#), "{second}");
}

#[test]
fn replay_keeps_compiled_modules_beside_the_config() {
    // `replay` loads through the compile cache in `.hookwasm/cache` beside the config: the
    // second replay of the same config compiles nothing.
    let work = Workdir::new();
    let module = work.write(
        "chaos.wasm",
        with_custom_section(
            &std::fs::read(Guest::Chaos.path()).expect("chaos.wasm is built"),
            "authors-replay-cache",
            b"unique to this test",
        ),
    );
    let config = work.config(&[json!({
        "name": "c", "module": module, "mode": "gate", "config": {"behavior": "ok"}
    })]);
    let events = work.ndjson("events.ndjson", &[custom("r-1")]);
    let replay = |label: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
            .args(["replay", "--config"])
            .arg(&config)
            .arg(&events)
            .env_remove("HOOKWASM_CACHE_DIR")
            .env("RUST_LOG", "hookwasm=debug")
            .env("HOOKWASM_LOG_FORMAT", "json")
            .output()
            .expect("cannot run hookwasm");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{label}: {stderr}");
        stderr
    };
    let first = replay("first replay");
    assert!(first.contains(r#""message":"compiled""#), "{first}");
    assert!(
        std::fs::read_dir(work.path().join(".hookwasm/cache"))
            .expect("the cache folder beside the config")
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "cwasm")),
        "a compiled entry"
    );
    let second = replay("second replay");
    assert!(
        second.contains(r#""message":"loaded from the compile cache""#)
            && !second.contains(r#""message":"compiled""#),
        "{second}"
    );
}

#[test]
fn watch_reloads_while_the_hosts_own_log_is_written_in_the_config_folder() {
    // `serve --watch 2> serve.log` in the config's folder: the log grows all the time, and a
    // rebuilt module must still be swapped in (the debounce counts only watched files).
    let work = Workdir::new();
    let original = std::fs::read(Guest::Chaos.path()).expect("chaos.wasm is built");
    let module = work.write("chaos.wasm", &original);
    let config = work.config(&[json!({
        "name": "c", "module": "chaos.wasm", "config": {"behavior": "ok"}
    })]);
    let cache = shared_cache_dir();
    let host = Hookwasm::new()
        .args(&["--watch"])
        .envs(&[
            ("RUST_LOG", LOG_HANDLED),
            ("HOOKWASM_CACHE_DIR", &cache.to_string_lossy()),
        ])
        .serve(&config);
    // Wait until the watcher is live: rewrite the config until a reload follows.
    let text = std::fs::read(&config).expect("config");
    let start = Instant::now();
    while host.log().with_message("reload done").is_empty() {
        assert!(start.elapsed() < POLL_DEADLINE, "no reload\n{}", host.log());
        write_in_place(&config, &text);
        std::thread::sleep(Duration::from_millis(400));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let log_path = work.path().join("serve.log");
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::File::create(&log_path).expect("serve.log");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                writeln!(log, "INFO handled event {n}").expect("write serve.log");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let next = with_custom_section(&original, "authors-debounce", b"v2");
    write_by_rename(&module, &next);
    let swapped = Instant::now();
    host.wait_for_log("the rebuilt module is swapped in", |l| {
        l.message()
            .filter(|m| m.starts_with("reloaded: "))
            .map(str::to_owned)
    });
    let waited = swapped.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the log writer");
    assert!(
        waited < Duration::from_secs(10),
        "the reload took {waited:?}"
    );
}

#[test]
fn a_failed_build_is_logged_and_the_running_version_keeps_serving() {
    // `serve --watch --build`: an edit whose build fails leaves the old version answering and
    // puts the build's output in the log; the next edit that builds is swapped in. The "build"
    // copies a prepared module, or fails like a compiler when `fail` exists.
    let work = Workdir::new();
    let original = std::fs::read(Guest::Chaos.path()).expect("chaos.wasm is built");
    let next = with_custom_section(&original, "authors-build", b"the rebuilt version");
    work.write("chaos.wasm", &original);
    work.write("next.wasm", &next);
    work.write("fail", "");
    let source = work.write("lib.rs", "// v1\n");
    let config = work.config(&[json!({
        "name": "g", "module": "chaos.wasm", "mode": "gate", "config": {"behavior": "ok"}
    })]);
    let build = "if [ -f fail ]; then echo 'error[E0308]: mismatched types' >&2; exit 101; fi; cp next.wasm chaos.wasm";
    let cache = shared_cache_dir();
    let host = Hookwasm::new()
        .args(&["--watch", "--build", build])
        .envs(&[("HOOKWASM_CACHE_DIR", &cache.to_string_lossy())])
        .serve(&config);
    let digest = |n: usize| {
        let response = host.post_events(&custom(&format!("b-{n}")));
        assert_eq!(response.status, 200, "{response}");
        response.json()["gates"][0]["digest"]
            .as_str()
            .expect("a digest")
            .to_owned()
    };
    let old = digest(0);

    // An edit whose build fails, made until the watcher (just started) sees one.
    let failed = |log: &crate::support::Log| {
        log.lines().find_map(|l| {
            l.message()
                .filter(|m| m.starts_with("build failed, the running version keeps serving"))
                .map(str::to_owned)
        })
    };
    let start = Instant::now();
    let message = loop {
        write_in_place(&source, b"// v2, does not compile\n");
        std::thread::sleep(Duration::from_millis(500));
        if let Some(message) = failed(&host.log()) {
            break message;
        }
        assert!(start.elapsed() < POLL_DEADLINE, "no build\n{}", host.log());
    };
    assert!(
        message.contains("exit status: 101") && message.contains("error[E0308]: mismatched types"),
        "{message}"
    );
    assert_eq!(digest(1), old, "the old version still answers");

    // Fixed: the next edit builds, and the new version is swapped in.
    std::fs::remove_file(work.path().join("fail")).expect("remove fail");
    write_in_place(&source, b"// v3\n");
    let start = Instant::now();
    let mut n = 2;
    while digest(n) == old {
        assert!(
            start.elapsed() < POLL_DEADLINE,
            "never swapped\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
        n += 1;
    }
    assert_eq!(digest(n + 1), crate::support::sha256_hex(&next));
}

#[test]
fn the_javascript_test_kit_builds_events_as_components_receive_them() {
    // `js-echo` returns the event it was given as JSON; sdk-js/testing.js's `events.fromJson`
    // must build the same object from the same CloudEvent (in Node, without the host).
    let root = workspace_root();
    let echo = root.join("tests/guests/js-echo.wasm");
    assert!(
        echo.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        echo.display()
    );
    let mut cases = vec![
        ref_update("k-1", "git.branch.force-pushed", "refs/heads/main"),
        ref_update("k-2", "git.tag.created", "refs/tags/v1"),
        crate::support::proxy_action("k-3", "push.permission-denied"),
        custom("k-4"),
    ];
    let mut minimal = crate::support::proxy_action("k-5", "pull.started");
    for optional in ["user", "branch", "commitFrom", "commitTo", "error", "steps"] {
        minimal["data"]
            .as_object_mut()
            .expect("data")
            .remove(optional);
    }
    minimal["subject"] = json!("repos/acme/widgets");
    cases.push(minimal);
    cases.push(json!({
        "specversion": "1.0", "id": "k-6", "source": "git", "type": "git.push.rejected",
        "time": "2026-11-22T10:00:00Z",
        "data": {"pushId": "p", "repository": {"url": "u"}, "pusher": {"username": "m", "email": "m@x"},
                 "refs": ["refs/heads/main"], "reason": "no"}
    }));

    let work = Workdir::new();
    let from_host: Vec<serde_json::Value> = cases
        .iter()
        .map(|case| {
            let event = work.write("event.json", case.to_string());
            let run = hookwasm(&[
                "call",
                &echo.to_string_lossy(),
                "--event",
                &event.to_string_lossy(),
            ]);
            run.assert_code(0);
            let text = run.report()["annotations"]["event"]
                .as_str()
                .expect("the echoed event")
                .to_owned();
            serde_json::from_str(&text).expect("JSON")
        })
        .collect();

    let script = format!(
        "import {{ events }} from {:?};\n\
         import {{ readFileSync }} from 'node:fs';\n\
         for (const line of readFileSync(0, 'utf8').split('\\n').filter(Boolean))\n\
           console.log(JSON.stringify(events.fromJson(JSON.parse(line))));",
        root.join("sdk-js/testing.js").to_string_lossy()
    );
    let mut node = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run node");
    let input: String = cases.iter().map(|c| format!("{c}\n")).collect();
    std::io::Write::write_all(&mut node.stdin.take().expect("stdin"), input.as_bytes())
        .expect("write to node");
    let out = node.wait_with_output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_kit: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();

    /// Text fields holding JSON compare as JSON (key order differs between serde and JS).
    fn normalise(mut event: serde_json::Value) -> serde_json::Value {
        for pointer in ["/json", "/payload/val"] {
            if let Some(value) = event.pointer_mut(pointer)
                && let Some(parsed) = value
                    .as_str()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            {
                *value = parsed;
            }
        }
        event
    }
    assert_eq!(from_kit.len(), cases.len(), "{stdout}");
    for ((case, host), kit) in cases.iter().zip(from_host).zip(from_kit) {
        assert_eq!(normalise(kit), normalise(host), "{case}");
    }
}
