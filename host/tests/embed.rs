//! The embeddable core, as a program that links hookwasm as a library sees it: no server, no
//! outbox, no CLI. `cargo xtask test` runs this file with `--no-default-features` too, so it
//! proves the core builds and works without them.
//!
//! It loads the benchmark guest (`tests/guests/bench`, built by `cargo xtask build-guests`)
//! from bytes, runs events in it, and checks that every sandbox of the process shares one
//! pooled engine.

use std::path::Path;

use hookwasm::config::{Capabilities, HandlerSpec};
use hookwasm::event::Event;
use hookwasm::limits::Limits;
use hookwasm::sandbox::{Allocator, Handler, Sandbox, Status};
use hookwasm::wit;
use serde_json::json;

/// The benchmark guest's component.
fn module_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests/bench.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask build-guests` first",
            path.display()
        )
    })
}

/// A spec for the guest held in memory: `module` only names it in messages.
fn spec(behavior: &str) -> HandlerSpec {
    HandlerSpec::for_module(
        Path::new("embedded-bench.wasm"),
        json!({ "behavior": behavior }),
        Limits::default(),
        Capabilities::default(),
    )
}

fn event(id: &str) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "embedder", "type": "git.branch.updated",
        "data": {
            "pushId": "p1", "ref": "refs/heads/main", "before": "9fceb02", "after": "4b825dc",
            "repository": { "url": "https://git.example/acme/widgets.git", "project": "acme", "name": "widgets" },
            "pusher": { "username": "ada" }
        }
    }))
    .expect("a valid event")
}

/// Loads `bytes` into `sandbox` off the executor and runs `init`.
async fn load(sandbox: &Sandbox, behavior: &str, bytes: &[u8]) -> Handler {
    let (sandbox, spec, bytes) = (sandbox.clone(), spec(behavior), bytes.to_vec());
    let handler = tokio::task::spawn_blocking(move || sandbox.load_bytes(&spec, &bytes))
        .await
        .expect("the load thread")
        .expect("the guest loads from bytes");
    handler.init().await.expect("init accepts the config");
    handler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_loaded_from_bytes_runs_an_event_and_returns_its_outcome() {
    let sandbox = Sandbox::new().expect("sandbox");
    let handler = load(&sandbox, "realistic", &module_bytes()).await;
    let invocation = handler.on_event(&event("e1")).await;
    assert_eq!(invocation.status, Status::Ok, "{:?}", invocation.error);
    let outcome = invocation.outcome.expect("an outcome");
    assert!(matches!(outcome.verdict, wit::Verdict::Allow));
    assert_eq!(
        outcome.annotations[0],
        ("repository".to_owned(), "acme/widgets".to_owned())
    );
    assert!(
        outcome.annotations[1]
            .1
            .starts_with("e1 (git.branch.updated from embedder)")
    );
    assert!(invocation.fuel_consumed > 0, "fuel is metered");
}

#[test]
fn bytes_that_are_not_a_component_are_refused_with_the_reason() {
    let sandbox = Sandbox::new().expect("sandbox");
    let err = sandbox
        .load_bytes(&spec("trivial"), b"\0asm\x01\0\0\0")
        .expect_err("a core module is not a handler");
    assert!(
        err.to_string()
            .starts_with("embedded-bench.wasm is a core WebAssembly module, not a component"),
        "{err}"
    );
    let err = sandbox
        .load_bytes(&spec("trivial"), b"hello")
        .expect_err("not wasm");
    assert!(
        err.to_string().contains("is not a WebAssembly file"),
        "{err}"
    );
}

/// Each sandbox used to build its own engine, reserving ~8 TiB for its pool: the 16th fell back
/// to the on-demand allocator. Now they share the process's engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_sandboxes_share_one_pooled_engine_and_each_runs_events() {
    let bytes = module_bytes();
    let sandboxes: Vec<Sandbox> = (0..32).map(|_| Sandbox::new().expect("sandbox")).collect();
    for (i, sandbox) in sandboxes.iter().enumerate() {
        assert!(
            matches!(sandbox.allocator(), Allocator::Pooling(_)),
            "sandbox {i} uses {:?}",
            sandbox.allocator()
        );
        assert!(
            wasmtime::Engine::same(sandbox.engine(), sandboxes[0].engine()),
            "sandbox {i} has an engine of its own"
        );
    }
    for (i, sandbox) in sandboxes.iter().enumerate() {
        let handler = load(sandbox, "trivial", &bytes).await;
        let invocation = handler.on_event(&event(&format!("e{i}"))).await;
        assert_eq!(
            invocation.status,
            Status::Ok,
            "sandbox {i}: {:?}",
            invocation.error
        );
    }
}

#[test]
fn a_thousand_sandboxes_all_use_the_pool() {
    let before = rss_mib();
    let sandboxes: Vec<Sandbox> = (0..1_000)
        .map(|_| Sandbox::new().expect("sandbox"))
        .collect();
    let pooled = sandboxes
        .iter()
        .filter(|s| matches!(s.allocator(), Allocator::Pooling(_)))
        .count();
    assert_eq!(pooled, 1_000);
    println!(
        "1,000 sandboxes: RSS {before:.1} MiB -> {:.1} MiB",
        rss_mib()
    );
}

/// Entries that share a module share its compiled copy: a thousand handlers of one module load
/// without compiling it a thousand times (a compile takes about a second of CPU in a debug build;
/// a load of the compiled copy ~15 ms, mostly the debug build's SHA-256),
/// and stay within the memory a thousand handlers may take (issue 18: 300 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handlers_of_one_module_share_its_compiled_copy() {
    let bytes = module_bytes();
    let sandbox = Sandbox::new().expect("sandbox");
    let first = load(&sandbox, "trivial", &bytes).await;
    let before = rss_mib();
    let started = std::time::Instant::now();
    let handlers: Vec<Handler> = (0..1_000)
        .map(|_| sandbox.load_bytes(&spec("trivial"), &bytes).expect("loads"))
        .collect();
    let elapsed = started.elapsed();
    let after = rss_mib();
    println!(
        "1,000 handlers of one module: loaded in {elapsed:?}, RSS {before:.1} MiB -> {after:.1} MiB"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(180),
        "loading took {elapsed:?}: was the module compiled again?"
    );
    assert!(after - before < 300.0, "{before} MiB -> {after} MiB");
    let invocation = handlers[999].on_event(&event("last")).await;
    assert_eq!(invocation.status, Status::Ok, "{:?}", invocation.error);
    assert_eq!(handlers[999].digest(), first.digest());
}

/// This process's resident memory in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A spec for the guest in memory, named and in `mode`.
fn entry(name: &str, behavior: &str, mode: hookwasm::config::Mode) -> HandlerSpec {
    let mut spec = spec(behavior);
    spec.name = name.to_owned();
    spec.mode = mode;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_over_the_in_memory_store_runs_gates_and_delivers_to_observers() {
    use hookwasm::config::Mode;
    use hookwasm::dispatch::{Backpressure, Dispatcher};
    use hookwasm::outbox::{Store, memory::MemoryStore};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    // The whole core without SQLite, HTTP or a config file: handlers from bytes, a gate and an
    // observer, the outbox in memory.
    let sandbox = Sandbox::new().expect("sandbox");
    let bytes = module_bytes();
    let mut handlers = Vec::new();
    for (name, mode) in [("gate", Mode::Gate), ("observer", Mode::Observe)] {
        let spec = entry(name, "realistic", mode);
        let handler = load(&sandbox, "realistic", &bytes).await;
        handlers.push((spec, handler));
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let dispatcher = Dispatcher::start(handlers, store.clone()).await;
    dispatcher.start_delivering();

    let decisions = dispatcher
        .submit(&[event("e-embedded")], Backpressure::Wait)
        .await
        .expect("accepted");
    assert_eq!(decisions.len(), 1);
    let decision = &decisions[0];
    assert!(matches!(
        decision.verdict,
        hookwasm::dispatch::Verdict::Allow
    ));
    assert_eq!(decision.gates.len(), 1, "the gate ran");
    assert_eq!(
        decision.observers_queued, 1,
        "the observer's delivery is stored"
    );

    let started = Instant::now();
    loop {
        let counts = store.counts().await.expect("counts");
        let done: u64 = counts.iter().map(|c| c.done).sum();
        if done == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the observer's delivery was not made: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dispatcher.shutdown(Duration::from_secs(5)).await;
}
