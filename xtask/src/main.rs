//! Project tasks, run as `cargo xtask <task>` from anywhere in the repository:
//!
//! - `serve`: build the guests and the host (release), then serve the sample `proxy.config.json`;
//! - `test`: formatting, clippy (host and wasm crates), the guests, what the tests talk to
//!   (Chromium and `nats-server` from apt-get when missing, Python's `aiosmtpd` and the CloudEvents SDKs: pip into `target/pip`, npm into
//!   `tests/interop/node_modules`), then every test (the Rust crates', the embeddable core's
//!   without default features, then the GitProxy package's Node suite against the built host,
//!   and the JavaScript SDK's);
//! - `bench-peers`: hookwasm against Extism on the same logic and events (`benches/peers`);
//! - `build-guests`: only build the plugins and test guests for `wasm32-wasip2` (JavaScript
//!   guests with componentize-js, installed by `npm ci` into `sdk-js/node_modules`).
//!
//! Guests build into their own target folder (`target/guests`), so a host build never waits on
//! them; each built component is copied next to its crate (`plugins/<name>.wasm`,
//! `tests/guests/<name>.wasm`), where configs and tests expect it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Every guest crate: (package, folder the built `.wasm` is copied to).
const GUESTS: [(&str, &str); 9] = [
    ("console-logger", "plugins"),
    ("branch-protection", "plugins"),
    ("webhook", "plugins"),
    ("notify", "plugins"),
    ("wit-0-1", "tests/guests"),
    ("chaos", "tests/guests"),
    ("hostile", "tests/guests"),
    ("other-world", "tests/guests"),
    ("bench", "tests/guests"),
];
/// The crates that build for wasm, for clippy.
const WASM_CRATES: [&str; 10] = [
    "hookwasm-sdk",
    "console-logger",
    "branch-protection",
    "webhook",
    "notify",
    "wit-0-1",
    "chaos",
    "hostile",
    "other-world",
    "bench",
];
/// Native crates whose tests run: the host (unit + end-to-end) and the guests' pure logic.
const TESTED: [&str; 8] = [
    "hookwasm",
    "hookwasm-sdk",
    "console-logger",
    "branch-protection",
    "webhook",
    // With the host in the same run, `notify` alone is ambiguous: the host depends on the
    // file-watcher crate `notify` 8.x. The version picks the plugin (the workspace's version).
    "notify@0.1.0",
    "chaos",
    "bench",
];
/// JavaScript guests: (handler module, component it becomes), built with componentize-js.
const JS_GUESTS: [(&str, &str); 2] = [
    (
        "plugins/js-branch-guard/handler.js",
        "plugins/js-branch-guard.wasm",
    ),
    (
        "tests/guests/js-echo/handler.js",
        "tests/guests/js-echo.wasm",
    ),
];
/// JavaScript test folders, run with `node --test`.
const JS_TESTS: [&str; 1] = ["plugins/js-branch-guard"];
/// The JavaScript SDK's folder: its `npm ci` installs componentize-js there, project-local.
const SDK_JS: &str = "sdk-js";
const WASM_TARGET: &str = "wasm32-wasip2";
const GUEST_TARGET_DIR: &str = "target/guests";
const GUEST_PROFILE: &str = "guest";

