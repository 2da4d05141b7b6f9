//! The handlers in service: one [`Slot`] per handler, outlasting its [`Version`]s, kept in config
//! order; putting a version in service (added, replaced, swapped) and taking one out.
//!
//! A slot keeps the worker, the counters and the backpressure count across versions, while a
//! reload swaps the version (config entry, compiled module, breaker) atomically. An invocation
//! holds the version it started with, so events in flight finish on the old version and later
//! ones run the new one.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::{HandlerSpec, Mode};
use crate::event::Event;
use crate::metrics::HandlerStats;
use crate::sandbox::{Handler, LoadError, Status};

use super::breaker::Breaker;

/// One version of a handler: what a reload replaces as a whole.
#[derive(Debug)]
pub struct Version {
    /// The entry from `proxy.config.json`.
    pub spec: HandlerSpec,
    /// The compiled module.
    pub handler: Handler,
    /// Quarantine after repeated failures; a new version starts in service.
    pub breaker: Breaker,
}

impl Version {
    /// A version in service.
    pub fn new(spec: HandlerSpec, handler: Handler) -> Version {
        Version {
            breaker: Breaker::new(spec.quarantine),
            spec,
            handler,
        }
    }

    /// Whether this version subscribes to `event`.
    pub(super) fn wants(&self, event: &Event) -> bool {
        self.spec.filter.matches(event.event_type(), event.refs())
    }
}

/// The last attempt to load a new version of a handler, for `GET /v1/handlers`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// When it was tried (RFC 3339).
    pub at: String,
    /// `ok` or `failed`.
    pub result: &'static str,
    /// The module digest that was tried.
    pub digest: Option<String>,
    /// Why it failed; the running version stayed in place.
    pub error: Option<String>,
}

impl ReloadStatus {
    fn now(result: &'static str, digest: Option<String>, error: Option<String>) -> ReloadStatus {
        ReloadStatus {
            at: jiff::Timestamp::now().to_string(),
            result,
            digest,
            error,
        }
    }
}

/// A handler's most recent failure, for operators.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// When (RFC 3339).
    pub at: String,
    /// The event it failed on.
    pub event_id: String,
    /// The cause: `error`, `trap`, `out-of-fuel`, `timeout`, …
    pub status: Status,
    /// What it said.
    pub reason: Option<String>,
}

/// A handler in service: its current version, counters, reload state and, for an observer, its
/// delivery worker's bookkeeping.
#[derive(Debug)]
pub struct Slot {
    pub(super) name: String,
    pub(super) mode: Mode,
    current: ArcSwap<Version>,
    /// Invocation counters, kept across versions.
    pub stats: HandlerStats,
    /// Observers: deliveries open in the outbox as this process counts them (accepted here and
    /// not yet done or dead), for backpressure.
    pub(super) backlog: AtomicUsize,
    /// Observers: the events this process accepted for them, by delivery id, so the worker
    /// runs what was accepted without parsing the stored JSON again. Bounded by the backlog;
    /// a delivery not found here (accepted by another process, or before a restart) is read
    /// from the store.
    accepted: Mutex<BTreeMap<i64, Event>>,
    /// Tells the observer's worker that new deliveries are in the outbox.
    pub(super) wake: Notify,
    pub(super) close: watch::Sender<bool>,
    /// Set when the observer's worker has stopped.
    pub(super) finished: watch::Sender<bool>,
    /// Whether the observer's worker was started (it is started once).
    pub(super) worker_started: AtomicBool,
    last_reload: Mutex<Option<ReloadStatus>>,
    pub(super) last_failure: Mutex<Option<Failure>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn new(version: Version, backlog: usize) -> Slot {
        Slot {
            name: version.spec.name.clone(),
            mode: version.spec.mode,
            current: ArcSwap::from_pointee(version),
            stats: HandlerStats::default(),
            backlog: AtomicUsize::new(backlog),
            accepted: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            close: watch::channel(false).0,
            finished: watch::channel(false).0,
            worker_started: AtomicBool::new(false),
            last_reload: Mutex::new(None),
            last_failure: Mutex::new(None),
        }
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Observer or gate; changing it replaces the slot.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The version events run on now.
    pub fn version(&self) -> Arc<Version> {
        self.current.load_full()
    }

    /// Puts a new version in service; invocations already running finish on the old one.
    pub fn swap(&self, version: Version) {
        self.current.store(Arc::new(version));
    }

    /// An observer's open deliveries as this process counts them.
    pub fn queue_depth(&self) -> Option<usize> {
        (self.mode == Mode::Observe).then(|| self.backlog.load(Relaxed))
    }

    /// The last reload attempt, if any.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        lock(&self.last_reload).clone()
    }

