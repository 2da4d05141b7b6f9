//! Reload benchmark, through the library as `serve --watch` uses it:
//! - time from a module file's write (by rename, as build tools do) to the new version serving,
//!   with the file alternating between two digests (both in the compile cache after the first
//!   round: a rebuild that reproduces a known build), and with a new digest every time (a real
//!   rebuild: Cranelift runs). Both include the watcher's 300 ms debounce;
//! - cold start, `Sandbox::load` of the console logger: empty compile cache, warm cache (a
//!   restart), and no cache at all;
//! - dispatch latency of a gate (`Dispatcher::submit`, sequential) without reloads, and while
//!   that same gate is reloaded back to back (from the cache, and compiling every version).
//!
//! Run: `cargo xtask build-guests && cargo bench -p hookwasm --bench reload`. It prints a table;
//! it asserts nothing about speed (figures go to BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hookwasm::app::App;
use hookwasm::config::{Capabilities, Config, HandlerSpec};
use hookwasm::dispatch::{Backpressure, Dispatcher};
use hookwasm::event::Event;
use hookwasm::limits::Limits;
use hookwasm::reload::Reloader;
use hookwasm::sandbox::Sandbox;
use sha2::{Digest as _, Sha256};

/// Reloads timed from write to serving, per case.
const RELOADS: usize = 20;
/// Reloads timed when each one compiles: slower, fewer.
const COMPILING_RELOADS: usize = 10;
/// Cold starts per case.
const COLD_RUNS: usize = 7;
/// Gate submissions measured without reloads.
const DISPATCH_SAMPLES: usize = 5_000;
/// Submissions before measuring.
const WARMUP: usize = 200;
/// How long a swap may take before the benchmark gives up.
const SWAP_DEADLINE: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let logger = read_guest("plugins/console-logger.wasm")?;
    let chaos = read_guest("tests/guests/chaos.wasm")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "hookwasm reload benchmark ({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<52} {:>6} {:>10} {:>10} {:>10}",
        "case", "n", "p50 ms", "p99 ms", "max ms"
    );

    let (known, fresh) = runtime.block_on(write_to_serving(&logger))?;
    row_ms("write -> serving, 2 digests alternating (cached)", known);
    row_ms("write -> serving, a new digest each time (compile)", fresh);

    let (empty, warm, none) = cold_starts(&logger)?;
    row_ms("cold start: Sandbox::load, empty compile cache", empty);
    row_ms("cold start: Sandbox::load, warm compile cache", warm);
    row_ms("cold start: Sandbox::load, no compile cache", none);

    println!();
    println!(
        "{:<52} {:>6} {:>10} {:>10} {:>10}",
        "gate dispatch (Dispatcher::submit, sequential)", "n", "p50 µs", "p99 µs", "max µs"
    );
    let quiet = runtime.block_on(dispatch_latency(&chaos, Reloads::None))?;
    row_us("no reload", quiet.latencies);
    for (name, reloads) in [
        ("reloaded back to back, from the cache", Reloads::Cached),
        ("reloaded back to back, compiling", Reloads::Compiling),
    ] {
        let run = runtime.block_on(dispatch_latency(&chaos, reloads))?;
        row_us(&format!("{name} ({} reloads)", run.reloads), run.latencies);
    }
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_guest(relative: &str) -> anyhow::Result<Vec<u8>> {
    let path = workspace().join(relative);
    std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; run `cargo xtask build-guests` first",
            path.display()
        )
    })
}

/// `component` with a custom section appended: the same program under another digest.
fn variant(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"hookwasm-bench";
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name);
    contents.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a temporary file in the same folder and renames it over `path`.