fn main() -> anyhow::Result<()> {
    let root = workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            build_guests()?;
            cargo(&["build", "--release", "-p", "hookwasm"])?;
            let mut serve = vec![
                "run",
                "--release",
                "-q",
                "-p",
                "hookwasm",
                "--",
                "serve",
                "--config",
                "proxy.config.json",
            ];
            serve.extend(args[1..].iter().map(String::as_str));
            cargo(&serve)
        }
        Some("test") => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            add_wasm_target()?;
            let mut clippy = vec![
                "clippy",
                "-p",
                "hookwasm",
                "-p",
                "xtask",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ];
            cargo(&clippy)?;
            clippy = vec![
                "clippy",
                "--target",
                WASM_TARGET,
                "--target-dir",
                GUEST_TARGET_DIR,
            ];
            clippy.extend(WASM_CRATES.iter().flat_map(|c| ["-p", c]));
            clippy.extend(["--", "-D", "warnings"]);
            cargo(&clippy)?;
            build_guests()?;
            install_chromium()?;
            let mut env = install_cloudevents_sdks()?;
            env.push((PYTHONPATH_VAR, install_smtp_server()?));
            test_js()?;
            add_wasip1_target()?;
            install_nats_server()?;
            let mut test = vec!["test"];
            test.extend(TESTED.iter().flat_map(|c| ["-p", c]));
            test.extend(args[1..].iter().map(String::as_str));
            let (passed, failed) = cargo_test(&test, &env)?;
            let (core_passed, core_failed) = test_embeddable_core()?;
            let (node_passed, node_failed) = node_tests()?;
            println!(
                "tests: {} passed, {} failed",
                passed + core_passed + node_passed,
                failed + core_failed + node_failed
            );
            if node_failed > 0 {
                bail!("the GitProxy package's Node tests failed");
            }
            Ok(())
        }
        Some("build-guests") => build_guests(),
        Some("bench-peers") => bench_peers(&args[1..]),
        _ => bail!(
            "usage: cargo xtask <serve [hookwasm serve args…] | test [cargo test args…] | build-guests | bench-peers>"
        ),
    }
}

/// Builds every guest for wasm32-wasip2 and copies each component next to its crate.
fn build_guests() -> anyhow::Result<()> {
    add_wasm_target()?;
    let mut build = vec![
        "build",
        "--profile",
        GUEST_PROFILE,
        "--target",
        WASM_TARGET,
        "--target-dir",
        GUEST_TARGET_DIR,
    ];
    build.extend(GUESTS.iter().flat_map(|(package, _)| ["-p", package]));
    cargo(&build)?;
    let out = Path::new(GUEST_TARGET_DIR)
        .join(WASM_TARGET)
        .join(GUEST_PROFILE);
    for (package, folder) in GUESTS {
        // cdylibs are named after the crate with `_`; binaries keep their `-`.
        let built = [package.replace('-', "_"), package.to_owned()]
            .iter()
            .map(|stem| out.join(format!("{stem}.wasm")))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "the build of {package} produced no .wasm in {}",
                    out.display()
                )
            })?;
        let dest = Path::new(folder).join(format!("{package}.wasm"));
        std::fs::copy(&built, &dest)
            .with_context(|| format!("cannot copy {} to {}", built.display(), dest.display()))?;
        println!("built {}", dest.display());
    }
    build_js_guests()
}

/// The peer benchmark (`benches/peers`): builds hookwasm's bench guest (wasm32-wasip2) and the
/// same logic as an Extism plugin (wasm32-wasip1, `benches/peers/guest`), then runs it in a
/// release build. Its own crate, so no other build compiles Extism's wasmtime.
fn bench_peers(args: &[String]) -> anyhow::Result<()> {
    add_wasm_target()?;
    add_wasip1_target()?;
    let guest = ["--profile", GUEST_PROFILE, "--target-dir", GUEST_TARGET_DIR];
    println!(
        "bench-peers: building hookwasm's bench guest (tests/guests/bench.wasm, {WASM_TARGET})"
    );
    cargo(
        &[
            &["build", "--target", WASM_TARGET, "-p", "bench"][..],
            &guest,
        ]
        .concat(),
    )?;
    let built = Path::new(GUEST_TARGET_DIR)
        .join(WASM_TARGET)
        .join(GUEST_PROFILE)
        .join("bench.wasm");
    std::fs::copy(&built, "tests/guests/bench.wasm")
        .with_context(|| format!("cannot copy {}", built.display()))?;
    println!(
        "bench-peers: building the same logic as an Extism plugin (benches/peers/guest, wasm32-wasip1)"
    );
    let wasip1 = [
        "build",
        "--target",
        "wasm32-wasip1",
        "-p",
        "peers-extism-guest",
    ];
    cargo(&[&wasip1[..], &guest].concat())?;
    let plugin = workspace_root()?
        .join(GUEST_TARGET_DIR)
        .join("wasm32-wasip1")
        .join(GUEST_PROFILE)
        .join("peers_extism_guest.wasm");
    println!(
        "bench-peers: running benches/peers in release (the first build compiles Extism's wasmtime 43 too: minutes)"
    );
    let mut bench = vec!["bench", "-p", "peers", "--bench", "peers", "--"];
    bench.extend(args.iter().map(String::as_str));
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo_bin)
        .args(&bench)
        .env("PEERS_EXTISM_GUEST", &plugin))
}