    /// The most recent failure, if any.
    pub fn last_failure(&self) -> Option<Failure> {
        lock(&self.last_failure).clone()
    }

    /// Records a reload attempt.
    pub fn set_last_reload(&self, status: ReloadStatus) {
        *lock(&self.last_reload) = Some(status);
    }

    /// Whether the current version subscribes to `event`.
    pub(super) fn wants(&self, event: &Event) -> bool {
        self.current.load().wants(event)
    }

    /// Keeps the events accepted for this observer, by delivery id, for its worker.
    pub(super) fn keep_accepted(&self, accepted: impl IntoIterator<Item = (i64, Event)>) {
        lock(&self.accepted).extend(accepted);
    }

    /// The event accepted as delivery `id`, if this process kept it. Events kept for lower
    /// ids are dropped: a claim takes the lowest due ids, so those were claimed elsewhere or
    /// before they were kept, and are read from the store if they come back.
    pub(super) fn take_accepted(&self, id: i64) -> Option<Event> {
        let mut accepted = lock(&self.accepted);
        let event = accepted.remove(&id);
        let stale: Vec<i64> = accepted.range(..id).map(|(id, _)| *id).collect();
        for id in stale {
            accepted.remove(&id);
        }
        event
    }
}

/// How a version is put in service by [`super::Dispatcher::install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// A handler not in service yet.
    Add,
    /// In place of the handler of the same name with another `mode`: a new slot (an observer's
    /// worker starts or stops); the old one drains first.
    Replace,
    /// A new version in the running slot: queue, counters and worker stay.
    Swap,
}

impl Install {
    fn verb(self) -> &'static str {
        match self {
            Install::Add => "added",
            Install::Replace => "replaced",
            Install::Swap => "reloaded",
        }
    }
}

/// The slots in service, in config order, and the removed observers whose workers may still run.
#[derive(Debug, Default)]
pub(super) struct Slots {
    list: ArcSwap<Vec<Arc<Slot>>>,
    /// Removed observers whose workers may still be making what was due: a handler added again
    /// under the same name waits for its old worker, so one observer never has two.
    retired: Mutex<Vec<Arc<Slot>>>,
}

impl Slots {
    /// A snapshot of the slots in service.
    pub(super) fn snapshot(&self) -> Arc<Vec<Arc<Slot>>> {
        self.list.load_full()
    }

