//! hookwasm against its peer, in one interleaved run: the same handler logic (parse the event's
//! JSON, return a string: `tests/guests/bench/src/logic.rs`, compiled into both guests) on the
//! same events of 0.5 KiB, 4 KiB, 64 KiB and 1 MiB, through
//! - hookwasm's default path: a fresh store and instance per event, fuel, epoch deadline and
//!   memory cap on (`tests/guests/bench.wasm`, `realistic`);
//! - Extism 1.30 with one long-lived plugin (nothing isolated between events, no fuel);
//! - Extism with a new plugin per event, from a `CompiledPlugin` (compiled once).
//!
//! The cases take turns: each repetition runs every case once for every size, so a change in the
//! machine's load hits all of them alike. Each figure is the median over the repetitions of the
//! mean time per event; a ratio is hookwasm's time divided by the peer's (below 1: hookwasm is
//! faster). Bounded: at most `BUDGET` per case and repetition.
//!
//! Run: `cargo xtask bench-peers` (builds both guests first).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use hookwasm::config::{Capabilities, HandlerSpec, Limits};
use hookwasm::event::Event;
use hookwasm::sandbox::{Handler, Sandbox, Status};
use serde_json::{Value, json};

/// Event sizes, in bytes of CloudEvent JSON.
const SIZES: [usize; 4] = [512, 4 << 10, 64 << 10, 1 << 20];
/// Repetitions of the whole round (every case, every size).
const REPS: usize = 5;
/// Longest one case may run in one repetition.
const BUDGET: Duration = Duration::from_millis(400);
/// Most events per case and repetition (the budget usually ends the big sizes first).
const EVENTS: usize = 2_000;
/// Untimed events per case and size before the first repetition.
const WARMUP: usize = 50;

/// The three ways of running an event, in the order they take turns.
const CASES: [&str; 3] = [
    "hookwasm (fresh, limits on)",
    "Extism long-lived",
    "Extism new plugin/event",
];

fn main() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let bench_wasm = workspace.join("tests/guests/bench.wasm");
    let extism_wasm = std::env::var_os("PEERS_EXTISM_GUEST").map_or_else(
        || workspace.join("target/guests/wasm32-wasip1/guest/peers_extism_guest.wasm"),
        PathBuf::from,
    );
    for path in [&bench_wasm, &extism_wasm] {
        anyhow::ensure!(
            path.exists(),
            "{} is missing: run `cargo xtask bench-peers`, which builds both guests",
            path.display()
        );
    }
    println!(
        "peers: hookwasm (wasmtime 48) vs Extism 1.30 (wasmtime 43), {} CPUs, load average {} at start, release build",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spec = HandlerSpec::for_module(
        &bench_wasm,
        json!({ "behavior": "realistic" }),
        Limits::default(),
        Capabilities::default(),
    );
    let handler = Sandbox::new()?.load(&spec)?;
    runtime.block_on(handler.init())?;

    let manifest = Manifest::new([Wasm::data(std::fs::read(&extism_wasm)?)]);
    let compiled = CompiledPlugin::new(PluginBuilder::new(manifest).with_wasi(true))?;
    let mut long_lived = Plugin::new_from_compiled(&compiled)?;

    let events: Vec<Event> = SIZES
        .iter()
        .map(|&size| event_of(size))
        .collect::<Result<_, _>>()?;
    // times[size][case][rep]: mean µs per event.
    let mut times = vec![vec![Vec::with_capacity(REPS); CASES.len()]; SIZES.len()];
    for rep in 0..=REPS {
        for (s, event) in events.iter().enumerate() {
            let json = event.wit().json.as_str();
            let events = if rep == 0 { WARMUP } else { EVENTS };
            let budget = if rep == 0 { BUDGET * 2 } else { BUDGET };
            let hookwasm = runtime.block_on(time_async(events, budget, async || {
                let invocation = handler.on_event(event).await;
                anyhow::ensure!(
                    invocation.status == Status::Ok,
                    "hookwasm, {} bytes: {} ({:?})",
                    json.len(),
                    invocation.status,
                    invocation.error
                );
                Ok(())
            }))?;
            let extism_long = time(events, budget, || {
                let out = long_lived.call::<&str, &str>("on_event", json)?;
                anyhow::ensure!(out.len() > 1024, "Extism answered {out:?}");
                Ok(())
            })?;
            let extism_new = time(events, budget, || {
                let mut plugin = Plugin::new_from_compiled(&compiled)?;
                let out = plugin.call::<&str, &str>("on_event", json)?;
                anyhow::ensure!(out.len() > 1024, "Extism answered {out:?}");
                Ok(())
            })?;
            if rep > 0 {
                for (c, us) in [hookwasm, extism_long, extism_new].into_iter().enumerate() {
                    times[s][c].push(us);
                }
            }
        }
    }
    check_same_answer(&handler, &runtime, &mut long_lived, &events[0])?;

    println!(
        "\n  {:>9} {:>14} {:>14} {:>8} {:>16} {:>8}",
        "event", "hookwasm µs", "Extism long µs", "ratio", "Extism new µs", "ratio"
    );
    let mut rows = Vec::new();
    for (s, &size) in SIZES.iter().enumerate() {
        let [ours, long, new] = [0, 1, 2].map(|c| median(&mut times[s][c]));
        println!(
            "  {:>9} {ours:>14.2} {long:>14.2} {:>7.2}× {new:>16.2} {:>7.2}×",
            human(size),
            ours / long,
            ours / new
        );
        rows.push(json!({
            "eventBytes": events[s].wit().json.len(),
            "hookwasmUs": round(ours), "extismLongLivedUs": round(long),
            "extismNewPluginUs": round(new),
            "ratioToLongLived": round(ours / long), "ratioToNewPlugin": round(ours / new),
            "repsUs": times[s],
        }));
    }
    println!(
        "  (µs per event: median of {REPS} interleaved repetitions' means; ratio = hookwasm ÷ Extism, below 1 is faster)"
    );
    let out = workspace.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let path = out.join("peers.json");
    let document = json!({ "loadAverageAtEnd": load_average(), "cases": CASES, "rows": rows });
    std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
    println!("\nfigures written to {}", path.display());
    Ok(())
}