/// Installs the JavaScript SDK's dev dependencies (componentize-js, ~400 MB) into
/// `sdk-js/node_modules` with `npm ci`, when they are missing or the lock file changed.
fn npm_ci_sdk_js() -> anyhow::Result<()> {
    let lock = Path::new(SDK_JS).join("package-lock.json");
    let installed = Path::new(SDK_JS).join("node_modules/.package-lock.json");
    if newer_than(&installed, &[lock]) {
        return Ok(());
    }
    eprintln!("installing componentize-js into {SDK_JS}/node_modules (npm ci, project-local)");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(SDK_JS))
}

/// Builds each JavaScript guest into a component with componentize-js, from the repository
/// root so the handlers' relative imports of `sdk-js/` resolve. Skipped when the component is
/// newer than its sources (a build takes ~20 s).
fn build_js_guests() -> anyhow::Result<()> {
    npm_ci_sdk_js()?;
    let cli = Path::new(SDK_JS).join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    for (source, out) in JS_GUESTS {
        let mut inputs = vec![
            PathBuf::from("wit/handler.wit"),
            Path::new(SDK_JS).join("index.js"),
        ];
        let folder = Path::new(source).parent().context("a guest's folder")?;
        for entry in std::fs::read_dir(folder)? {
            inputs.push(entry?.path());
        }
        if newer_than(Path::new(out), &inputs) {
            println!("up to date {out}");
            continue;
        }
        run(Command::new("node").arg(&cli).args([
            source,
            "--wit",
            "wit",
            "--world-name",
            "event-handler",
            "--out",
            out,
        ]))?;
        println!("built {out}");
    }
    Ok(())
}

/// The official CloudEvents SDKs the interop tests send with: Python's from PyPI into
/// `target/pip`, JavaScript's from npm into `tests/interop/node_modules` (pinned by its
/// package-lock.json). Returns the variables that tell the tests where they are.
fn install_cloudevents_sdks() -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let root = std::env::current_dir().context("no current folder")?;
    let pip_target = root.join(PIP_TARGET);
    if !pip_target
        .join(format!("cloudevents-{CLOUDEVENTS_PYTHON}.dist-info"))
        .is_dir()
    {
        ensure_pip()?;
        println!(
            "installing the CloudEvents Python SDK (cloudevents {CLOUDEVENTS_PYTHON}) into {PIP_TARGET} for the interop tests"
        );
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-conflicts",
            "--root-user-action=ignore",
            "--upgrade",
            "--target",
            PIP_TARGET,
            &format!("cloudevents=={CLOUDEVENTS_PYTHON}"),
        ]))?;
    }
    let interop = root.join(INTEROP_DIR);
    // npm ci again when the lock file changed since the last install.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(&interop.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&interop.join("package-lock.json")) {
        println!(
            "installing the CloudEvents JavaScript SDK (npm ci, as {INTEROP_DIR}/package-lock.json pins it) into {INTEROP_DIR}/node_modules for the interop tests"
        );
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&interop))?;
    }
    Ok(vec![
        ("HOOKWASM_INTEROP_PYTHONPATH", pip_target),
        (
            "HOOKWASM_INTEROP_NODE_MODULES",
            interop.join("node_modules"),
        ),
    ])
}

/// Debian's python3 comes without pip: install its package when `python3 -m pip` is missing.
fn ensure_pip() -> anyhow::Result<()> {
    let pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if pip.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    println!("python3 has no pip: installing the Debian package python3-pip with apt-get");
    apt_install(&["python3-pip"])
}

