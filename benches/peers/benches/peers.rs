//! hookwasm against its peer, in one interleaved run: the same handler logic (parse the event's
//! JSON, return a string: `tests/guests/bench/src/logic.rs`, compiled into both guests) on the
//! same events of 0.5 KiB, 4 KiB, 64 KiB and 1 MiB, and the trivial handler on the 0.5 KiB one,
//! through
//! - hookwasm's default path: `Handler::on_event`, a fresh store and instance per event, fuel,
//!   epoch deadline and memory cap on (`tests/guests/bench.wasm`), called twice over: from
//!   another thread, as a gate's producer calls it (the invocation crosses to the sandbox's
//!   runtime and back), and in place, on the sandbox's runtime, as an observer's worker does;
//! - Extism 1.30 with one long-lived plugin (nothing isolated between events, no fuel);
//! - Extism with a new plugin per event, from a `CompiledPlugin` (compiled once).
//!
//! The cases take turns: each repetition runs every case once for every row, the four cases of
//! a row back to back in an order that rotates from one repetition to the next, so a change in
//! the machine's load hits all of them alike. A case's figure is the median over the repetitions
//! of its mean time per event; a ratio is the median over the repetitions of hookwasm's time
//! divided by the peer's in the same repetition (below 1: hookwasm is faster), with its range.
//! Bounded: each case runs `BLOCK` (at least `MIN_EVENTS` events) per repetition.
//!
//! Run: `cargo xtask bench-peers` (builds both guests first).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use hookwasm::config::{Capabilities, HandlerSpec, Mode};
use hookwasm::event::Event;
use hookwasm::limits::Limits;
use hookwasm::sandbox::{FUEL_PER_EVENT_BYTE, Handler, Sandbox, Status};
use hookwasm::wit::Verdict;
use serde_json::{Value, json};

/// Event sizes of the realistic rows, in bytes of CloudEvent JSON.
const SIZES: [usize; 4] = [512, 4 << 10, 64 << 10, 1 << 20];
/// Timed repetitions of the whole round (every case, every row), after one warm-up round.
const REPS: usize = 11;
/// How long one case runs in one repetition.
const BLOCK: Duration = Duration::from_millis(120);
/// Fewest events one case runs in one repetition (the 1 MiB rows take milliseconds each).
const MIN_EVENTS: usize = 5;

/// The four ways of running an event. They take turns in this order, rotated by one each
/// repetition.
const CASES: [&str; 4] = [
    "hookwasm (fresh, limits on)",
    "Extism long-lived",
    "Extism new plugin/event",
    "hookwasm in place (fresh, limits on, called on the sandbox's runtime)",
];

/// What the handler does: hookwasm's bench guest config and the Extism plugin's export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behavior {
    /// Parse the event's JSON, return the repository and a 1 KiB summary.
    Realistic,
    /// Take the event, return nothing: the runtime's own cost per call.
    Trivial,
}

impl Behavior {
    fn name(self) -> &'static str {
        match self {
            Behavior::Realistic => "realistic",
            Behavior::Trivial => "trivial",
        }
    }

    fn extism_export(self) -> &'static str {
        match self {
            Behavior::Realistic => "on_event",
            Behavior::Trivial => "trivial",
        }
    }
}

