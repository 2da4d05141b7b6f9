//! Project tasks, run as `cargo xtask <task>` from anywhere in the repository:
//!
//! - `serve`: build the guests and the host (release), then serve the sample `proxy.config.json`;
//! - `test`: formatting, clippy (host and wasm crates), the guests, `nats-server` (apt-get, when
//!   missing), then every test;
//! - `build-guests`: only build the plugins and test guests for `wasm32-wasip2`.
//!
//! Guests build into their own target folder (`target/guests`), so a host build never waits on
//! them; each built component is copied next to its crate (`plugins/<name>.wasm`,
//! `tests/guests/<name>.wasm`), where configs and tests expect it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Every guest crate: (package, folder the built `.wasm` is copied to).
const GUESTS: [(&str, &str); 6] = [
    ("console-logger", "plugins"),
    ("branch-protection", "plugins"),
    ("webhook", "plugins"),
    ("chaos", "tests/guests"),
    ("other-world", "tests/guests"),
    ("bench", "tests/guests"),
];
/// The crates that build for wasm, for clippy.
const WASM_CRATES: [&str; 7] = [
    "hookwasm-sdk",
    "console-logger",
    "branch-protection",
    "webhook",
    "chaos",
    "other-world",
    "bench",
];
/// Native crates whose tests run: the host (unit + end-to-end) and the guests' pure logic.
const TESTED: [&str; 7] = [
    "hookwasm",
    "hookwasm-sdk",
    "console-logger",
    "branch-protection",
    "webhook",
    "chaos",
    "bench",
];
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
            install_nats_server()?;
            let mut test = vec!["test"];
            test.extend(TESTED.iter().flat_map(|c| ["-p", c]));
            test.extend(args[1..].iter().map(String::as_str));
            cargo_test(&test)
        }
        Some("build-guests") => build_guests(),
        _ => bail!(
            "usage: cargo xtask <serve [hookwasm serve args…] | test [cargo test args…] | build-guests>"
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
    Ok(())
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
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        // Without rustup the toolchain came from elsewhere; the build will say if the target is missing.
        Err(_) => Ok(()),
    }
}

/// Runs `cargo test`, passing its output through, and ends with one line totalling every test
/// binary's results: cargo's own last line is often a doc-test run with nothing in it.
fn cargo_test(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(cargo)
        .args(args)
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
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
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
    let sudo = |args: &[&str]| {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut command = Command::new(if root { "apt-get" } else { "sudo" });
        if !root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut sudo(&["update", "-q"]))?;
    run(&mut sudo(&["install", "-y", "-q", "nats-server"]))
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
