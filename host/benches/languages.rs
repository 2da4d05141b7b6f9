//! JavaScript against Rust: the same gate (refuse force-pushes and deletions of protected
//! branches) written in each language, run by the same sandbox under the same limits.
//!
//! - Rust: the gate `hookwasm new` writes, generated and built here (`cargo build --release`
//!   into `target/newcomer`, on this checkout's `sdk/`);
//! - JavaScript: `plugins/js-branch-guard.wasm` (built by `cargo xtask build-guests`).
//!
//! Per language: the component's size; loading it with an empty compile cache and with a warm
//! one; per event (a fresh instance each, as the host runs them) the time, and the fuel of a
//! denied and of an allowed event; the smallest `memoryMiB` under which `init` and an event
//! succeed; and `hookwasm call` end to end with an empty and with a warm compile cache.
//!
//! Run: `cargo xtask build-guests && cargo bench -p hookwasm --bench languages`. It prints a
//! table; it asserts nothing about speed (figures go to BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hookwasm::config::{Capabilities, HandlerSpec};
use hookwasm::event::Event;
use hookwasm::limits::Limits;
use hookwasm::sandbox::{Handler, Sandbox, Status};
use hookwasm::scaffold::{self, Kind, Lang, NewProject};
use serde_json::json;

/// Events timed per language, after the warm-up.
const EVENTS: usize = 2_000;
const WARMUP: usize = 100;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf();
    let rust = build_rust_gate(&root)?;
    let js = root.join("plugins/js-branch-guard.wasm");
    anyhow::ensure!(
        js.exists(),
        "{} is missing: run `cargo xtask build-guests`",
        js.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "hookwasm languages benchmark ({} CPUs, {} build of the host)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (lang, module) in [("Rust", rust), ("JavaScript", js)] {
        println!("\n{lang}: {}", module.display());
        runtime.block_on(measure(&module))?;
        call_end_to_end(&module)?;
    }
    Ok(())
}

/// Generates the Rust gate `hookwasm new` writes and builds it; returns the component.
fn build_rust_gate(root: &Path) -> anyhow::Result<PathBuf> {
    let parent = root.join("target/bench-languages");
    let project = parent.join("bench-gate");
    if !project.exists() {
        std::fs::create_dir_all(&parent)?;
        scaffold::generate(
            &parent,
            &NewProject {
                name: "bench-gate".into(),
                kind: Kind::Gate,
                lang: Lang::Rust,
                sdk_path: Some(root.join("sdk")),
            },
        )?;
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "-q"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", root.join("target/newcomer"))
        .status()?;
    anyhow::ensure!(status.success(), "cargo build of the Rust gate failed");
    Ok(root.join("target/newcomer/wasm32-wasip2/release/bench_gate.wasm"))
}

fn spec(module: &Path, memory_mib: u64) -> HandlerSpec {
    HandlerSpec::for_module(
        module,
        json!({"protected": ["main"]}),
        Limits {
            memory_mib,
            ..Limits::default()
        },
        Capabilities::default(),
    )
}

fn ref_event(id: usize, event_type: &str, ref_name: &str) -> Event {
    let mut example = scaffold::example_event(event_type).expect("a known type");
    example["id"] = format!("e-{id}").into();
    example["data"]["ref"] = ref_name.into();
    Event::from_json(example).expect("a valid event")
}

async fn load(sandbox: &Sandbox, spec: &HandlerSpec) -> anyhow::Result<(Handler, Duration)> {
    let started = Instant::now();
    let handler = {
        let (sandbox, spec) = (sandbox.clone(), spec.clone());
        tokio::task::spawn_blocking(move || sandbox.load(&spec)).await??
    };
    let took = started.elapsed();
    handler.init().await?;
    Ok((handler, took))
}

async fn measure(module: &Path) -> anyhow::Result<()> {
    println!(
        "  component size: {:.1} MiB",
        std::fs::metadata(module)?.len() as f64 / (1 << 20) as f64
    );
    let cache = tempfile::tempdir()?;
    let sandbox = Sandbox::new()?.with_cache(cache.path());
    let (_, cold) = load(&sandbox, &spec(module, 64)).await?;
    let (handler, warm) = load(&sandbox, &spec(module, 64)).await?;
    println!(
        "  load (compile + checks): empty cache {:.0} ms, warm cache {:.1} ms",
        ms(cold),
        ms(warm)
    );

    let deny = ref_event(0, "git.branch.force-pushed", "refs/heads/main");
    let allow = ref_event(0, "git.branch.updated", "refs/heads/main");
    for (what, event) in [("denied", &deny), ("allowed", &allow)] {
        let invocation = handler.on_event(event).await;
        anyhow::ensure!(invocation.status == Status::Ok, "{:?}", invocation.error);
        println!("  fuel per event ({what}): {}", invocation.fuel_consumed);
    }
    for _ in 0..WARMUP {
        handler.on_event(&deny).await;
    }
    let mut times = Vec::with_capacity(EVENTS);
    let started = Instant::now();
    for _ in 0..EVENTS {
        let invocation = handler.on_event(&deny).await;
        anyhow::ensure!(invocation.status == Status::Ok, "{:?}", invocation.error);
        times.push(invocation.duration);
    }
    let total = started.elapsed();
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "  per event, fresh instance (n={EVENTS}): mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, {:.0} events/s",
        ms(total) / EVENTS as f64,
        ms(pick(0.5)),
        ms(pick(0.99)),
        EVENTS as f64 / total.as_secs_f64()
    );

    // The smallest memory cap (MiB) under which init and an event both succeed.
    let mut fits = 64;
    for memory in 1..64 {
        let spec = spec(module, memory);
        let ok = match load(&sandbox, &spec).await {
            Ok((handler, _)) => handler.on_event(&deny).await.status == Status::Ok,
            Err(_) => false,
        };
        if ok {
            fits = memory;
            break;
        }
    }
    println!("  smallest memoryMiB that runs it: {fits}");
    Ok(())
}

/// `hookwasm call` of the denied event, end to end, with an empty then a warm compile cache.
fn call_end_to_end(module: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let event = dir.path().join("event.json");
    let mut example = scaffold::example_event("git.branch.force-pushed").expect("known");
    example["id"] = "call-1".into();
    std::fs::write(&event, example.to_string())?;
    let cache = dir.path().join("cache");
    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
            .arg("call")
            .arg(module)
            .arg("--event")
            .arg(&event)
            .env("HOOKWASM_CACHE_DIR", &cache)
            .env("RUST_LOG", "warn")
            .output()?;
        anyhow::ensure!(out.status.code() == Some(1), "the gate denies: {out:?}");
        took.push(started.elapsed());
    }
    println!(
        "  hookwasm call: empty cache {:.0} ms, warm cache {:.0} ms and {:.0} ms",
        ms(took[0]),
        ms(took[1]),
        ms(took[2])
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