    /// The slot called `name`, if it is in service.
    pub(super) fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.list.load().iter().find(|s| s.name == name).cloned()
    }

    /// Puts `version` in a new slot, in place of `replacing` (same position) or at the end.
    /// Returns the slot and the one whose worker it must wait for (the one it replaces, or a
    /// removed observer of the same name), whose backlog it takes over.
    pub(super) fn insert(
        &self,
        version: Version,
        replacing: Option<Arc<Slot>>,
    ) -> (Arc<Slot>, Option<Arc<Slot>>) {
        let predecessor = replacing
            .clone()
            .or_else(|| self.take_retired(&version.spec.name));
        let backlog = predecessor
            .as_ref()
            .and_then(|old| old.queue_depth())
            .unwrap_or(0);
        let slot = Arc::new(Slot::new(version, backlog));
        self.list.rcu(|slots| {
            let mut slots = Vec::clone(slots);
            match replacing
                .as_ref()
                .and_then(|old| slots.iter().position(|s| Arc::ptr_eq(s, old)))
            {
                Some(at) => slots[at] = slot.clone(),
                None => slots.push(slot.clone()),
            }
            slots
        });
        (slot, predecessor)
    }

    /// Takes `name` out of the list and closes it; an observer is kept among the retired until
    /// its worker has finished.
    pub(super) fn remove(&self, name: &str) -> Option<Arc<Slot>> {
        let slot = self.get(name)?;
        self.list.rcu(|slots| {
            slots
                .iter()
                .filter(|s| s.name != name)
                .cloned()
                .collect::<Vec<_>>()
        });
        let _ = slot.close.send_replace(true);
        if slot.mode == Mode::Observe {
            let mut retired = lock(&self.retired);
            retired.retain(|old| !*old.finished.borrow());
            retired.push(slot.clone());
        }
        Some(slot)
    }

    fn take_retired(&self, name: &str) -> Option<Arc<Slot>> {
        let mut retired = lock(&self.retired);
        let at = retired.iter().position(|old| old.name == name)?;
        Some(retired.swap_remove(at))
    }
}

impl super::Dispatcher {
    /// Puts a loaded version in service as `how` says, and records it: the slot's last reload,
    /// the host's reload counter and one log line. `took` is how long loading took.
    pub fn install(&self, how: Install, version: Version, took: Duration) -> Arc<Slot> {
        let name = version.spec.name.clone();
        let digest = version.handler.digest().to_owned();
        let slot = match how {
            Install::Add => self.add(version),
            Install::Replace => self.replace(version),
            Install::Swap => match self.slot(&name) {
                Some(slot) => {
                    let old = slot.version().handler.digest()[..12].to_owned();
                    slot.swap(version);
                    tracing::info!(handler = %name, "reloaded: {old} -> {}", &digest[..12]);
                    slot
                }
                None => self.add(version),
            },
        };
        slot.set_last_reload(ReloadStatus::now("ok", Some(digest.clone()), None));
        tracing::info!(
            handler = %name,
            version = %&digest[..12],
            ms = took.as_millis(),
            "handler {}",
            how.verb()
        );
        self.stats().reloads_ok.fetch_add(1, Relaxed);
        slot
    }

