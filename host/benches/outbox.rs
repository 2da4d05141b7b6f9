//! Outbox benchmark: how many events/s the host accepts for one observer with the outbox in
//! memory and on disk (both `sync` policies), and how fast the observer's worker delivers them.
//!
//! - `store accept`: `Store::accept` alone, one event with one delivery per call, from 1 and from
//!   64 concurrent producers (group commit turns concurrent calls into one transaction).
//! - `dispatch`: `Dispatcher::submit` of one event at a time from 64 concurrent producers to one
//!   observer (the chaos guest, `behavior: ok`), the gate-free path of `POST /v1/events` minus
//!   HTTP; "delivered/s" is how fast the observer's worker claims, runs and completes them.
//!
//! - `delivery`: the observers' side alone. 20,000 events are accepted into the durable outbox
//!   (`sync: full`) with the workers stopped, then the workers start and work them off: how many
//!   deliveries a trivial observer (`tests/guests/bench`, `trivial`) makes per second, alone and
//!   as 10 observers of every event (invocations/s). Claim, the event, a fresh instance with
//!   fuel, deadline and memory cap, and the record of each attempt are all in the figure.
//!
//! Run: `cargo xtask build-guests && cargo bench -p hookwasm --bench outbox` (`-- delivery` or
//! `-- accept` runs one section). It prints a table;
//! it asserts nothing about speed (figures go to BENCHMARKS.md). The database files live in a
//! temporary folder on the same disk as `target/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookwasm::app::App;
use hookwasm::config::Config;
use hookwasm::dispatch::Backpressure;
use hookwasm::event::Event;
use hookwasm::outbox::sqlite::SqliteStore;
use hookwasm::outbox::{self, FsyncPolicy, NewEvent, OnDuplicate, Store};
use hookwasm::sandbox::Sandbox;

/// Events per measurement.
const EVENTS: usize = 20_000;
/// Concurrent producers in the concurrent cases.
const PRODUCERS: usize = 64;

/// The stores compared: name and how to open one in `dir`.
const STORES: [(&str, Option<FsyncPolicy>); 3] = [
    ("memory", None),
    ("sqlite sync=normal", Some(FsyncPolicy::Normal)),
    ("sqlite sync=full", Some(FsyncPolicy::Full)),
];

fn main() -> anyhow::Result<()> {
    let chaos = workspace().join("tests/guests/chaos.wasm");
    anyhow::ensure!(
        chaos.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        chaos.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |section: &str| only.is_empty() || only.iter().any(|o| o == section);
    if wants("delivery") {
        let bench = workspace().join("tests/guests/bench.wasm");
        anyhow::ensure!(
            bench.exists(),
            "{} is missing: run `cargo xtask build-guests` first",
            bench.display()
        );
        println!(
            "hookwasm outbox benchmark: delivery from the durable outbox (sqlite sync=full), trivial observers"
        );
        println!(
            "{:<34} {:>10} {:>16} {:>12}",
            "case", "events", "invocations/s", "seconds"
        );
        for observers in [1, 10] {
            let events = if observers == 1 { EVENTS } else { EVENTS / 4 };
            let dir = tempfile::tempdir()?;
            let store = open(dir.path(), Some(FsyncPolicy::Full))?;
            let (rate, seconds) = runtime.block_on(delivery(&bench, store, observers, events))?;
            println!(
                "{:<34} {events:>10} {rate:>16.0} {seconds:>12.2}",
                format!("deliver, {observers} observer(s)")
            );
        }
    }
    if !wants("accept") {
        return Ok(());
    }
    println!("hookwasm outbox benchmark: {EVENTS} events per case, one observer");
    println!(
        "{:<20} {:<26} {:>14} {:>14}",
        "store", "case", "accepted/s", "delivered/s"
    );
    for (name, sync) in STORES {
        for producers in [1, PRODUCERS] {
            let dir = tempfile::tempdir()?;
            let store = open(dir.path(), sync)?;
            let accepted = runtime.block_on(accept_only(store, producers))?;
            println!(
                "{name:<20} {:<26} {:>14.0} {:>14}",
                format!("store accept, {producers} producer(s)"),
                accepted,
                "-"
            );
        }
        let dir = tempfile::tempdir()?;
        let store = open(dir.path(), sync)?;
        let (accepted, delivered) = runtime.block_on(dispatch(&chaos, store))?;
        println!(
            "{name:<20} {:<26} {accepted:>14.0} {delivered:>14.0}",
            format!("dispatch, {PRODUCERS} producers")
        );
    }
    println!(
        "sync=full fsyncs the WAL at every commit (a commit holds every call that was waiting); \
         sync=normal only at checkpoints, so it survives kill -9 but not a power loss."
    );
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn open(dir: &Path, sync: Option<FsyncPolicy>) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match sync {
        None => Arc::new(SqliteStore::in_memory()?),
        Some(sync) => Arc::new(SqliteStore::open(&dir.join("outbox.db"), sync)?),
    })
}