/// One row of the table: a behaviour on an event, and the hookwasm handler that runs it.
struct Row {
    behavior: Behavior,
    event: Event,
    handler: Handler,
    /// The fuel the hookwasm handler has (the default, or what the host needs to accept the event).
    fuel: u64,
}

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
    let load_at_start = load_average();
    println!(
        "peers: hookwasm (wasmtime 48) vs Extism 1.30 (wasmtime 43), {} CPUs, load average {load_at_start} at start, release build",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sandbox = Sandbox::new()?;
    let mut rows = Vec::new();
    let workloads = SIZES
        .iter()
        .map(|&size| (Behavior::Realistic, size))
        .chain([(Behavior::Trivial, SIZES[0])]);
    for (behavior, size) in workloads {
        let event = event_of(size)?;
        let limits = limits_for(&event);
        let mut spec = HandlerSpec::for_module(
            &bench_wasm,
            json!({ "behavior": behavior.name() }),
            limits,
            Capabilities::default(),
        );
        // A gate: its invocations run at the server's priority. Observers run at nice 10
        // (`sandbox/runner.rs`), which on a shared machine would time the scheduler, not the
        // sandbox, against Extism on this thread at nice 0.
        spec.mode = Mode::Gate;
        let handler = sandbox.load(&spec)?;
        runtime.block_on(handler.init())?;
        rows.push(Row {
            behavior,
            event,
            handler,
            fuel: limits.fuel,
        });
    }

    // Compiled once, outside the timing; no compile cache on disk (Extism's default would write
    // one under the home folder).
    let manifest = Manifest::new([Wasm::data(std::fs::read(&extism_wasm)?)]);
    let compiled = CompiledPlugin::new(
        PluginBuilder::new(manifest)
            .with_wasi(true)
            .with_cache_disabled(),
    )?;
    let mut long_lived = Plugin::new_from_compiled(&compiled)?;

    for row in &rows {
        check_same_answer(row, &runtime, &mut long_lived)?;
    }

    // times[row][case][rep]: mean µs per event.
    let mut times = vec![vec![Vec::with_capacity(REPS); CASES.len()]; rows.len()];
    // inside[row][rep]: mean µs of hookwasm's own `Invocation::duration` (store, instance and
    // call, on the sandbox's thread): the rest of its time is the hand-off between threads,
    // the wait to be scheduled and the teardown.
    let mut inside = vec![Vec::with_capacity(REPS); rows.len()];
    for rep in 0..=REPS {
        for (r, row) in rows.iter().enumerate() {
            let json = row.event.wit().json.as_str();
            let export = row.behavior.extism_export();
            let mut taken = [0.0; CASES.len()];
            let (mut in_sandbox, mut invocations) = (Duration::ZERO, 0u32);
            for turn in 0..CASES.len() {
                let case = (turn + rep) % CASES.len();
                taken[case] = match case {
                    0 => runtime.block_on(time_async(async || {
                        let invocation = row.handler.on_event(&row.event).await;
                        in_sandbox += invocation.duration;
                        invocations += 1;
                        anyhow::ensure!(
                            invocation.status == Status::Ok,
                            "hookwasm, {} bytes: {} ({:?})",
                            json.len(),
                            invocation.status,
                            invocation.error
                        );
                        Ok(())
                    }))?,
                    // As an observer's worker calls it: already on the sandbox's runtime, so the
                    // invocation runs in place, with no hand-off between threads.
                    3 => {
                        let in_place = time_in_place(row.handler.clone(), row.event.clone());
                        let on_the_sandbox = hookwasm::sandbox::runtime(Mode::Gate).spawn(in_place);
                        runtime.block_on(on_the_sandbox)??
                    }
                    1 => time(|| {
                        long_lived.call::<&str, &str>(export, json)?;
                        Ok(())
                    })?,
                    _ => time(|| {
                        let mut plugin = Plugin::new_from_compiled(&compiled)?;
                        plugin.call::<&str, &str>(export, json)?;
                        Ok(())
                    })?,
                };
            }
            // Round 0 warms every case up (pool slots, caches, the timer thread) and is not kept.
            if rep > 0 {
                for (case, us) in taken.into_iter().enumerate() {
                    times[r][case].push(us);
                }
                inside[r].push(in_sandbox.as_secs_f64() * 1e6 / f64::from(invocations));
            }
        }
    }

    println!(
        "\n  {:<10} {:>8} {:>9} {:>11} {:>12} {:>19} {:>12} {:>19} {:>9} {:>19}",
        "handler",
        "event",
        "hookwasm",
        "in sandbox",
        "Extism long",
        "ratio (range)",
        "Extism new",
        "ratio (range)",
        "in place",
        "ratio to long"
    );
    let mut document_rows = Vec::new();
    for ((row, times), inside) in rows.iter().zip(&times).zip(&inside) {
        let [ours, long, new, in_place] = [0, 1, 2, 3].map(|c| median(&times[c]));
        let ours_inside = median(inside);
        let to_long = ratios(&times[0], &times[1]);
        let to_new = ratios(&times[0], &times[2]);
        let in_place_to_long = ratios(&times[3], &times[1]);
        let bytes = row.event.wit().json.len();
        println!(
            "  {:<10} {:>8} {:>7.2}µs {:>9.2}µs {:>10.2}µs {:>19} {:>10.2}µs {:>19} {:>7.2}µs {:>19}",
            row.behavior.name(),
            human(bytes),
            ours,
            ours_inside,
            long,
            to_long.show(),
            new,
            to_new.show(),
            in_place,
            in_place_to_long.show(),
        );
        document_rows.push(json!({
            "handler": row.behavior.name(),
            "eventBytes": bytes,
            "hookwasmFuel": row.fuel,
            "hookwasmUs": round(ours),
            "hookwasmInSandboxUs": round(ours_inside),
            "extismLongLivedUs": round(long),
            "extismNewPluginUs": round(new),
            "ratioToLongLived": to_long.json(),
            "ratioToNewPlugin": to_new.json(),
            "hookwasmInPlaceUs": round(in_place),
            "inPlaceRatioToLongLived": in_place_to_long.json(),
            "repsUs": times,
        }));
    }
    let load_at_end = load_average();
    println!(
        "  (µs per event: median of {REPS} interleaved repetitions' means; hookwasm: called from another thread, as a gate's producer calls it; in sandbox: its Invocation::duration, store + instance + call; in place: called on the sandbox's runtime, as an observer's worker calls it; ratio: median of the repetitions' hookwasm ÷ Extism, min–max in brackets; below 1, hookwasm is faster)\n  load average {load_at_end} at the end"
    );
    let out = workspace.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let path = out.join("peers.json");
    let document = json!({
        "loadAverageAtStart": load_at_start,
        "loadAverageAtEnd": load_at_end,
        "reps": REPS,
        "blockMs": BLOCK.as_millis(),
        "cases": CASES,
        "rows": document_rows,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
    println!("\nfigures written to {}", path.display());
    Ok(())
}

/// hookwasm's default limits, with fuel raised to what the host asks for before it gives a
/// handler an event this big (`max_event_bytes`: 128 fuel per byte, so 1 MiB needs ~134 M; the
/// default 50 M covers 381 KiB). The budget does not change what metering costs per instruction.
fn limits_for(event: &Event) -> Limits {
    let needed = event.wit().json.len() as u64 * FUEL_PER_EVENT_BYTE;
    Limits {
        fuel: Limits::DEFAULT.fuel.max(needed),
        ..Limits::DEFAULT
    }
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
    let event = Event::from_json(base(&padding))?;
    anyhow::ensure!(
        event.wit().json.len() == size,
        "the {size}-byte event came out {} bytes",
        event.wit().json.len()
    );
    Ok(event)
}

/// Both runtimes ran the same logic on this row's event: Extism's string is hookwasm's
/// annotations, one per line (none for the trivial handler), and hookwasm allowed.
fn check_same_answer(
    row: &Row,
    runtime: &tokio::runtime::Runtime,
    plugin: &mut Plugin,
) -> anyhow::Result<()> {
    let json = row.event.wit().json.as_str();
    let invocation = runtime.block_on(row.handler.on_event(&row.event));
    let outcome = invocation.outcome.ok_or_else(|| {
        anyhow::anyhow!(
            "hookwasm ({}, {} bytes) gave no outcome: {} {:?}",
            row.behavior.name(),
            json.len(),
            invocation.status,
            invocation.error
        )
    })?;
    anyhow::ensure!(
        matches!(outcome.verdict, Verdict::Allow),
        "hookwasm ({}) did not allow: {:?}",
        row.behavior.name(),
        outcome.verdict
    );
    let annotations: Vec<&str> = outcome
        .annotations
        .iter()
        .map(|(_, v)| v.as_str())
        .collect();
    let extism = plugin.call::<&str, String>(row.behavior.extism_export(), json)?;
    anyhow::ensure!(
        extism == annotations.join("\n"),
        "hookwasm and Extism disagree ({}, {} bytes): {annotations:?} vs {extism:?}",
        row.behavior.name(),
        json.len()
    );
    anyhow::ensure!(
        (row.behavior == Behavior::Realistic) == (extism.len() > 1024),
        "the {} handler answered {} bytes",
        row.behavior.name(),
        extism.len()
    );
    Ok(())
}

/// Mean µs per call of `f`, calling it for `BLOCK` and at least `MIN_EVENTS` times.
fn time(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < MIN_EVENTS || started.elapsed() < BLOCK {
        f()?;
        done += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
}

/// [`time`] for an async `f`, polled on the caller's runtime.
/// [`time_async`] of hookwasm's `on_event`, written out with owned arguments: an async closure
/// that borrows them cannot be sent to a task on the sandbox's runtime.
async fn time_in_place(handler: Handler, event: Event) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < MIN_EVENTS || started.elapsed() < BLOCK {
        let invocation = handler.on_event(&event).await;
        anyhow::ensure!(
            invocation.status == Status::Ok,
            "hookwasm in place: {} ({:?})",
            invocation.status,
            invocation.error
        );
        done += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
}

async fn time_async(mut f: impl AsyncFnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0;
    while done < MIN_EVENTS || started.elapsed() < BLOCK {
        f().await?;
        done += 1;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / done as f64)
}

/// The repetitions' ratios of `ours` to `theirs`, each from the same repetition (so from blocks
/// run back to back, under the same load).
#[derive(Debug)]
struct Ratios {
    median: f64,
    min: f64,
    max: f64,
}

fn ratios(ours: &[f64], theirs: &[f64]) -> Ratios {
    let each: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a / b).collect();
    Ratios {
        median: median(&each),
        min: each.iter().copied().fold(f64::INFINITY, f64::min),
        max: each.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

impl Ratios {
    fn show(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.median, self.min, self.max)
    }

    fn json(&self) -> Value {
        json!({ "median": round(self.median), "min": round(self.min), "max": round(self.max) })
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
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
