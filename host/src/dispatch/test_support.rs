//! What the dispatch modules' unit tests share: the chaos guest (`tests/guests/chaos.wasm`,
//! built by `cargo xtask build-guests`) as the tiny component, one sandbox with a compile cache,
//! and the in-memory outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{Config, HandlerSpec};
use crate::event::Event;
use crate::outbox::memory::MemoryStore;
use crate::sandbox::{Handler, Sandbox};

use super::{Dispatcher, Version};

/// The chaos guest; it does what its config's `behavior` says (`ok`, `deny`, `error`, …).
pub fn chaos() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests/chaos.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-guests` first",
        path.display()
    );
    path
}

/// One sandbox for every test of the process, compiling each module once (a cache folder per
/// process).
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let cache =
            std::env::temp_dir().join(format!("hookwasm-dispatch-tests-{}", std::process::id()));
        Sandbox::new().expect("a sandbox").with_cache(&cache)
    })
}

/// The handler specs of `entries` (objects of `eventHandlers`; `module` defaults to chaos).
pub fn specs(entries: Value) -> Vec<HandlerSpec> {
    let mut entries = entries;
    for entry in entries.as_array_mut().expect("an array") {
        let entry = entry.as_object_mut().expect("an object");
        entry.entry("module").or_insert_with(|| json!(chaos()));
    }
    let text = json!({ "eventHandlers": entries }).to_string();
    Config::parse(&text, Path::new("/tmp/unit.config.json"))
        .expect("a valid config")
        .handlers
}

/// Loads one spec.
pub async fn load(spec: &HandlerSpec) -> Handler {
    super::load_handler(sandbox(), spec).await.expect("loads")
}

/// A version of `spec`.
pub async fn version(spec: &HandlerSpec) -> Version {
    Version::new(spec.clone(), load(spec).await)
}

/// A dispatcher over an in-memory outbox with the handlers of `entries`, not delivering yet.
pub async fn dispatcher(entries: Value) -> (Dispatcher, Arc<MemoryStore>) {
    let mut loaded = Vec::new();
    for spec in specs(entries) {
        let handler = load(&spec).await;
        loaded.push((spec, handler));
    }
    let store = Arc::new(MemoryStore::new());
    (Dispatcher::start(loaded, store.clone()).await, store)
}

/// A `git.branch.force-pushed` of `refs/heads/main` with id `id`.
pub fn event(id: &str) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "unit", "type": "git.branch.force-pushed",
        "data": {
            "pushId": "p1", "ref": "refs/heads/main", "before": "a1", "after": "b2",
            "repository": { "url": "https://git.example/acme/widgets.git" },
            "pusher": { "username": "ada" }
        }
    }))
    .unwrap()
}

/// Waits (at most 10 s) until `done` holds.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