/// Events/s that `Store::accept` takes from `producers` concurrent callers, one event each call.
async fn accept_only(store: Arc<dyn Store>, producers: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let store = store.clone();
        tasks.spawn(async move {
            for i in (p..EVENTS).step_by(producers) {
                let row = NewEvent {
                    source: "bench".into(),
                    id: format!("accept-{i}"),
                    event_type: "git.branch.updated".into(),
                    json: event_json(i).to_string(),
                    handlers: vec!["observer".into()],
                    subject: None,
                    for_observers: true,
                };
                store
                    .accept(vec![row], OnDuplicate::Skip, None, outbox::now())
                    .await?;
            }
            Ok::<_, outbox::StoreError>(())
        });
    }
    for result in tasks.join_all().await {
        result?;
    }
    Ok(EVENTS as f64 / started.elapsed().as_secs_f64())
}

/// Accepted and delivered events/s through a dispatcher with one observer on `store`.
async fn dispatch(chaos: &Path, store: Arc<dyn Store>) -> anyhow::Result<(f64, f64)> {
    let text = serde_json::json!({ "eventHandlers": [{
        "name": "observer", "module": chaos,
        "config": { "behavior": "ok" }, "queueCapacity": EVENTS
    }]})
    .to_string();
    let config = Config::parse(&text, &workspace().join("bench.config.json"))?;
    // The host as `serve` starts it, on this bench's store and without a compile cache.
    let app = App::builder(config)
        .store(store.clone())
        .sandbox(Sandbox::new()?)
        .open()
        .await?;
    app.start_delivering();
    let dispatcher = app.dispatcher().clone();

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let dispatcher = dispatcher.clone();
        tasks.spawn(async move {
            for i in (p..EVENTS).step_by(PRODUCERS) {
                let event = Event::from_json(event_json(i)).map_err(anyhow::Error::msg)?;
                dispatcher
                    .submit(&[event], Backpressure::Wait)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    for result in tasks.join_all().await {
        result?;
    }
    let accepted = EVENTS as f64 / started.elapsed().as_secs_f64();
    // Watch the worker's own counter: asking the store would queue behind its work.
    let slot = dispatcher
        .slot("observer")
        .expect("the observer is in service");
    while slot.stats.counts().invocations.values().sum::<u64>() < EVENTS as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done: u64 = store.counts().await?.iter().map(|c| c.done).sum();
    anyhow::ensure!(
        done as usize == EVENTS,
        "{done} of {EVENTS} deliveries done"
    );
    let delivered = EVENTS as f64 / started.elapsed().as_secs_f64();
    dispatcher.shutdown(Duration::from_secs(5)).await;
    Ok((accepted, delivered))
}

/// Accepts `events` events for `observers` trivial observers with their workers stopped, then
/// starts them: invocations/s from the start until every delivery is made, and the seconds.
async fn delivery(
    bench: &Path,
    store: Arc<dyn Store>,
    observers: usize,
    events: usize,
) -> anyhow::Result<(f64, f64)> {
    let entries: Vec<serde_json::Value> = (0..observers)
        .map(|n| {
            serde_json::json!({
                "name": format!("observer-{n}"), "module": bench,
                "config": { "behavior": "trivial" }, "queueCapacity": events
            })
        })
        .collect();
    let text = serde_json::json!({ "eventHandlers": entries }).to_string();
    let config = Config::parse(&text, &workspace().join("bench.config.json"))?;
    // The host as `serve` starts it, on this bench's store; deliveries start after the backlog.
    let app = App::builder(config)
        .store(store.clone())
        .sandbox(Sandbox::new()?)
        .open()
        .await?;
    let dispatcher = app.dispatcher().clone();
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let batch = chunk
            .iter()
            .map(|i| Event::from_json(event_json(*i)).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        dispatcher
            .submit(&batch, Backpressure::Wait)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let slots = dispatcher.slots();
    let made = || -> u64 {
        slots
            .iter()
            .map(|s| s.stats.counts().invocations.values().sum::<u64>())
            .sum()
    };
    let wanted = (events * observers) as u64;
    let started = Instant::now();
    dispatcher.start_delivering();
    while made() < wanted {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    dispatcher.shutdown(Duration::from_secs(5)).await;
    let done: u64 = store.counts().await?.iter().map(|c| c.done).sum();
    anyhow::ensure!(done == wanted, "{done} of {wanted} deliveries done");
    Ok((wanted as f64 / seconds, seconds))
}

fn event_json(i: usize) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0", "id": format!("bench-{i}"), "source": "bench",
        "type": "git.branch.updated",
        "data": {
            "pushId": "p1", "ref": "refs/heads/main", "before": "a1", "after": "b2",
            "repository": { "url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets" },
            "pusher": { "username": "ada", "email": "ada@example.com" }
        }
    })
}