fn write_by_rename(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// A folder with `module.wasm` holding `bytes` and a config naming it as handler `h`, with
/// `mode`; the loaded dispatcher and a reloader for it.
struct Setup {
    dir: tempfile::TempDir,
    dispatcher: Arc<Dispatcher>,
    reloader: Arc<Reloader>,
}

impl Setup {
    async fn new(bytes: &[u8], mode: &str, config: serde_json::Value) -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("module.wasm"), bytes)?;
        let config_path = dir.path().join("proxy.config.json");
        let text = serde_json::json!({ "eventHandlers": [{
            "name": "h", "module": "module.wasm", "mode": mode, "config": config,
            "queueCapacity": 100_000,
        }]});
        std::fs::write(&config_path, text.to_string())?;
        // The host as `serve` starts it, with its compile cache in the bench's folder.
        let app = App::builder(Config::load(&config_path)?)
            .store(Arc::new(hookwasm::outbox::sqlite::SqliteStore::in_memory()?))
            .cache_dir(&dir.path().join("cache"))
            .open()
            .await?;
        app.start_delivering();
        let (dispatcher, reloader) = (app.dispatcher().clone(), app.reloader().clone());
        Ok(Setup {
            dir,
            dispatcher,
            reloader,
        })
    }

    fn module(&self) -> PathBuf {
        self.dir.path().join("module.wasm")
    }

    fn serving(&self) -> String {
        self.dispatcher
            .slot("h")
            .map(|slot| slot.version().handler.digest().to_owned())
            .unwrap_or_default()
    }

    /// Writes `bytes` and waits until they serve; returns the time from the write.
    async fn swap(&self, bytes: &[u8]) -> anyhow::Result<Duration> {
        let wanted = digest(bytes);
        let started = Instant::now();
        write_by_rename(&self.module(), bytes)?;
        while self.serving() != wanted {
            anyhow::ensure!(
                started.elapsed() < SWAP_DEADLINE,
                "the new version did not serve within {SWAP_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(started.elapsed())
    }
}

/// Time from write to serving, alternating two digests, then with a new digest each time.
async fn write_to_serving(logger: &[u8]) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let setup = Setup::new(logger, "observe", serde_json::Value::Null).await?;
    let watcher = tokio::spawn(setup.reloader.clone().watch()?);
    let versions = [logger.to_vec(), variant(logger, "b")];
    // Write until the watcher sees a change; this also puts the second digest in the compile
    // cache.
    let wanted = digest(&versions[1]);
    'live: loop {
        write_by_rename(&setup.module(), &versions[1])?;
        let written = Instant::now();
        while written.elapsed() < Duration::from_secs(5) {
            if setup.serving() == wanted {
                break 'live;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut known = Vec::with_capacity(RELOADS);
    for i in 0..RELOADS {
        known.push(setup.swap(&versions[i % 2]).await?);
    }
    let mut fresh = Vec::with_capacity(COMPILING_RELOADS);
    for i in 0..COMPILING_RELOADS {
        fresh.push(setup.swap(&variant(logger, &format!("fresh {i}"))).await?);
    }
    watcher.abort();
    Ok((known, fresh))
}

/// `Sandbox::load` of the console logger: empty cache, warm cache (a new engine on the folder
/// the first load filled, as after a restart), no cache.
#[allow(clippy::type_complexity)]
fn cold_starts(logger: &[u8]) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    let dir = tempfile::tempdir()?;
    let module = dir.path().join("console-logger.wasm");
    std::fs::write(&module, logger)?;
    let spec = HandlerSpec::for_module(
        &module,
        serde_json::Value::Null,
        Limits::default(),
        Capabilities::default(),
    );
    let (mut empty, mut warm, mut none) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..COLD_RUNS {
        let cache = dir.path().join(format!("cache-{run}"));
        let sandbox = Sandbox::new()?.with_cache(&cache);
        let started = Instant::now();
        sandbox.load(&spec)?;
        empty.push(started.elapsed());

        let sandbox = Sandbox::new()?.with_cache(&cache);
        let started = Instant::now();
        sandbox.load(&spec)?;
        warm.push(started.elapsed());

        let sandbox = Sandbox::new()?;
        let started = Instant::now();
        sandbox.load(&spec)?;
        none.push(started.elapsed());
    }
    Ok((empty, warm, none))
}

/// What happens to the gate while it is being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reloads {
    /// Nothing.
    None,
    /// Its module alternates between two digests, reloaded as fast as reloads go (compiled
    /// components come from the cache).
    Cached,
    /// A new digest every reload: each compiles.
    Compiling,
}