/// Installs Debian packages: `apt-get update` once per run, then the packages without their
/// recommendations; as root (CI, a fresh machine) directly, otherwise through `sudo`.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    static UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let apt = || {
        let mut command = Command::new(if root { "apt-get" } else { "sudo" });
        if !root {
            command.arg("apt-get");
        }
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    if !UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        run(apt().args(["update", "-q"]))?;
    }
    run(apt()
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages))
    .with_context(|| {
        format!(
            "cannot install {}; install them with apt-get as root and run again",
            packages.join(" ")
        )
    })
}

/// The dashboard's browser test drives Debian's Chromium through chromedriver: installs both
/// when either is missing.
fn install_chromium() -> anyhow::Result<()> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(());
    }
    println!(
        "installing Debian's chromium and chromium-driver with apt-get for the dashboard's browser test"
    );
    apt_install(&["chromium", "chromium-driver"])
}

/// The interop tests' scripts and their npm package.
const INTEROP_DIR: &str = "tests/interop";
/// Where pip installs the Python SDK.
const PIP_TARGET: &str = "target/pip";
/// The Python SDK's version (npm's is in tests/interop/package-lock.json).
const CLOUDEVENTS_PYTHON: &str = "2.2.0";

/// Runs the JavaScript tests (`node --test`): the JS guests on `sdk-js/testing.js`; then
/// type-checks the TypeScript example against `sdk-js/index.d.ts` (`tsc`, installed by npm ci).
fn test_js() -> anyhow::Result<()> {
    for folder in JS_TESTS {
        run(Command::new("node").args(["--test", folder]))?;
    }
    let tsc = Path::new(SDK_JS).join("node_modules/typescript/bin/tsc");
    run(Command::new("node").arg(tsc).args(["-p", SDK_JS]))
}

/// Whether `path` exists and is newer than every one of `inputs`.
fn newer_than(path: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(path) else {
        return false;
    };
    inputs
        .iter()
        .all(|input| modified(input).is_some_and(|m| m <= built))
}

/// The wasm32-wasip1 standard library: the SDK's test that building a handler for it fails with
/// a clear message needs it, and `bench-peers` builds its Extism plugin for it.
fn add_wasip1_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if !String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip1") =>
        {
            println!("installing the wasm32-wasip1 target (rustup target add wasm32-wasip1)");
            run(Command::new("rustup").args(["target", "add", "wasm32-wasip1"]))
        }
        _ => Ok(()),
    }
}

/// The guests need the wasm32-wasip2 standard library. `rust-toolchain.toml` lists the target,
/// but rustup only installs listed targets with a new toolchain, so ask for it explicitly.
fn add_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            println!("installing the {WASM_TARGET} target (rustup target add {WASM_TARGET})");
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        }
        // Without rustup the toolchain came from elsewhere; the build will say if the target is missing.
        Err(_) => Ok(()),
    }
}

/// Where the e-mail tests find Python packages (set for `cargo test`).
const PYTHONPATH_VAR: &str = "HOOKWASM_PYTHONPATH";
/// The real SMTP server the notify plugin's e-mail test delivers to (tests/e2e/smtp_sink.py).
const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// Installs Python's `aiosmtpd` into `target/pip` (not the system's Python) unless it is already
/// there, and returns that folder for the tests' `HOOKWASM_PYTHONPATH`.
fn install_smtp_server() -> anyhow::Result<PathBuf> {
    let target = Path::new(PIP_TARGET);
    let present = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", target)
        .output()
        .is_ok_and(|out| out.status.success());
    if !present {
        ensure_pip()?;
        eprintln!("installing {AIOSMTPD} into {PIP_TARGET} for the e-mail tests");
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            PIP_TARGET,
            AIOSMTPD,
        ]))?;
    }
    std::fs::canonicalize(target).with_context(|| format!("cannot find {PIP_TARGET}"))
}

