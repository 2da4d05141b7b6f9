//! Routing events to handlers: gates run in parallel with a merged verdict; observers go through
//! the outbox.
//!
//! An event for observers is written to the outbox (one delivery per subscribed observer) before
//! the producer hears "accepted", and each observer's worker works its deliveries off in order:
//! success marks a delivery done, a failure schedules a retry with backoff, and the last allowed
//! failure dead-letters it. Backpressure is all or nothing: a submission that would take an
//! observer past its `queueCapacity` of open deliveries is refused (or waits) before anything is
//! written.
//!
//! A handler lives in a [`Slot`] that outlasts its versions: the worker and the counters stay,
//! while the [`Version`] (config entry, compiled module, breaker) can be swapped atomically by a
//! reload. An invocation holds the version it started with, so events in flight finish on the
//! old version and later ones run the new one.

mod breaker;
mod report;
mod size;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::{Config, EntryError, HandlerSpec, Mode, RetryPolicy};
use crate::event::Event;
use crate::event::registry::Registry;
use crate::limits::Limits;
use crate::metrics::{HandlerSample, HandlerStats, HostStats};
use crate::outbox::{self, Delivery, NewEvent, OnDuplicate, Store};
use crate::sandbox::{Handler, Invocation, LoadError, Sandbox, Status};
use crate::trace;

pub use breaker::{Admission, Breaker, BreakerView, Transition};
pub use report::{Attributed, Decision, Report, Verdict};

/// How often an idle observer looks in the outbox for retries that have come due, and for work
/// another process (an operator's `dead-letters retry`) put there.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often an idle observer recounts its open deliveries in the outbox: other processes (git
/// hooks, an operator's retries) add and finish deliveries this process does not count.
const RECOUNT_INTERVAL: Duration = Duration::from_secs(5);

/// How much handler time one claim may take on: the batch's lease covers this much.
const BATCH_BUDGET: Duration = Duration::from_secs(5);

/// The most deliveries one claim takes.
const MAX_BATCH: usize = 64;

/// How long a claimed delivery stays claimed beyond the handler's deadline: if the process dies
/// mid-delivery, another one (or the next start) takes it over after this.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How long after its deadline a delivery's lease runs out.
fn lease(limits: &Limits) -> Duration {
    Duration::from_millis(limits.timeout_ms) + LEASE_MARGIN
}

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
    fn wants(&self, event: &Event) -> bool {
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

/// A handler in service: its current version, counters, reload state and, for an observer, its
/// delivery worker's bookkeeping.
#[derive(Debug)]
pub struct Slot {
    name: String,
    mode: Mode,
    current: ArcSwap<Version>,
    /// Invocation counters, kept across versions.
    pub stats: HandlerStats,
    /// Observers: deliveries open in the outbox as this process counts them (accepted here and
    /// not yet done or dead), for backpressure.
    backlog: AtomicUsize,
    /// Tells the observer's worker that new deliveries are in the outbox.
    wake: Notify,
    close: watch::Sender<bool>,
    /// Set when the observer's worker has stopped.
    finished: watch::Sender<bool>,
    /// Whether the observer's worker was started (it is started once).
    worker_started: AtomicBool,
    last_reload: Mutex<Option<ReloadStatus>>,
    last_failure: Mutex<Option<Failure>>,
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

impl Slot {
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
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The most recent failure, if any.
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a reload attempt.
    pub fn set_last_reload(&self, status: ReloadStatus) {
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    /// Reserves room for `wanted` deliveries within the observer's capacity; all or nothing.
    fn reserve(&self, wanted: usize) -> bool {
        let capacity = self.version().spec.queue_capacity;
        let before = self.backlog.fetch_add(wanted, Relaxed);
        if before + wanted > capacity {
            self.unreserve(wanted);
            return false;
        }
        true
    }

    /// Gives back room: deliveries finished (done or dead), or a reservation not used.
    fn unreserve(&self, count: usize) {
        let _ = self
            .backlog
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(count)));
    }

    /// Whether the current version subscribes to `event`.
    fn wants(&self, event: &Event) -> bool {
        self.current.load().wants(event)
    }

    /// Runs `version` on one event as `admission` allows (a quarantined handler is not run and
    /// reports `quarantined`), records the outcome, and logs failures and quarantine changes.
    async fn invoke(&self, event: &Event, version: &Version, admission: Admission) -> Report {
        let spec = &version.spec;
        let digest = version.handler.digest();
        let invocation = match admission {
            Admission::Refuse { retry_in } => Invocation {
                status: Status::Quarantined,
                outcome: None,
                error: Some(format!(
                    "quarantined after repeated failures; next probe in {} ms",
                    retry_in.as_millis()
                )),
                fuel_consumed: 0,
                duration: Duration::ZERO,
            },
            Admission::Run | Admission::Probe => {
                let span = trace::HandlerSpan::start(&self.name, role_of(spec.mode), digest, event);
                let invocation = span.scope(version.handler.on_event(event)).await;
                span.end(
                    invocation.status.as_str(),
                    invocation.fuel_consumed,
                    invocation.error.as_deref(),
                );
                let ok = invocation.status == Status::Ok;
                log_transition(&self.name, version.breaker.record(admission, ok));
                invocation
            }
        };
        let role = Some((spec.mode, spec.failure_policy));
        let report = Report::new(&self.name, digest, role, event.id(), invocation);
        let denied = spec.mode == Mode::Gate && report.verdict == Some(Verdict::Deny);
        let duration = Duration::from_secs_f64(report.duration_ms / 1e3);
        self.stats
            .record(report.status, denied, report.fuel_consumed, duration);
        let version = &digest[..12];
        let event = event.id();
        if matches!(report.status, Status::Ok | Status::Quarantined) {
            tracing::debug!(handler = %self.name, version, event, status = %report.status, "handled");
        } else {
            let reason = report.reason.as_deref().unwrap_or_default();
            tracing::warn!(handler = %self.name, version, event, cause = %report.status, "handler failed: {reason}");
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure {
                at: jiff::Timestamp::now().to_string(),
                event_id: event.to_owned(),
                status: report.status,
                reason: report.reason.clone(),
            });
        }
        report
    }
}