struct DispatchRun {
    latencies: Vec<Duration>,
    reloads: usize,
}

/// Sequential gate submissions; with reloads, they run until the reloader has swapped the gate
/// enough times.
async fn dispatch_latency(chaos: &[u8], reloads: Reloads) -> anyhow::Result<DispatchRun> {
    let setup = Setup::new(chaos, "gate", serde_json::json!({ "behavior": "ok" })).await?;
    for i in 0..WARMUP {
        submit(&setup.dispatcher, i).await?;
    }
    let wanted_reloads = match reloads {
        Reloads::None => 0,
        Reloads::Cached => RELOADS,
        Reloads::Compiling => COMPILING_RELOADS / 2,
    };
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reloading = (reloads != Reloads::None).then(|| {
        let (reloader, module, done, stop) = (
            setup.reloader.clone(),
            setup.module(),
            done.clone(),
            stop.clone(),
        );
        let chaos = chaos.to_vec();
        let cached = [chaos.clone(), variant(&chaos, "b")];
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let bytes = match reloads {
                    Reloads::Compiling => variant(&chaos, &format!("compile {i}")),
                    _ => cached[(i + 1) % 2].clone(),
                };
                write_by_rename(&module, &bytes)?;
                let summary = reloader.reload().await;
                anyhow::ensure!(summary.failed.is_empty(), "{:?}", summary.failed);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        })
    });
    let mut latencies = Vec::new();
    let mut i = WARMUP;
    loop {
        let finished = match reloads {
            Reloads::None => latencies.len() >= DISPATCH_SAMPLES,
            _ => done.load(Ordering::Relaxed) >= wanted_reloads,
        };
        if finished {
            break;
        }
        let started = Instant::now();
        submit(&setup.dispatcher, i).await?;
        latencies.push(started.elapsed());
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(task) = reloading {
        task.await??;
    }
    Ok(DispatchRun {
        latencies,
        reloads: done.load(Ordering::Relaxed),
    })
}

async fn submit(dispatcher: &Dispatcher, i: usize) -> anyhow::Result<()> {
    let decisions = dispatcher
        .submit(&[event(i)], Backpressure::Wait)
        .await
        .map_err(anyhow::Error::msg)?;
    let status = decisions
        .first()
        .and_then(|d| d.gates.first())
        .map(|report| report.status);
    anyhow::ensure!(
        status == Some(hookwasm::sandbox::Status::Ok),
        "the gate did not run ok: {status:?}"
    );
    Ok(())
}

fn event(i: usize) -> Event {
    let json = serde_json::json!({
        "specversion": "1.0", "id": format!("bench-{i}"), "source": "bench", "type": "git.branch.updated",
        "data": {
            "pushId": "p1", "ref": "refs/heads/main", "before": "a1", "after": "b2",
            "repository": { "url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets" },
            "pusher": { "username": "ada", "email": "ada@example.com" }
        }
    });
    Event::from_json(json).expect("the benchmark event is valid")
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

fn row(name: &str, mut samples: Vec<Duration>, scale: f64, decimals: usize) {
    samples.sort();
    let at = |q: f64| -> String {
        if samples.is_empty() {
            return "-".into();
        }
        format!("{:.decimals$}", quantile(&samples, q).as_secs_f64() * scale)
    };
    println!(
        "{name:<52} {:>6} {:>10} {:>10} {:>10}",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn row_ms(name: &str, samples: Vec<Duration>) {
    row(name, samples, 1e3, 1);
}

fn row_us(name: &str, samples: Vec<Duration>) {
    row(name, samples, 1e6, 0);
}