/// Runs `cargo test` with `env`, passing its output through, and totals every test binary's
/// results (cargo's own last line is often a doc-test run with nothing in it): (passed, failed).
fn cargo_test(args: &[&str], env: &[(&str, PathBuf)]) -> anyhow::Result<(u64, u64)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.context("cannot read cargo test's output")?;
        println!("{line}");
        // "test result: ok. 35 passed; 0 failed; 0 ignored; …"
        if let Some(counts) = line.strip_prefix("test result: ") {
            for part in counts.split(['.', ';']) {
                match part.trim().split_once(' ') {
                    Some((n, "passed")) => passed += n.parse::<u64>().unwrap_or(0),
                    Some((n, "failed")) => failed += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("cargo test did not finish")?;
    println!("cargo tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed))
}

/// The library without default features (the embeddable core: no server, SQLite, NATS, OTLP,
/// notify or clap): clippy on it, then the embedder test (`host/tests/embed.rs`) against it.
fn test_embeddable_core() -> anyhow::Result<(u64, u64)> {
    let core = ["-p", "hookwasm", "--no-default-features"];
    let mut clippy = vec!["clippy"];
    clippy.extend(core);
    clippy.extend(["--lib", "--test", "embed", "--", "-D", "warnings"]);
    cargo(&clippy)?;
    let mut test = vec!["test"];
    test.extend(core);
    test.extend(["--test", "embed"]);
    cargo_test(&test, &[])
}

/// The GitProxy package (`integrations/git-proxy`): installs its dev dependencies into its own
/// `node_modules` (`npm ci`), then runs its suite (`npm test`: type check, `node --test`) against
/// the debug `hookwasm` binary, which its tests start as `hookwasm serve` with the guests' `.wasm`
/// files. Returns (passed, failed) from node's summary.
fn node_tests() -> anyhow::Result<(u64, u64)> {
    const PACKAGE: &str = "integrations/git-proxy";
    // `cargo test` has just built the binary for the end-to-end tests. A `cargo build -p hookwasm`
    // would rebuild part of wasmtime (dev-dependencies unify other features), so only when missing.
    if !Path::new("target/debug/hookwasm").exists() {
        cargo(&["build", "-p", "hookwasm"])?;
    }
    let bin = std::fs::canonicalize("target/debug/hookwasm")
        .context("target/debug/hookwasm is missing after `cargo build -p hookwasm`")?;
    eprintln!(
        "installing the GitProxy package's dev dependencies (npm ci) into {PACKAGE}/node_modules"
    );
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(PACKAGE))?;
    eprintln!("$ npm test (in {PACKAGE}, HOOKWASM_BIN={})", bin.display());
    let mut child = Command::new("npm")
        .arg("test")
        .current_dir(PACKAGE)
        .env("HOOKWASM_BIN", &bin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run npm test: is Node.js (20 or later, with npm) installed?")?;
    let stdout = child.stdout.take().context("npm test has no stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.context("cannot read npm test's output")?;
        println!("{line}");
        // node's summary: "# pass 17" (TAP reporter) or "ℹ pass 17" (spec reporter).
        let summary = line.trim_start_matches(['#', 'ℹ', ' ']);
        if let Some(n) = summary.strip_prefix("pass ") {
            passed += n.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(n) = summary.strip_prefix("fail ") {
            failed += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    let status = child.wait().context("npm test did not finish")?;
    println!("node tests: {passed} passed, {failed} failed");
    if !status.success() && failed == 0 {
        bail!("npm test failed ({status}) before node's test runner reported");
    }
    Ok((passed, failed))
}

/// The NATS tests start their own `nats-server -js` processes; Debian's package (2.9, JetStream
/// included) is installed with apt-get when no `nats-server` is found. Debian enables a
/// systemd service for it on port 4222 where systemd runs; the tests never use that one.
fn install_nats_server() -> anyhow::Result<()> {
    let found = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .iter()
    .any(|bin| Command::new(bin).arg("--version").output().is_ok());
    if found {
        return Ok(());
    }
    eprintln!("nats-server is missing (the JetStream tests need it): installing Debian's package");
    apt_install(&["nats-server"])
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).args(args))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask is not inside the workspace")
}