/// How a span names a handler's role.
fn role_of(mode: Mode) -> &'static str {
    match mode {
        Mode::Gate => "gate",
        Mode::Observe => "observer",
    }
}

/// Loads every enabled handler of `config`: read, verify, compile (off the executor), run
/// `init`. Returns the loaded ones and one error per handler that could not be loaded.
pub async fn load_handlers(
    sandbox: &Sandbox,
    config: &Config,
) -> (Vec<(HandlerSpec, Handler)>, Vec<EntryError>) {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for spec in config.handlers.iter().filter(|s| s.enabled) {
        match load_handler(sandbox, spec).await {
            Ok(handler) => loaded.push((spec.clone(), handler)),
            Err(e) => errors.push(EntryError {
                index: spec.index,
                name: Some(spec.name.clone()),
                message: e.to_string(),
            }),
        }
    }
    (loaded, errors)
}

/// Loads one handler: compile off the executor, then `init`.
pub async fn load_handler(sandbox: &Sandbox, spec: &HandlerSpec) -> Result<Handler, LoadError> {
    let (sandbox, owned) = (sandbox.clone(), spec.clone());
    let handler = tokio::task::spawn_blocking(move || sandbox.load(&owned))
        .await
        .map_err(|source| LoadError::CompilerThread {
            path: spec.module.clone(),
            source,
        })??;
    handler.init().await?;
    Ok(handler)
}

/// How a submission behaves when an observer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Refuse at once with [`Refused::Busy`] (HTTP answers 503).
    Refuse,
    /// Wait for room (the library and `replay`).
    Wait,
}

/// Which handlers a submission reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Gates and observers: the usual case.
    All,
    /// Only gates: a decision is needed now, and observers hear later.
    Gates,
    /// Only observers: the action already happened.
    Observers,
}

/// Why a submission was refused. Nothing of it was stored or run.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// An observer has no room for more open deliveries within its `queueCapacity`.
    #[error(
        "observer {handler} has no room for {wanted} more deliveries (queueCapacity {capacity}); retry later"
    )]
    Busy {
        /// The observer that is full.
        handler: String,
        /// Deliveries the submission needed with it.
        wanted: usize,
        /// Its capacity.
        capacity: usize,
    },
    /// The batch holds more events for one observer than its capacity can ever hold.
    #[error(
        "the batch holds {wanted} events for observer {handler}, whose queue holds {capacity}; send smaller batches"
    )]
    TooLarge {
        /// The observer.
        handler: String,
        /// Events of the batch it subscribes to.
        wanted: usize,
        /// Its queue's capacity.
        capacity: usize,
    },
    /// An event is larger than a handler it would reach can process within its fuel.
    #[error(
        "event {event} is {size} bytes, more than handler {handler} can take ({limit} bytes for limits.fuel {fuel}); send a smaller event, or raise the handler's limits.fuel"
    )]
    EventTooLarge {
        /// The event's id.
        event: String,
        /// Its size as handlers get it (the CloudEvent JSON).
        size: u64,
        /// The handler.
        handler: String,
        /// The largest event the handler takes.
        limit: u64,
        /// The handler's fuel, which the limit comes from.
        fuel: u64,
    },
    /// The outbox could not store the events, so they were not accepted.
    #[error("{0}; the events were not accepted, retry later")]
    Unavailable(outbox::StoreError),
}

/// What shutdown left behind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drained {
    /// Deliveries still open in the outbox (due later, or not reached before the grace period
    /// ran out). A durable outbox delivers them after the next start.
    pub left: u64,
}

