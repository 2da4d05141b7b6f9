//! The performance suite: what a handler invocation costs, from the native floor to a producer's
//! `POST /v1/events`, for a trivial and a realistic handler (`tests/guests/bench`).
//!
//! Sections (run all, or name some: `cargo bench -p hookwasm --bench perf -- direct http`):
//! - `direct`: one invocation at a time through `hookwasm::sandbox`: the same logic natively (the
//!   floor), one reused instance (reference only), and a fresh store + instance per event (the
//!   default) with the on-demand and the pooling allocator, with and without keeping dirty
//!   pages resident, with and without fuel + epoch deadlines; and the default on every core.
//! - `http`: the real `hookwasm serve` binary on 127.0.0.1, one observer or one gate, driven by
//!   the load generator below at its maximum rate, then open-loop at half that rate.
//! - `fanout`: 1, 10 and 100 handlers subscribed to the same event, as gates and as observers.
//! - `ingest`: one observer behind the durable outbox, 32 clients posting one event each at the
//!   maximum rate, then open loop at half of it, then batches of 100 (issue 18's targets).
//! - `memory`: the server's RSS after loading 1, 10 and 100 handlers, and after traffic; and
//!   `start`'s 1,000 handlers.
//! - `start`: `serve` with 100 handlers from spawn to `/readyz` 200 (compile cache warm), and
//!   1,000 handlers: the same time and the RSS.
//! - `profile` (never run by default): the default path alone for 10 s, to run under
//!   `perf record`.
//!
//! It prints a table and writes the same figures as JSON to `target/bench/perf.json`. Every loop
//! is bounded in count and in time; the whole suite takes about a minute and a half. It asserts nothing
//! about speed: the figures go to BENCHMARKS.md.
//!
//! Run: `cargo xtask build-guests && cargo bench -p hookwasm --bench perf`.

#[path = "../../tests/guests/bench/src/logic.rs"]
#[allow(dead_code)]
mod logic;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hookwasm::config::{Capabilities, HandlerSpec, Mode};
use hookwasm::event::Event;
use hookwasm::limits::Limits;
use hookwasm::sandbox::{Handler, Sandbox, Status, Tuning};
use serde_json::{Value, json};

/// Invocations before measuring, per direct case.
const DIRECT_WARMUP: usize = 2_000;
/// Measured invocations per direct case.
const DIRECT_SAMPLES: usize = 20_000;
/// Longest a direct case may run.
const DIRECT_BUDGET: Duration = Duration::from_secs(4);
/// Keep-alive connections of the load generator.
const CLIENTS: usize = 4;
/// Concurrent keep-alive connections in the wide observer case.
const WIDE_CLIENTS: usize = 32;
/// Requests before measuring, per HTTP case.
const HTTP_WARMUP: usize = 500;
/// Most requests per HTTP case.
const HTTP_REQUESTS: usize = 40_000;
/// Longest an HTTP case may run (the open-loop one runs exactly this long, or to its count).
const HTTP_BUDGET: Duration = Duration::from_secs(5);
/// Events per POST in the batched observer case.
const BATCH: usize = 100;
/// Longest the suite waits for observers to finish their queues.
const DRAIN_BUDGET: Duration = Duration::from_secs(20);
/// How long `hookwasm serve` may take to load its handlers.
const STARTUP_BUDGET: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    let bench = Bench::new()?;
    println!(
        "hookwasm perf: {} CPUs, load average {} at start, wasmtime 48, release build",
        cores(),
        load_average()
    );
    let mut report = Report::default();
    if wanted("direct") {
        direct(&bench, &mut report)?;
    }
    // Not part of the suite: the default path alone for a while, to run under `perf record`.
    if sections.iter().any(|s| s == "profile") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let handler = Sandbox::new()?.load(&bench.spec("trivial"))?;
        let event = git_event(0);
        let started = Instant::now();
        // On the observers' sandbox runtime, where an observer's worker runs its invocations.
        let events =
            runtime.block_on(hookwasm::sandbox::runtime(Mode::Observe).spawn(async move {
                let mut events = 0u64;
                while started.elapsed() < Duration::from_secs(10) {
                    handler.on_event(&event).await;
                    events += 1;
                }
                events
            }))?;
        println!("{events} events in 10 s");
        return Ok(());
    }
    if wanted("http") {
        http(&bench, &mut report)?;
    }
    if wanted("stream") {
        stream(&bench, &mut report)?;
    }
    if wanted("ingest") {
        ingest(&bench, &mut report)?;
    }
    if wanted("fanout") || wanted("memory") {
        fanout(&bench, &mut report, wanted("fanout"))?;
    }
    if wanted("start") || wanted("memory") {
        start(&bench, &mut report)?;
    }
    report.write(&bench.out_dir)?;
    Ok(())
}