/// A `git.branch.updated` CloudEvent of `size` bytes of JSON: the fields the logic reads, and a
/// `data.padding` string it skips (so parsing reads the whole event).
fn event_of(size: usize) -> anyhow::Result<Event> {
    let base = |padding: &str| -> Value {
        json!({
            "specversion": "1.0", "id": "peer-1", "source": "bench", "type": "git.branch.updated",
            "time": "2026-01-01T00:00:00Z",
            "data": {
                "pushId": "p1", "ref": "refs/heads/main",
                "before": "9fceb02d0ae598e95dc970b74767f19372d61af8",
                "after": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                "repository": { "url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets" },
                "pusher": { "username": "ada", "email": "ada@example.com" },
                "padding": padding,
            }
        })
    };
    let without = Event::from_json(base(""))?.wit().json.len();
    let padding = "x".repeat(size.saturating_sub(without));
    Ok(Event::from_json(base(&padding))?)
}

/// Both runtimes ran the same logic: Extism's string is the repository and hookwasm's summary.
fn check_same_answer(
    handler: &Handler,
    runtime: &tokio::runtime::Runtime,
    plugin: &mut Plugin,
    event: &Event,
) -> anyhow::Result<()> {
    let invocation = runtime.block_on(handler.on_event(event));
    let outcome = invocation
        .outcome
        .ok_or_else(|| anyhow::anyhow!("hookwasm gave no outcome: {:?}", invocation.error))?;
    let annotations: Vec<String> = outcome.annotations.iter().map(|(_, v)| v.clone()).collect();
    let extism = plugin.call::<&str, String>("on_event", event.wit().json.as_str())?;
    anyhow::ensure!(
        extism == annotations.join("\n"),
        "hookwasm and Extism disagree: {annotations:?} vs {extism:?}"
    );
    Ok(())
}

/// Mean µs per call of `f`, over up to `events` calls or `budget`.
fn time(
    events: usize,
    budget: Duration,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < events && (done == 0 || started.elapsed() < budget) {
        f()?;
        done += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
}

async fn time_async(
    events: usize,
    budget: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < events && (done == 0 || started.elapsed() < budget) {
        f().await?;
        done += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