/// Routes events to the handlers in service.
#[derive(Debug)]
pub struct Dispatcher {
    slots: ArcSwap<Vec<Arc<Slot>>>,
    stats: Arc<HostStats>,
    outbox: Arc<dyn Store>,
    /// Whether observers' workers run; see [`Dispatcher::start_delivering`].
    delivering: AtomicBool,
    /// Removed observers whose workers may still be making what was due: a handler added again
    /// under the same name waits for its old worker, so one observer never has two.
    retired: Mutex<Vec<Arc<Slot>>>,
    workers: Mutex<JoinSet<()>>,
    /// The event types ingest checks events against; a reload replaces it.
    registry: ArcSwap<Registry>,
}

impl Dispatcher {
    /// Puts the loaded handlers in service, their observers' deliveries going through `outbox`;
    /// observers' workers start with [`Dispatcher::start_delivering`]. Must be called inside a
    /// tokio runtime.
    pub async fn start(
        handlers: Vec<(HandlerSpec, Handler)>,
        outbox: Arc<dyn Store>,
    ) -> Dispatcher {
        let dispatcher = Dispatcher {
            slots: ArcSwap::from_pointee(Vec::new()),
            stats: Arc::default(),
            outbox,
            delivering: AtomicBool::new(false),
            retired: Mutex::new(Vec::new()),
            workers: Mutex::new(JoinSet::new()),
            registry: ArcSwap::from_pointee(Registry::default()),
        };
        for (spec, handler) in handlers {
            dispatcher.add(Version::new(spec, handler));
        }
        // Deliveries left by an earlier process count against capacity too.
        match dispatcher.outbox.gauges().await {
            Ok(gauges) => {
                for gauge in gauges {
                    if let Some(slot) = dispatcher.slot(&gauge.handler) {
                        let open = usize::try_from(gauge.open).unwrap_or(0);
                        slot.backlog.fetch_add(open, Relaxed);
                        if open > 0 {
                            tracing::info!(handler = %gauge.handler, open, "deliveries waiting in the outbox");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot count the outbox's open deliveries: {e}"),
        }
        dispatcher
    }

    /// The event types ingest checks events against.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Replaces the event types (at start and on reload).
    pub fn set_registry(&self, registry: Arc<Registry>) {
        self.registry.store(registry);
    }

    /// The outbox observers' deliveries go through.
    pub fn outbox(&self) -> &Arc<dyn Store> {
        &self.outbox
    }

    /// The handlers in service, in config order: a snapshot.
    pub fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
        self.slots.load_full()
    }

    /// The handler called `name`, if it is in service.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.load().iter().find(|s| s.name == name).cloned()
    }

    /// Puts a new handler in service (an observer gets its delivery worker).
    pub fn add(&self, version: Version) -> Arc<Slot> {
        self.insert(version, None)
    }

    /// Puts `version` in service in place of the handler of the same name, in one step, so no
    /// event falls between them. The new observer's worker starts only when the old one has
    /// finished its delivery in hand, which keeps order.
    pub fn replace(&self, version: Version) -> Arc<Slot> {
        let old = self.slot(&version.spec.name);
        let slot = self.insert(version, old.clone());
        if let Some(old) = old {
            let _ = old.close.send_replace(true);
        }
        slot
    }

    fn insert(&self, version: Version, replacing: Option<Arc<Slot>>) -> Arc<Slot> {
        let mode = version.spec.mode;
        let predecessor = replacing
            .clone()
            .or_else(|| self.take_retired(&version.spec.name));
        let backlog = predecessor
            .as_ref()
            .and_then(|old| old.queue_depth())
            .unwrap_or(0);
        let slot = Arc::new(Slot {
            name: version.spec.name.clone(),
            mode,
            current: ArcSwap::from_pointee(version),
            stats: HandlerStats::default(),
            backlog: AtomicUsize::new(backlog),
            wake: Notify::new(),
            close: watch::channel(false).0,
            finished: watch::channel(false).0,
            worker_started: AtomicBool::new(false),
            last_reload: Mutex::new(None),
            last_failure: Mutex::new(None),
        });
        if self.delivering.load(Relaxed) {
            self.start_worker(&slot, predecessor.as_deref());
        }
        self.slots.rcu(|slots| {
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
        slot
    }

    /// Starts the observers' workers: from now on they deliver what the outbox holds for them,
    /// including what earlier processes left there. `serve` and `replay` start at once; a git
    /// hook only when it has something for observers (a pre-receive that only asks gates must
    /// not start working off the backlog, only to be cut off when it exits).
    pub fn start_delivering(&self) {
        if self.delivering.swap(true, Relaxed) {
            return;
        }
        for slot in self.slots().iter() {
            self.start_worker(slot, None);
        }
    }

    /// Starts `slot`'s worker, once, if it is an observer. A replacement's worker waits until
    /// the predecessor's has finished its delivery in hand, which keeps order.
    fn start_worker(&self, slot: &Arc<Slot>, predecessor: Option<&Slot>) {
        if slot.mode != Mode::Observe || slot.worker_started.swap(true, Relaxed) {
            return;
        }
        let mut predecessor = predecessor
            .filter(|old| old.worker_started.load(Relaxed))
            .map(|old| old.finished.subscribe());
        let (worker, outbox) = (slot.clone(), self.outbox.clone());
        let closed = slot.close.subscribe();
        self.lock_workers().spawn(async move {
            if let Some(done) = predecessor.as_mut() {
                // A closed channel means the old worker is gone, which is just as good.
                let _ = done.wait_for(|finished| *finished).await;
            }
            deliver(worker, outbox, closed).await;
        });
    }

    /// Takes a handler out of service: new events no longer reach it, and an observer's worker
    /// makes the deliveries that are due now, then stops. Retries due later stay in the outbox
    /// (for a later version of it, or an operator). Returns how many it had open.
    pub fn remove(&self, name: &str) -> Option<usize> {
        let slot = self.slot(name)?;
        self.slots.rcu(|slots| {
            slots
                .iter()
                .filter(|s| s.name != name)
                .cloned()
                .collect::<Vec<_>>()
        });
        let _ = slot.close.send_replace(true);
        if slot.mode == Mode::Observe {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            retired.retain(|old| !*old.finished.borrow());
            retired.push(slot.clone());
        }
        Some(slot.queue_depth().unwrap_or(0))
    }

    /// The removed observer called `name` whose worker may still run, if any.
    fn take_retired(&self, name: &str) -> Option<Arc<Slot>> {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let at = retired.iter().position(|old| old.name == name)?;
        Some(retired.swap_remove(at))
    }

    /// Wakes the worker of observer `name` (an operator put its dead letters back).
    pub fn wake(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            slot.wake.notify_one();
        }
    }

    /// Host-wide counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Prometheus text for every counter, with the outbox's figures read now.
    pub async fn metrics(&self) -> String {
        let gauges = match self.outbox.gauges().await {
            Ok(gauges) => gauges,
            Err(e) => {
                tracing::warn!("metrics without outbox figures: {e}");
                Vec::new()
            }
        };
        let now = outbox::now();
        let slots = self.slots();
        let samples: Vec<HandlerSample<'_>> = slots
            .iter()
            .map(|s| {
                let breaker = s.version().breaker.view();
                let gauge = gauges.iter().find(|g| g.handler == s.name);
                let observer = s.mode == Mode::Observe;
                HandlerSample {
                    name: &s.name,
                    stats: &s.stats,
                    queue_depth: observer.then(|| gauge.map_or(0, |g| g.open)),
                    oldest_open_secs: gauge
                        .and_then(|g| g.oldest_open_at)
                        .map(|at| (now - at).max(0) as f64 / 1e3),
                    dead_letters: observer.then(|| gauge.map_or(0, |g| g.dead)),
                    quarantined: breaker.state != "closed",
                    quarantines: breaker.quarantines,
                }
            })
            .collect();
        let lags: Vec<(&str, u64)> = slots
            .iter()
            .filter_map(|s| {
                let gauge = gauges.iter().find(|g| g.handler == s.name)?;
                Some((s.name.as_str(), gauge.lag?))
            })
            .collect();
        let mut text = crate::metrics::render(&self.stats, &samples);
        text.push_str(&crate::metrics::render_backend(
            &self.outbox.backend(),
            &lags,
        ));
        text
    }

    /// Accepts a batch of events: room is reserved with every subscribed observer for the whole
    /// batch first (all or nothing), then each event's gates run in parallel while its
    /// deliveries are committed to the outbox. Returns one decision per event, in order.
    pub async fn submit(
        &self,
        events: &[Event],
        backpressure: Backpressure,
    ) -> Result<Vec<Decision>, Refused> {
        self.submit_to(events, Route::All, backpressure).await
    }

    /// Like [`Dispatcher::submit`], for only the gates or only the observers: a git server asks
    /// its gates before refs move (pre-receive) and tells its observers after (post-receive).
    pub async fn submit_to(
        &self,
        events: &[Event],
        route: Route,
        backpressure: Backpressure,
    ) -> Result<Vec<Decision>, Refused> {
        let slots = self.slots();
        size::check(&slots, events, route)?;
        let observers: Vec<&Arc<Slot>> = match route {
            Route::Gates => Vec::new(),
            Route::All | Route::Observers => {
                slots.iter().filter(|s| s.mode == Mode::Observe).collect()
            }
        };
        // Who gets each event, and how many events each observer gets, in one pass.
        let mut wanted = vec![0; observers.len()];
        let subscribed: Vec<Vec<&Arc<Slot>>> = events
            .iter()
            .map(|event| {
                let mut who = Vec::new();
                for (slot, count) in observers.iter().zip(&mut wanted) {
                    if slot.wants(event) {
                        who.push(*slot);
                        *count += 1;
                    }
                }
                who
            })
            .collect();
        let demand: Vec<(&Arc<Slot>, usize)> = observers.iter().copied().zip(wanted).collect();
        let mut reserved = self.reserve(&demand, backpressure).await?;
        self.stats
            .events_received
            .fetch_add(events.len() as u64, Relaxed);

        let stored = self.store(events, &subscribed, route);
        let gates = async {
            let mut gates = Vec::with_capacity(events.len());
            for event in events {
                gates.push(match route {
                    Route::Observers => Vec::new(),
                    Route::All | Route::Gates => {
                        run(&slots, event, |slot| slot.mode == Mode::Gate).await
                    }
                });
            }
            gates
        };
        let (stored, gates) = tokio::join!(stored, gates);
        // On an error the reservation is dropped, which gives the room back.
        let accepted = stored.map_err(Refused::Unavailable)?;

        let mut decisions = Vec::with_capacity(events.len());
        for ((event, gates), (observers, accepted)) in events
            .iter()
            .zip(gates)
            .zip(subscribed.iter().zip(accepted))
        {
            if accepted.duplicate {
                self.stats.events_duplicate.fetch_add(1, Relaxed);
                for slot in observers {
                    reserved.give_back(slot, 1);
                }
            } else {
                for slot in observers {
                    slot.wake.notify_one();
                }
            }
            self.record_gates(accepted.seq, &gates);
            let mut decision = Decision::merge(event.id(), gates, accepted.deliveries.len());
            decision.duplicate = accepted.duplicate;
            decisions.push(decision);
        }
        // The room left now belongs to the stored deliveries, until each is done or dead.
        reserved.keep();
        Ok(decisions)
    }

    /// Reserves room with each observer for the deliveries it is to get; on refusal (or if the
    /// caller goes away while it waits) nothing stays reserved.
    async fn reserve<'a>(
        &self,
        demand: &[(&'a Arc<Slot>, usize)],
        backpressure: Backpressure,
    ) -> Result<Reservation<'a>, Refused> {
        let mut reserved = Reservation::default();
        for &(slot, wanted) in demand {
            if wanted == 0 {
                continue;
            }
            let capacity = slot.version().spec.queue_capacity;
            let refusal = if wanted > capacity {
                Some(Refused::TooLarge {
                    handler: slot.name.clone(),
                    wanted,
                    capacity,
                })
            } else {
                loop {
                    if slot.reserve(wanted) {
                        break None;
                    }
                    if backpressure == Backpressure::Refuse {
                        self.stats.events_busy.fetch_add(1, Relaxed);
                        break Some(Refused::Busy {
                            handler: slot.name.clone(),
                            wanted,
                            capacity,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            if let Some(refused) = refusal {
                return Err(refused);
            }
            reserved.held.push((slot, wanted));
        }
        Ok(reserved)
    }

    /// Commits the events, with their observers' deliveries, in one transaction: every event
    /// is kept in the history. Only a batch with deliveries is a promise (fsynced); a history
    /// the store cannot write is logged and does not fail a request that stores no delivery.
    async fn store(
        &self,
        events: &[Event],
        subscribed: &[Vec<&Arc<Slot>>],
        route: Route,
    ) -> Result<Vec<outbox::Accepted>, outbox::StoreError> {
        let for_observers = route != Route::Gates;
        let rows: Vec<NewEvent> = events
            .iter()
            .zip(subscribed)
            .map(|(event, observers)| {
                new_event(
                    event,
                    observers.iter().map(|s| s.name.clone()),
                    for_observers,
                )
            })
            .collect();
        let promised = rows.iter().any(|row| !row.handlers.is_empty());
        match self
            .outbox
            .accept(rows, OnDuplicate::Skip, None, outbox::now())
            .await
        {
            Ok(accepted) => Ok(accepted),
            Err(e) if !promised => {
                tracing::warn!("cannot keep the events' history: {e}");
                Ok(events
                    .iter()
                    .map(|_| outbox::Accepted {
                        duplicate: false,
                        deliveries: Vec::new(),
                        seq: 0,
                    })
                    .collect())
            }
            Err(e) => Err(e),
        }
    }

    /// Adds the gates' outcomes to the event's history, without waiting for the commit.
    fn record_gates(&self, seq: i64, gates: &[Report]) {
        if seq == 0 || gates.is_empty() {
            return;
        }
        let outcomes = gates.iter().map(|report| report.outcome(1)).collect();
        let recorded = self.outbox.record_outcomes(seq, outcomes);
        tokio::spawn(async move {
            if let Err(e) = recorded.await {
                tracing::warn!("cannot record the gates' outcomes: {e}");
            }
        });
    }

    /// Runs every handler subscribed to `event` now, observers included, and waits for all of
    /// them: what `replay` does. The observers' deliveries are still written to the outbox first
    /// (claimed by this call), so one that fails is retried like any other. Reports come back in
    /// config order.
    pub async fn replay(&self, event: &Event) -> Result<Vec<Report>, Refused> {
        self.stats.events_received.fetch_add(1, Relaxed);
        let slots = self.slots();
        let observers: Vec<&Arc<Slot>> = slots
            .iter()
            .filter(|s| s.mode == Mode::Observe && s.wants(event))
            .collect();
        let mut deliveries = HashMap::new();
        if !observers.is_empty() {
            let lease = observers
                .iter()
                .map(|s| lease(&s.version().spec.limits))
                .max()
                .unwrap_or(LEASE_MARGIN);
            let row = new_event(event, observers.iter().map(|s| s.name.clone()), true);
            let accepted = self
                .outbox
                .accept(
                    vec![row],
                    OnDuplicate::Redeliver,
                    Some(lease),
                    outbox::now(),
                )
                .await
                .map_err(Refused::Unavailable)?;
            let ids = accepted.into_iter().next().map(|a| a.deliveries);
            for (slot, id) in observers.iter().zip(ids.unwrap_or_default()) {
                slot.backlog.fetch_add(1, Relaxed);
                deliveries.insert(slot.name.as_str(), (*slot, id));
            }
        }
        let reports = run(&slots, event, |_| true).await;
        for report in &reports {
            // A quarantined observer did not run: its delivery waits for its lease to run out
            // and is then made like any other, without this non-attempt counting as a failure.
            if report.status == Status::Quarantined {
                continue;
            }
            if let Some((slot, id)) = deliveries.get(report.handler.as_str()) {
                let retry = slot.version().spec.retry;
                settle(slot, &*self.outbox, &retry, *id, 1, report).await;
            }
        }
        Ok(reports)
    }

    /// The newest event with CloudEvents id `id` (from `source`, when given) and every
    /// handler's outcome for it, while the history keeps it.
    pub async fn history_event(
        &self,
        id: String,
        source: Option<String>,
    ) -> Result<Option<outbox::EventRecord>, outbox::StoreError> {
        self.outbox.event(id, source).await
    }

    /// The history's events matching `filter`, newest first, at most `limit`.
    pub async fn history(
        &self,
        filter: outbox::HistoryFilter,
        limit: usize,
    ) -> Result<Vec<outbox::EventRecord>, outbox::StoreError> {
        self.outbox.events(filter, limit).await
    }

    /// Stops the observers' workers: each finishes what is due now (its delivery in hand, and
    /// the rest while the grace period lasts), then stops. What is left stays in the outbox.
    pub async fn shutdown(&self, grace: Duration) -> Drained {
        for slot in self.slots().iter() {
            let _ = slot.close.send_replace(true);
        }
        let mut workers = std::mem::take(&mut *self.lock_workers());
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // A worker still running is in the middle of a delivery, which stays claimed until
            // its lease runs out: the next process makes it again.
            workers.abort_all();
            while workers.join_next().await.is_some() {}
        }
        let names: Vec<String> = self.slots().iter().map(|s| s.name.clone()).collect();
        let left = match self.outbox.gauges().await {
            Ok(gauges) => gauges
                .iter()
                .filter(|g| names.contains(&g.handler))
                .map(|g| g.open)
                .sum(),
            Err(e) => {
                tracing::warn!("cannot count what is left in the outbox: {e}");
                0
            }
        };
        Drained { left }
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Room reserved with observers for one submission. Dropped before [`Reservation::keep`] (the
/// outbox failed, the producer went away), it gives the room back.
#[derive(Default)]
struct Reservation<'a> {
    held: Vec<(&'a Arc<Slot>, usize)>,
}

impl Reservation<'_> {
    /// Gives back room for `count` deliveries of `slot` that were not stored (duplicates).
    fn give_back(&mut self, slot: &Slot, count: usize) {
        if let Some((_, held)) = self
            .held
            .iter_mut()
            .find(|(s, _)| std::ptr::eq(&***s, slot))
        {
            let count = count.min(*held);
            *held -= count;
            slot.unreserve(count);
        }
    }

    /// The rest stays reserved: the stored deliveries give it back as they finish.
    fn keep(mut self) {
        self.held.clear();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for (slot, count) in self.held.drain(..) {
            slot.unreserve(count);
        }
    }
}

/// The outbox row of `event` for `observers`; `for_observers` says whether the request was
/// routed to observers at all (see [`NewEvent::for_observers`]).
fn new_event(
    event: &Event,
    observers: impl Iterator<Item = String>,
    for_observers: bool,
) -> NewEvent {
    let attribute = |name: &str| event.json().get(name).and_then(|s| s.as_str());
    NewEvent {
        source: attribute("source").unwrap_or_default().to_owned(),
        id: event.id().to_owned(),
        event_type: event.event_type().to_owned(),
        subject: attribute("subject").map(str::to_owned),
        json: event.json().to_string(),
        handlers: observers.collect(),
        for_observers,
    }
}

/// Runs the handlers of `slots` subscribed to `event` that `select` picks, in parallel; reports
/// come back in config order.
///
/// The invocations are detached tasks: if the caller goes away (an HTTP client hangs up), they
/// still finish and record their outcome, so no breaker is left waiting on a probe.
async fn run(slots: &[Arc<Slot>], event: &Event, select: impl Fn(&Slot) -> bool) -> Vec<Report> {
    let mut running = Vec::new();
    for slot in slots {
        let version = slot.version();
        if select(slot) && version.wants(event) {
            let (slot, event) = (slot.clone(), event.clone());
            running.push(tokio::spawn(async move {
                let admission = version.breaker.admit();
                slot.invoke(&event, &version, admission).await
            }));
        }
    }
    let mut reports = Vec::with_capacity(running.len());
    for task in running {
        match task.await {
            Ok(report) => reports.push(report),
            // Only a panic in the host's own code gets here; the other reports still count.
            Err(e) => tracing::error!("a handler invocation task failed: {e}"),
        }
    }
    reports
}

/// An observer's worker: claims its due deliveries from the outbox in batches (up to
/// [`MAX_BATCH`], see [`batch`]), lowest id first, and makes them in that order. While the handler is quarantined it claims nothing, so its deliveries
/// wait in the outbox without using up attempts. When the slot closes (removal, replacement,
/// shutdown) it makes what is due now and stops.
///
/// Recording how a delivery went and claiming the next one are sent to the store together, so
/// they share a commit: a claimed delivery is never due, so neither can see the other's row.
async fn deliver(slot: Arc<Slot>, outbox: Arc<dyn Store>, mut closed: watch::Receiver<bool>) {
    // Records of the last batch's outcomes, queued with the store: the next claim is queued
    // behind them, so it sees them, and they share its commit.
    let mut recording: Vec<Recording> = Vec::new();
    let mut recounted = tokio::time::Instant::now();
    loop {
        let closing = *closed.borrow_and_update();
        let version = slot.version();
        let (version, admission) = match version.breaker.admit() {
            Admission::Refuse { .. } if closing => break,
            Admission::Refuse { .. } => {
                await_records(&mut recording).await;
                tokio::select! {
                    ready = admit_when_ready(&slot) => ready,
                    _ = closed.changed() => continue,
                }
            }
            admission => (version, admission),
        };
        let (size, lease) = batch(&version.spec.limits);
        let claim = outbox.claim(slot.name.clone(), size, lease, outbox::now());
        await_records(&mut recording).await;
        match claim.await {
            Ok(batch) if !batch.is_empty() => {
                recording = attempt_all(&slot, &outbox, &version, admission, batch).await;
            }
            Ok(_) => {
                version.breaker.release(admission);
                if closing {
                    break;
                }
                if recounted.elapsed() >= RECOUNT_INTERVAL {
                    recounted = tokio::time::Instant::now();
                    if let Ok(open) = outbox.open_count(slot.name.clone()).await {
                        slot.backlog
                            .store(usize::try_from(open).unwrap_or(usize::MAX), Relaxed);
                    }
                }
                tokio::select! {
                    _ = slot.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = closed.changed() => {}
                }
            }
            Err(e) => {
                version.breaker.release(admission);
                if closing {
                    break;
                }
                tracing::error!(handler = %slot.name, "cannot claim deliveries: {e}; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    await_records(&mut recording).await;
    let _ = slot.finished.send_replace(true);
}

/// How many deliveries a worker claims at once, and the lease that covers them all: as many as
/// fit in [`BATCH_BUDGET`] of deadlines (at least one, at most [`MAX_BATCH`]), so a killed
/// process's claims come back within about that plus [`LEASE_MARGIN`].
fn batch(limits: &Limits) -> (usize, Duration) {
    let timeout = Duration::from_millis(limits.timeout_ms);
    let size = (BATCH_BUDGET.as_millis() / u128::from(limits.timeout_ms.max(1)))
        .clamp(1, MAX_BATCH as u128) as usize;
    (size, timeout * size as u32 + LEASE_MARGIN)
}

/// Makes the claimed deliveries in order, each admitted by the breaker; if it opens partway,
/// the rest are released unattempted. Returns their records, queued with the store.
async fn attempt_all(
    slot: &Arc<Slot>,
    outbox: &Arc<dyn Store>,
    version: &Version,
    first: Admission,
    batch: Vec<Delivery>,
) -> Vec<Recording> {
    let mut recording: Vec<Recording> = Vec::with_capacity(batch.len());
    let mut admission = Some(first);
    let mut deliveries = batch.into_iter();
    while let Some(delivery) = deliveries.next() {
        let admitted = admission.take().unwrap_or_else(|| version.breaker.admit());
        if let Admission::Refuse { .. } = admitted {
            let rest = std::iter::once(delivery.id)
                .chain(deliveries.map(|d| d.id))
                .collect();
            let released = outbox.release(rest, outbox::now());
            recording.push(Box::pin(async move {
                if let Err(e) = released.await {
                    tracing::error!(
                        "cannot release deliveries: {e}; they are made when their lease runs out"
                    );
                }
            }));
            break;
        }
        recording.extend(attempt(slot, outbox, version, admitted, delivery).await);
    }
    recording
}

/// A delivery's outcome on its way to the store.
type Recording = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waits for every queued record to commit.
async fn await_records(recording: &mut Vec<Recording>) {
    for recorded in recording.drain(..) {
        recorded.await;
    }
}

/// Makes one attempt of one delivery; returns the record of how it went, queued with the store,
/// to be awaited.
async fn attempt(
    slot: &Arc<Slot>,
    outbox: &Arc<dyn Store>,
    version: &Version,
    admission: Admission,
    delivery: Delivery,
) -> Option<Recording> {
    let event = match Event::from_stored(delivery.event_json.as_bytes()) {
        Ok(event) => event,
        Err(e) => {
            // Only a hand-edited outbox gets here: retrying cannot help.
            version.breaker.release(admission);
            let cause = format!("the stored event no longer parses ({e}); discard it");
            tracing::error!(handler = %slot.name, delivery = delivery.id, "{cause}");
            slot.unreserve(1);
            if let Err(e) = outbox.dead_letter(delivery.id, cause, outbox::now()).await {
                tracing::error!(handler = %slot.name, delivery = delivery.id, "{e}");
            }
            return None;
        }
    };
    let report = slot.invoke(&event, version, admission).await;
    Some(settle(
        slot,
        &**outbox,
        &version.spec.retry,
        delivery.id,
        delivery.attempt,
        &report,
    ))
}

/// Records attempt number `attempt` of delivery `id`: done, a retry after a backoff, or a dead
/// letter once `retry.maxAttempts` is used up. The record is queued with the store now; the
/// returned future waits for it to commit.
fn settle(
    slot: &Slot,
    outbox: &dyn Store,
    retry: &RetryPolicy,
    id: i64,
    attempt: u32,
    report: &Report,
) -> Recording {
    let now = outbox::now();
    // Queued before the settlement, so it shares its commit.
    let history = outbox.record_delivery_outcome(id, report.outcome(attempt));
    let recorded = if report.status == Status::Ok {
        slot.unreserve(1);
        outbox.complete(id, now)
    } else {
        let cause = report
            .reason
            .clone()
            .unwrap_or_else(|| report.status.to_string());
        if attempt >= retry.max_attempts {
            slot.unreserve(1);
            slot.stats.record_dead_letter();
            tracing::warn!(handler = %slot.name, delivery = id, event = %report.event_id, "dead-lettered after {attempt} attempts: {cause}");
            outbox.dead_letter(id, cause, now)
        } else {
            let wait = retry.backoff_with_jitter(attempt);
            slot.stats.record_retry();
            tracing::info!(handler = %slot.name, delivery = id, event = %report.event_id, "attempt {attempt} failed; retrying in {} ms", wait.as_millis());
            let at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            outbox.retry_later(id, cause, at, now)
        }
    };
    let handler = slot.name.clone();
    Box::pin(async move {
        if let Err(e) = history.await {
            tracing::warn!(handler, delivery = id, "cannot record the outcome: {e}");
        }
        if let Err(e) = recorded.await {
            tracing::error!(
                handler,
                delivery = id,
                "cannot record the attempt: {e}; it is made again when its lease runs out"
            );
        }
    })
}

/// Waits until the current version's breaker lets an event through. The version is read again
/// after each wait: a reload may have replaced a quarantined version.
async fn admit_when_ready(slot: &Slot) -> (Arc<Version>, Admission) {
    loop {
        let version = slot.version();
        match version.breaker.admit() {
            Admission::Refuse { retry_in } => {
                // A probe in progress elsewhere reports zero: check again shortly.
                tokio::time::sleep(
                    retry_in.clamp(Duration::from_millis(10), Duration::from_secs(1)),
                )
                .await;
            }
            admission => return (version, admission),
        }
    }
}

fn log_transition(handler: &str, transition: Option<Transition>) {
    match transition {
        Some(Transition::Opened { failures, backoff }) => tracing::warn!(
            handler,
            "quarantined after {failures} consecutive failures; probing again in {} ms",
            backoff.as_millis()
        ),
        Some(Transition::Reopened { backoff }) => tracing::warn!(
            handler,
            "probe failed; quarantined again, probing in {} ms",
            backoff.as_millis()
        ),
        Some(Transition::Closed) => tracing::info!(handler, "probe succeeded; back in service"),
        None => {}
    }
}