/// Where things are.
struct Bench {
    workspace: PathBuf,
    module: PathBuf,
    binary: PathBuf,
    out_dir: PathBuf,
}

impl Bench {
    fn new() -> anyhow::Result<Bench> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .canonicalize()?;
        let module = workspace.join("tests/guests/bench.wasm");
        if !module.exists() {
            println!(
                "{} is missing: running `cargo xtask build-guests`",
                module.display()
            );
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["xtask", "build-guests"])
                .current_dir(&workspace)
                .status()?;
            anyhow::ensure!(status.success(), "`cargo xtask build-guests` failed");
        }
        let binary = std::env::var_os("HOOKWASM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hookwasm")));
        // `target/release/hookwasm` -> `target/bench`.
        let out_dir = binary
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| workspace.join("target"), Path::to_path_buf)
            .join("bench");
        std::fs::create_dir_all(&out_dir)?;
        Ok(Bench {
            workspace,
            module,
            binary,
            out_dir,
        })
    }

    fn spec(&self, behavior: &str) -> HandlerSpec {
        HandlerSpec::for_module(
            &self.module,
            json!({ "behavior": behavior }),
            Limits::default(),
            Capabilities::default(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// direct: the sandbox, one invocation at a time
// ---------------------------------------------------------------------------------------------

/// The sandbox settings measured, by name. The last is the default (`Tuning::default()`).
const TUNINGS: [(&str, Tuning); 6] = [
    ("on-demand", tuning(false, false, true)),
    ("on-demand, no fuel/deadline", tuning(false, false, false)),
    ("pooling", tuning(true, false, true)),
    ("pooling, no fuel/deadline", tuning(true, false, false)),
    (
        "pooling + keep-resident, no fuel/deadline",
        tuning(true, true, false),
    ),
    (
        "pooling + keep-resident (default)",
        tuning(true, true, true),
    ),
];

const fn tuning(pooling: bool, keep_resident: bool, metering: bool) -> Tuning {
    Tuning {
        metering,
        pooling,
        keep_resident,
    }
}

fn direct(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let event = git_event(0);
    for behavior in ["trivial", "realistic"] {
        let spec = bench.spec(behavior);
        report.heading(&format!(
            "direct, {behavior} handler: one event at a time, latency per event"
        ));

        let native = native_case(behavior, &event);
        report.row(native.named("direct", behavior, "native Rust (floor)"));

        let handler = Sandbox::new()?.load(&spec)?;
        let reused = runtime.block_on(reused_case(&handler, &event))?;
        report.row(reused.named("direct", behavior, "reused instance (reference)"));

        for (name, tuning) in TUNINGS {
            let handler = Sandbox::with_tuning(tuning)?.load(&spec)?;
            runtime.block_on(handler.init())?;
            let stats = runtime.block_on(as_an_observers_worker(&handler, &event))?;
            report.row(stats.named("direct", behavior, &format!("fresh: {name}")));
        }

        // The default again, called from the bench's own runtime: the invocation crosses to the
        // sandbox's threads and back, as a gate's producer waiting on the server does.
        let handler = Sandbox::new()?.load(&spec)?;
        let stats = runtime.block_on(fresh_case(&handler, &event))?;
        report.row(stats.named(
            "direct",
            behavior,
            "fresh: default, called from another runtime (a gate's producer)",
        ));

        // Every core busy: one task per core, each running events one after another.
        let handler = Sandbox::new()?.load(&spec)?;
        let stats = runtime.block_on(parallel_case(&handler, &event))?;
        report.row(stats.named(
            "direct",
            behavior,
            &format!("fresh: default, {} tasks at once", cores()),
        ));
    }
    Ok(())
}

fn native_case(behavior: &str, event: &Event) -> Stats {
    let config = format!(r#"{{"behavior":"{behavior}"}}"#);
    let json = event.wit().json.clone();
    measure(DIRECT_WARMUP, DIRECT_SAMPLES, DIRECT_BUDGET, || {
        // What the SDK's `on-event` does: read the config, then the handler's logic.
        let config: logic::Config = serde_json::from_str(black_box(&config)).expect("config");
        let annotations = match config.behavior {
            logic::Behavior::Trivial => Vec::new(),
            logic::Behavior::Realistic => logic::realistic(black_box(&json))
                .expect("realistic")
                .to_vec(),
        };
        black_box(annotations);
    })
}

async fn reused_case(handler: &Handler, event: &Event) -> anyhow::Result<Stats> {
    let mut instance = handler
        .reused_instance()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    measure_async(DIRECT_WARMUP, DIRECT_SAMPLES, DIRECT_BUDGET, async || {
        let outcome = instance
            .on_event(event)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        outcome.map_err(anyhow::Error::msg)?;
        Ok(())
    })
    .await
}

/// [`fresh_case`] run where the host runs an observer's invocations: on the sandbox's runtime
/// for observers, which the observer's worker lives on.
async fn as_an_observers_worker(handler: &Handler, event: &Event) -> anyhow::Result<Stats> {
    hookwasm::sandbox::runtime(Mode::Observe)
        .spawn(fresh_loop(handler.clone(), event.clone()))
        .await?
}

/// The loop of `measure_async` over fresh invocations, written out with owned arguments: its
/// async closure cannot be sent to a task on another runtime.
async fn fresh_loop(handler: Handler, event: Event) -> anyhow::Result<Stats> {
    for _ in 0..DIRECT_WARMUP {
        handler.on_event(&event).await;
    }
    let mut histogram = histogram();
    let started = Instant::now();
    for _ in 0..DIRECT_SAMPLES {
        let at = Instant::now();
        let invocation = handler.on_event(&event).await;
        record(&mut histogram, at.elapsed());
        anyhow::ensure!(invocation.status == Status::Ok, "{:?}", invocation.error);
        if started.elapsed() > DIRECT_BUDGET {
            break;
        }
    }
    Ok(Stats::from_histogram(&histogram, started.elapsed()))
}

async fn fresh_case(handler: &Handler, event: &Event) -> anyhow::Result<Stats> {
    measure_async(DIRECT_WARMUP, DIRECT_SAMPLES, DIRECT_BUDGET, async || {
        let invocation = handler.on_event(event).await;
        anyhow::ensure!(
            invocation.status == Status::Ok,
            "{}: {:?}",
            invocation.status,
            invocation.error
        );
        Ok(())
    })
    .await
}

async fn parallel_case(handler: &Handler, event: &Event) -> anyhow::Result<Stats> {
    let tasks: Vec<_> = (0..cores())
        .map(|_| {
            // Where observers' workers run, as in `as_an_observers_worker`.
            hookwasm::sandbox::runtime(Mode::Observe)
                .spawn(fresh_loop(handler.clone(), event.clone()))
        })
        .collect();
    let mut all = Stats::empty();
    for task in tasks {
        all.merge(task.await??);
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// http: the real server, one observer or one gate
// ---------------------------------------------------------------------------------------------

fn http(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    for mode in ["observe", "gate"] {
        let role = if mode == "gate" { "gate" } else { "observer" };
        report.heading(&format!(
            "http, one {role} (trivial): POST /v1/events on 127.0.0.1, {CLIENTS} keep-alive clients"
        ));
        let server = Server::start(bench, &handlers(bench, mode, "trivial", 1))?;
        let max = closed_loop(&server, 1, CLIENTS)?;
        let drained = server.wait_for_invocations(max.requests_sent, 1)?;
        let mut stats = max.stats.clone();
        if mode == "observe" {
            stats.note = format!(
                "accepted {:.0}/s; handled {:.0}/s (until every event ran){}",
                stats.events_per_s,
                drained.rate(stats.events, max.elapsed),
                drained.caveat()
            );
        }
        report.row(stats.named("http", role, "max rate (closed loop)"));
        let rate = max.stats.events_per_s / 2.0;
        let half = open_loop(&server, rate, CLIENTS)?;
        let half_events = half.events as u64;
        report.row(half.named("http", role, &format!("half rate, {rate:.0}/s (open loop)")));
        if mode == "observe" {
            let batched = closed_loop(&server, BATCH, CLIENTS)?;
            let drained = server
                .wait_for_invocations(max.requests_sent + half_events + batched.requests_sent, 1)?;
            let mut stats = batched.stats;
            stats.note = format!(
                "{BATCH} events per POST; latency is per POST; handled {:.0}/s{}",
                drained.rate(stats.events, batched.elapsed),
                drained.caveat()
            );
            report.row(stats.named("http", role, &format!("max rate, batches of {BATCH}")));
            // A durable accept waits for its commit, so 4 clients measure latency more than
            // throughput: with more of them in flight, group commit shares each fsync.
            let wide = closed_loop(&server, 1, WIDE_CLIENTS)?;
            let drained = server.wait_for_invocations(
                max.requests_sent + half_events + batched.requests_sent + wide.requests_sent,
                1,
            )?;
            let mut stats = wide.stats;
            stats.note = format!(
                "{WIDE_CLIENTS} clients; handled {:.0}/s{}",
                drained.rate(stats.events, wide.elapsed),
                drained.caveat()
            );
            report.row(stats.named(
                "http",
                role,
                &format!("max rate, {WIDE_CLIENTS} clients (closed loop)"),
            ));
        }
        server.stop();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ingest: what the durable outbox accepts over HTTP (issue 18's targets)
// ---------------------------------------------------------------------------------------------

/// Issue 18's ingest targets on this machine, for the notes.
const INGEST_TARGET_PER_S: f64 = 30_000.0;
const INGEST_BATCH_TARGET_PER_S: f64 = 150_000.0;
const INGEST_P99_TARGET_US: f64 = 2_000.0;

/// One trivial observer behind the durable outbox (SQLite, `sync: full`: every answer waits for
/// its fsynced commit): one event per POST from `WIDE_CLIENTS` connections at the maximum rate
/// (closed loop), then open loop from as many connections at half that rate and at half the
/// target, then batches of `BATCH`. The observer's queue is drained between cases, so each case
/// starts with the same work in the background (the observer delivering what that case accepts).
fn ingest(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    report.heading(&format!(
        "ingest: POST /v1/events, one trivial observer, durable outbox (sync: full), {WIDE_CLIENTS} keep-alive clients"
    ));
    let server = Server::start(bench, &handlers(bench, "observe", "trivial", 1))?;
    let mut sent = 0;
    let max = closed_loop(&server, 1, WIDE_CLIENTS)?;
    sent += max.requests_sent;
    let mut stats = max.stats.clone();
    stats.note = format!(
        "target >= {INGEST_TARGET_PER_S:.0}/s: {}",
        verdict(stats.events_per_s >= INGEST_TARGET_PER_S)
    );
    report.row(stats.named("ingest", "observer", "one event per POST, max rate"));
    let mut half_rates = vec![max.stats.events_per_s / 2.0];
    if (max.stats.events_per_s / 2.0 - INGEST_TARGET_PER_S / 2.0).abs() > 1_000.0 {
        half_rates.push(INGEST_TARGET_PER_S / 2.0);
    }
    for rate in half_rates {
        server.wait_for_invocations(sent, 1)?;
        let mut half = open_loop(&server, rate, WIDE_CLIENTS)?;
        sent += half.events as u64;
        half.note = format!(
            "{}; p99 target <= {INGEST_P99_TARGET_US:.0} µs: {}",
            half.note,
            verdict(half.p99_us <= INGEST_P99_TARGET_US)
        );
        report.row(half.named(
            "ingest",
            "observer",
            &format!("one event per POST, {rate:.0}/s (open loop)"),
        ));
    }
    server.wait_for_invocations(sent, 1)?;
    let batched = closed_loop(&server, BATCH, CLIENTS)?;
    let mut stats = batched.stats;
    stats.note = format!(
        "{CLIENTS} clients, latency per POST; target >= {INGEST_BATCH_TARGET_PER_S:.0}/s: {}",
        verdict(stats.events_per_s >= INGEST_BATCH_TARGET_PER_S)
    );
    report.row(stats.named(
        "ingest",
        "observer",
        &format!("batches of {BATCH}, max rate"),
    ));
    server.stop();
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "SHORT" }
}

// ---------------------------------------------------------------------------------------------
// start: how fast `serve` is ready, and what 1,000 handlers weigh
// ---------------------------------------------------------------------------------------------

/// Issue 18's targets: ready with 100 handlers from the compile cache, RSS with 1,000 loaded.
const START_TARGET: Duration = Duration::from_secs(1);
const THOUSAND_RSS_TARGET_MIB: f64 = 300.0;
/// Timed starts with a warm compile cache.
const STARTS: usize = 3;

/// `hookwasm serve` with 100 trivial gates: the time from spawning it until `/readyz` answers
/// 200, with the compile cache filled by an untimed start first; then 1,000 gates (one module, a
/// thousand entries), started once from the cache: the time and the RSS once ready.
fn start(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    println!("\nstart: `hookwasm serve` from spawn until /readyz answers 200, compile cache warm");
    let config = handlers(bench, "gate", "trivial", 100);
    Server::start(bench, &config)?.stop();
    let mut times = Vec::new();
    for _ in 0..STARTS {
        let (server, ready) = Server::start_ready(bench, &config)?;
        server.stop();
        times.push(ready);
    }
    times.sort();
    let median = times[times.len() / 2];
    report.timing(
        "start",
        "100 handlers, ready",
        median,
        format!(
            "median of {STARTS} (all: {times:?}); target <= {START_TARGET:?}: {}",
            verdict(median <= START_TARGET)
        ),
    );
    let config = handlers(bench, "gate", "trivial", 1_000);
    Server::start(bench, &config)?.stop();
    let (server, ready) = Server::start_ready(bench, &config)?;
    let rss_mib = server.rss_kib() as f64 / 1024.0;
    server.stop();
    report.timing("start", "1,000 handlers, ready", ready, String::new());
    report.memory(
        1_000,
        (rss_mib * 1024.0) as u64,
        format!(
            "target <= {THOUSAND_RSS_TARGET_MIB:.0} MiB: {}",
            verdict(rss_mib <= THOUSAND_RSS_TARGET_MIB)
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// stream: ingest with 10 `GET /v1/stream` consumers attached vs none
// ---------------------------------------------------------------------------------------------

/// Stream consumers attached in the second run.
const STREAM_CONSUMERS: usize = 10;

fn stream(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    report.heading(&format!(
        "stream: POST /v1/events (one observer), {CLIENTS} clients, with 0 and {STREAM_CONSUMERS} stream consumers"
    ));
    let server = Server::start(bench, &handlers(bench, "observe", "trivial", 1))?;
    let alone = closed_loop(&server, 1, CLIENTS)?;
    let mut stats = alone.stats.clone();
    stats.note = "no stream consumer".into();
    report.row(stats.named("stream", "observer", "ingest, no consumer"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumers: Vec<_> = (0..STREAM_CONSUMERS)
        .map(|_| {
            let (address, stop, received) = (server.address, stop.clone(), received.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut stream = TcpStream::connect(address)?;
                stream.set_read_timeout(Some(Duration::from_millis(200)))?;
                stream.write_all(b"GET /v1/stream HTTP/1.0\r\nHost: bench\r\n\r\n")?;
                let mut buffer = [0u8; 64 << 10];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match stream.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => {
                            let messages = buffer[..n].windows(2).filter(|w| w == b"\n\n").count();
                            received
                                .fetch_add(messages as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let beside = closed_loop(&server, 1, CLIENTS)?;
    let mut stats = beside.stats.clone();
    stats.note = format!(
        "{STREAM_CONSUMERS} consumers read {} messages meanwhile; {:.2}x the rate without",
        received.load(std::sync::atomic::Ordering::Relaxed),
        beside.stats.events_per_s / alone.stats.events_per_s.max(1e-9)
    );
    report.row(stats.named(
        "stream",
        "observer",
        &format!("ingest, {STREAM_CONSUMERS} consumers"),
    ));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for consumer in consumers {
        let _ = consumer.join();
    }
    server.stop();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// fanout and memory: 1, 10, 100 handlers on the same event
// ---------------------------------------------------------------------------------------------

fn fanout(bench: &Bench, report: &mut Report, throughput: bool) -> anyhow::Result<()> {
    let mut rss_rows = Vec::new();
    let mut loaded_one = None;
    for count in [1, 10, 100] {
        // RSS is read from the gates' servers; observers only add throughput figures.
        let modes: &[&str] = if throughput {
            &["gate", "observe"]
        } else {
            &["gate"]
        };
        for &mode in modes {
            let role = if mode == "gate" { "gates" } else { "observers" };
            let server = Server::start(bench, &handlers(bench, mode, "trivial", count))?;
            let loaded = server.rss_kib();
            if mode == "gate" {
                if count == 1 {
                    loaded_one = Some(loaded);
                }
                rss_rows.push((count, loaded));
            }
            if throughput {
                if count == 1 && mode == "gate" {
                    report.heading(&format!(
                        "fanout: N trivial handlers on one event, HTTP, {CLIENTS} clients; per core = / {}",
                        cores()
                    ));
                }
                let run = closed_loop(&server, 1, CLIENTS)?;
                let drained = server.wait_for_invocations(run.requests_sent, count)?;
                let mut stats = run.stats.clone();
                let events_per_s = drained.rate(stats.events, run.elapsed);
                stats.note = format!(
                    "{events_per_s:.0} events/s handled{} = {:.0} invocations/s, {:.0} events/s/core; RSS {} -> {} MiB",
                    drained.caveat(),
                    events_per_s * count as f64,
                    events_per_s / cores() as f64,
                    loaded / 1024,
                    server.rss_kib() / 1024
                );
                report.row(stats.named("fanout", role, &format!("{count} {role}")));
            }
            server.stop();
        }
    }
    println!("\nmemory: RSS of `hookwasm serve` after loading N trivial gates (no traffic)");
    let one = loaded_one.unwrap_or(0);
    for (count, kib) in rss_rows {
        let per_handler = if count > 1 {
            format!(
                "{:.2} MiB per handler beyond the first",
                (kib.saturating_sub(one)) as f64 / 1024.0 / (count - 1) as f64
            )
        } else {
            String::new()
        };
        report.memory(count, kib, per_handler);
    }
    Ok(())
}

/// `count` handlers of the benchmark guest, all subscribed to every event.
fn handlers(bench: &Bench, mode: &str, behavior: &str, count: usize) -> Value {
    let entries: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "name": format!("{behavior}-{mode}-{i}"),
                "module": bench.module,
                "mode": mode,
                "config": { "behavior": behavior },
                "queueCapacity": 1_000_000,
            })
        })
        .collect();
    let mut config = json!({ "eventHandlers": entries });
    // An outbox-capable host reads this; older ones ignore unknown top-level keys.
    if let Ok(store) = std::env::var("HOOKWASM_PERF_STORE") {
        config["eventDelivery"] = json!({ "store": store });
    }
    config
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// A `hookwasm serve` child process listening on 127.0.0.1.
struct Server {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bench: &Bench, config: &Value) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("proxy.config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
        let mut child = Command::new(&bench.binary)
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("HOOKWASM_CACHE_DIR", bench.out_dir.join("compile-cache"))
            .env_remove("HOOKWASM_LOG_FORMAT")
            .current_dir(&bench.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, listening) = std::sync::mpsc::channel();
        let sink = log.clone();
        // Keep reading stderr for the whole run, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = found.send(address.trim_end_matches('/').to_owned());
                }
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                if log.len() < 64 << 10 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let address = match listening.recv_timeout(STARTUP_BUDGET) {
            Ok(address) => address.parse()?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "`hookwasm serve` did not start listening:\n{}",
                    log.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        };
        Ok(Server {
            child,
            address,
            _dir: dir,
        })
    }

    /// Starts the server and waits until `/readyz` answers 200: the server and how long that took
    /// from the spawn.
    fn start_ready(bench: &Bench, config: &Value) -> anyhow::Result<(Server, Duration)> {
        let spawned = Instant::now();
        let server = Server::start(bench, config)?;
        let mut client = HttpClient::connect(server.address)?;
        while client.request("GET", "/readyz", "")?.0 != 200 {
            anyhow::ensure!(
                spawned.elapsed() < STARTUP_BUDGET,
                "/readyz never answered 200"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok((server, spawned.elapsed()))
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Invocations of every handler so far, from `/metrics`.
    fn invocations(&self) -> anyhow::Result<u64> {
        let (status, body) = HttpClient::connect(self.address)?.request("GET", "/metrics", "")?;
        anyhow::ensure!(status == 200, "GET /metrics: HTTP {status}");
        Ok(body
            .lines()
            .filter(|l| l.starts_with("hookwasm_handler_invocations_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// Waits until `events` events have run in each of `handlers` handlers, or `DRAIN_BUDGET`;
    /// returns how long it waited and what share of the invocations ran by then.
    fn wait_for_invocations(&self, events: u64, handlers: usize) -> anyhow::Result<Drained> {
        let started = Instant::now();
        let expected = events * handlers as u64;
        loop {
            let done = self.invocations()?;
            if done >= expected || started.elapsed() >= DRAIN_BUDGET {
                return Ok(Drained {
                    waited: started.elapsed(),
                    share: done as f64 / expected.max(1) as f64,
                });
            }
            // Each look is a `/metrics` request that the server answers from its outbox: look
            // often enough to time the drain, not so often that looking slows it down.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------------------------

/// How the wait for queued events ended.
struct Drained {
    waited: Duration,
    /// Invocations that ran, of those expected (1.0 when all ran).
    share: f64,
}

impl Drained {
    /// Events/s handled: the share of `events` that ran, over the run and the wait.
    fn rate(&self, events: usize, run: Duration) -> f64 {
        events as f64 * self.share.min(1.0) / (run + self.waited).as_secs_f64()
    }

    /// Says so when not everything ran within the budget.
    fn caveat(&self) -> String {
        if self.share < 1.0 {
            format!(
                " ({:.0}% of invocations ran within {DRAIN_BUDGET:?})",
                self.share * 100.0
            )
        } else {
            String::new()
        }
    }
}

/// What a closed-loop run did.
struct ClosedLoop {
    stats: Stats,
    /// Events sent (and accepted) after the warm-up.
    requests_sent: u64,
    elapsed: Duration,
}

/// `CLIENTS` connections, each sending its next request as soon as the last one is answered,
/// until `HTTP_REQUESTS` events or `HTTP_BUDGET`. Each POST carries `batch` events.
fn closed_loop(server: &Server, batch: usize, clients: usize) -> anyhow::Result<ClosedLoop> {
    let address = server.address;
    let warm = HTTP_WARMUP / batch.max(1);
    // Warm up: the first events of each handler compile nothing, but fill caches and pools.
    let mut client = HttpClient::connect(address)?;
    for _ in 0..warm.max(1) {
        client.post_events(&body(batch))?;
    }
    let warmed = (warm.max(1) * batch) as u64;
    let started = Instant::now();
    let per_client = HTTP_REQUESTS / batch / clients;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, u64)> {
                let mut client = HttpClient::connect(address)?;
                let mut histogram = histogram();
                let mut sent = 0;
                for _ in 0..per_client {
                    if started.elapsed() > HTTP_BUDGET {
                        break;
                    }
                    let body = body(batch);
                    let sent_at = Instant::now();
                    client.post_events(&body)?;
                    record(&mut histogram, sent_at.elapsed());
                    sent += batch as u64;
                }
                Ok((histogram, sent))
            })
        })
        .collect();
    let mut histogram = histogram();
    let mut sent = 0;
    for thread in threads {
        let (h, n) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))??;
        histogram.add(h)?;
        sent += n;
    }
    let elapsed = started.elapsed();
    let mut stats = Stats::from_histogram(&histogram, elapsed);
    stats.events = sent as usize;
    stats.events_per_s = sent as f64 / elapsed.as_secs_f64();
    Ok(ClosedLoop {
        stats,
        requests_sent: warmed + sent,
        elapsed,
    })
}

/// Sends events at a fixed `rate` (open loop) for `HTTP_BUDGET`, over `clients` connections
/// taking turns; each latency runs from the moment the request was due, so a slow answer that
/// delays the next request counts against the server (no coordinated omission).
fn open_loop(server: &Server, rate: f64, clients: usize) -> anyhow::Result<Stats> {
    let address = server.address;
    let interval = Duration::from_secs_f64(clients as f64 / rate);
    let total = ((rate * HTTP_BUDGET.as_secs_f64()) as usize).min(HTTP_REQUESTS);
    let start = Instant::now() + Duration::from_millis(20);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let mut client = HttpClient::connect(address)?;
                let mut histogram = histogram();
                let offset = interval.mul_f64(c as f64 / clients as f64);
                for i in 0..total / clients {
                    let due = start + offset + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    client.post_events(&body(1))?;
                    record(&mut histogram, due.elapsed());
                }
                Ok(histogram)
            })
        })
        .collect();
    let mut histogram = histogram();
    for thread in threads {
        histogram.add(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??,
        )?;
    }
    let mut stats = Stats::from_histogram(&histogram, start.elapsed());
    stats.note = format!("target {rate:.0}/s");
    Ok(stats)
}

/// One event, or a JSON array of `batch` events, as a POST body.
///
/// Every event of a run gets a new id: the outbox stores an id once, so a repeated one would be
/// answered as a duplicate and never reach the observer.
fn body(batch: usize) -> String {
    static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let first = NEXT_ID.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
    if batch == 1 {
        return git_event_json(first).to_string();
    }
    Value::Array((first..first + batch).map(git_event_json).collect()).to_string()
}

/// A 380-byte `git.branch.updated`, the event every case uses.
fn git_event_json(i: usize) -> Value {
    json!({
        "specversion": "1.0", "id": format!("bench-{i}"), "source": "bench", "type": "git.branch.updated",
        "time": "2026-01-01T00:00:00Z",
        "data": {
            "pushId": "p1", "ref": "refs/heads/main",
            "before": "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "after": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            "repository": { "url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets" },
            "pusher": { "username": "ada", "email": "ada@example.com" }
        }
    })
}

fn git_event(i: usize) -> Event {
    Event::from_json(git_event_json(i)).expect("the benchmark event is valid")
}

/// A minimal HTTP/1.1 keep-alive client: enough to talk to our own server on loopback without a
/// client stack of its own in the measurement.
struct HttpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl HttpClient {
    fn connect(address: SocketAddr) -> anyhow::Result<HttpClient> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: address.to_string(),
        })
    }

    /// Posts events; a full queue (503) is retried after a pause, anything else but 200/202 is
    /// an error.
    fn post_events(&mut self, body: &str) -> anyhow::Result<()> {
        loop {
            let (status, answer) = self.request("POST", "/v1/events", body)?;
            match status {
                200 | 202 => return Ok(()),
                503 => std::thread::sleep(Duration::from_millis(1)),
                _ => anyhow::bail!("POST /v1/events: HTTP {status}: {answer}"),
            }
        }
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        write!(
            self.writer,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (0, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut answer = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..size]);
            }
        } else {
            answer.resize(length, 0);
            self.reader.read_exact(&mut answer)?;
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring and reporting
// ---------------------------------------------------------------------------------------------

/// Latencies in nanoseconds, 1 ns to 100 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record(latency.as_nanos().try_into().unwrap_or(u64::MAX).max(1));
}

/// Runs `f` `warmup` times, then up to `samples` times (or until `budget`), timing each call.
fn measure(warmup: usize, samples: usize, budget: Duration, mut f: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        f();
    }
    let mut histogram = histogram();
    let started = Instant::now();
    for _ in 0..samples {
        let at = Instant::now();
        f();
        record(&mut histogram, at.elapsed());
        if started.elapsed() > budget {
            break;
        }
    }
    Stats::from_histogram(&histogram, started.elapsed())
}

async fn measure_async(
    warmup: usize,
    samples: usize,
    budget: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Stats> {
    for _ in 0..warmup {
        f().await?;
    }
    let mut histogram = histogram();
    let started = Instant::now();
    for _ in 0..samples {
        let at = Instant::now();
        f().await?;
        record(&mut histogram, at.elapsed());
        if started.elapsed() > budget {
            break;
        }
    }
    Ok(Stats::from_histogram(&histogram, started.elapsed()))
}

/// One measured case.
#[derive(Clone)]
struct Stats {
    events: usize,
    elapsed: Duration,
    events_per_s: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    note: String,
    histogram: Histogram<u64>,
}

impl Stats {
    fn empty() -> Stats {
        Stats::from_histogram(&histogram(), Duration::ZERO)
    }

    fn from_histogram(h: &Histogram<u64>, elapsed: Duration) -> Stats {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Stats {
            events: h.len() as usize,
            elapsed,
            events_per_s: if elapsed.is_zero() {
                0.0
            } else {
                h.len() as f64 / elapsed.as_secs_f64()
            },
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            note: String::new(),
            histogram: h.clone(),
        }
    }

    /// Adds a run that went on at the same time (its events add up; the wall time is the longer).
    fn merge(&mut self, other: Stats) {
        let mut histogram = self.histogram.clone();
        histogram.add(&other.histogram).expect("same bounds");
        *self = Stats::from_histogram(&histogram, self.elapsed.max(other.elapsed));
    }

    fn named(self, section: &str, handler: &str, case: &str) -> Row {
        Row {
            section: section.into(),
            handler: handler.into(),
            case: case.into(),
            stats: self,
        }
    }
}

struct Row {
    section: String,
    handler: String,
    case: String,
    stats: Stats,
}

/// Everything printed, kept for the JSON file.
#[derive(Default)]
struct Report {
    rows: Vec<Value>,
    /// Mean latency of the last direct section's native floor, for ratios.
    floor_us: Option<f64>,
}

impl Report {
    fn heading(&mut self, title: &str) {
        println!("\n{title}");
        println!(
            "  {:<46} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  note",
            "case", "events/s", "mean µs", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        );
    }

    fn row(&mut self, row: Row) {
        if row.section == "direct" && row.case.starts_with("native") {
            self.floor_us = Some(row.stats.mean_us);
        }
        let s = &row.stats;
        let mut note = s.note.clone();
        if row.section == "direct"
            && let Some(floor) = self.floor_us
            && !row.case.starts_with("native")
        {
            let ratio = format!("{:.1}× native", s.mean_us / floor);
            note = if note.is_empty() {
                ratio
            } else {
                format!("{ratio}; {note}")
            };
        }
        println!(
            "  {:<46} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {note}",
            row.case, s.events_per_s, s.mean_us, s.p50_us, s.p99_us, s.p999_us, s.max_us
        );
        self.rows.push(json!({
            "section": row.section, "handler": row.handler, "case": row.case,
            "events": s.events, "seconds": s.elapsed.as_secs_f64(),
            "eventsPerSecond": round(s.events_per_s), "meanUs": round(s.mean_us),
            "p50Us": round(s.p50_us), "p99Us": round(s.p99_us), "p999Us": round(s.p999_us),
            "maxUs": round(s.max_us),
            "ratioToNative": self.floor_us.filter(|_| row.section == "direct").map(|f| round(s.mean_us / f)),
            "note": note,
        }));
    }

    fn memory(&mut self, handlers: usize, rss_kib: u64, note: String) {
        println!(
            "  {:<46} {:>10.1} MiB  {note}",
            format!("{handlers} handlers loaded"),
            rss_kib as f64 / 1024.0
        );
        self.rows.push(json!({
            "section": "memory", "case": format!("{handlers} handlers loaded"),
            "handlers": handlers, "rssMiB": round(rss_kib as f64 / 1024.0), "note": note,
        }));
    }

    fn timing(&mut self, section: &str, case: &str, took: Duration, note: String) {
        println!("  {case:<46} {:>10.1} ms  {note}", took.as_secs_f64() * 1e3);
        self.rows.push(json!({
            "section": section, "case": case, "ms": round(took.as_secs_f64() * 1e3), "note": note,
        }));
    }

    fn write(&mut self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("perf.json");
        let document = json!({
            "machine": { "cpus": cores(), "loadAverageAtEnd": load_average() },
            "rows": self.rows,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
        println!("\nfigures written to {}", path.display());
        Ok(())
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