    /// Records a version that could not be loaded: the running one (if any) stays in service,
    /// and its slot shows why. `digest` is the module's digest, when it could be read.
    pub fn install_failed(
        &self,
        how: Install,
        spec: &HandlerSpec,
        digest: Option<String>,
        error: &LoadError,
    ) {
        let error = crate::escape::escape(&error.to_string()).into_owned();
        let running = self.slot(&spec.name);
        match (&running, how) {
            (Some(slot), Install::Swap) => {
                let old = slot.version().handler.digest()[..12].to_owned();
                tracing::error!(handler = %spec.name, "reload failed, version {old} keeps running: {error}");
                slot.set_last_reload(ReloadStatus::now("failed", digest, Some(error)));
            }
            (Some(_), _) => tracing::error!(
                handler = %spec.name,
                "handler not replaced, the old one keeps running: {error}"
            ),
            (None, _) => tracing::error!(handler = %spec.name, "handler not added: {error}"),
        }
        self.stats().reloads_failed.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use serde_json::json;

    use super::super::test_support::{dispatcher, event, specs, version};
    use super::Install;
    use crate::config::Mode;
    use crate::sandbox::LoadError;

    fn names(d: &super::super::Dispatcher) -> Vec<String> {
        d.slots().iter().map(|s| s.name().to_owned()).collect()
    }

    #[tokio::test]
    async fn replace_keeps_the_place_remove_retires_and_a_return_takes_over_the_backlog() {
        let (d, _) = dispatcher(json!([
            {"name": "a", "mode": "gate", "config": {"behavior": "ok"}},
            {"name": "b", "config": {"behavior": "ok"}},
            {"name": "c", "mode": "gate", "config": {"behavior": "ok"}},
        ]))
        .await;
        let old_a = d.slot("a").unwrap();
        let spec = specs(json!([{"name": "a", "config": {"behavior": "ok"}}])).remove(0);
        let new_a = d.replace(version(&spec).await);
        assert!(!Arc::ptr_eq(&old_a, &new_a));
        assert_eq!(new_a.mode(), Mode::Observe);
        assert!(*old_a.close.borrow(), "the replaced slot is closed");
        assert_eq!(names(&d), ["a", "b", "c"], "in the same place");

        // Two deliveries accepted for b (no worker runs), then b goes and comes back.
        d.submit(
            &[event("e1"), event("e2")],
            super::super::Backpressure::Refuse,
        )
        .await
        .unwrap();
        assert_eq!(d.slot("b").unwrap().queue_depth(), Some(2));
        assert_eq!(d.remove("b"), Some(2));
        assert_eq!(names(&d), ["a", "c"]);
        assert_eq!(d.remove("b"), None);
        let spec = specs(json!([{"name": "b", "config": {"behavior": "ok"}}])).remove(0);
        let back = d.add(version(&spec).await);
        assert_eq!(
            back.queue_depth(),
            Some(2),
            "the open deliveries still count"
        );
        assert_eq!(names(&d), ["a", "c", "b"]);
    }

    #[tokio::test]
    async fn install_swaps_in_place_and_a_failed_load_leaves_the_version_running() {
        let (d, _) =
            dispatcher(json!([{"name": "g", "mode": "gate", "config": {"behavior": "ok"}}])).await;
        let slot = d.slot("g").unwrap();
        let spec =
            specs(json!([{"name": "g", "mode": "gate", "config": {"behavior": "deny"}}])).remove(0);
        let swapped = d.install(
            Install::Swap,
            version(&spec).await,
            Duration::from_millis(3),
        );
        assert!(Arc::ptr_eq(&slot, &swapped), "a swap keeps the slot");
        assert_eq!(slot.version().spec.source, spec.source);
        assert_eq!(slot.last_reload().unwrap().result, "ok");
        assert_eq!(d.stats().reloads_ok.load(Relaxed), 1);

        let error = LoadError::Init {
            status: crate::sandbox::Status::Error,
            message: "bad\nforged line".into(),
        };
        d.install_failed(Install::Swap, &spec, Some("abc".into()), &error);
        let failed = slot.last_reload().unwrap();
        assert_eq!(
            (failed.result, failed.digest.as_deref()),
            ("failed", Some("abc"))
        );
        assert!(
            !failed.error.unwrap().contains('\n'),
            "guest text is escaped"
        );
        assert_eq!(d.stats().reloads_failed.load(Relaxed), 1);
        assert_eq!(slot.version().spec.source, spec.source, "still running");

        let added = specs(json!([{"name": "n", "config": {"behavior": "ok"}}])).remove(0);
        d.install(Install::Add, version(&added).await, Duration::ZERO);
        assert_eq!(names(&d), ["g", "n"]);
    }

    #[tokio::test]
    async fn kept_events_are_taken_once_and_lower_ids_are_dropped() {
        let (d, _) = dispatcher(json!([{"name": "o", "config": {"behavior": "ok"}}])).await;
        let slot = d.slot("o").unwrap();
        slot.keep_accepted([(3, event("a")), (5, event("b")), (9, event("c"))]);
        assert_eq!(slot.take_accepted(5).unwrap().id(), "b");
        assert!(slot.take_accepted(5).is_none(), "taken once");
        assert!(
            slot.take_accepted(3).is_none(),
            "dropped: claimed elsewhere"
        );
        assert_eq!(slot.take_accepted(9).unwrap().id(), "c");
    }
}
