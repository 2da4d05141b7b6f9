//! Routing events to handlers: host-side filtering, a bounded queue and a worker per observer,
//! gates run in parallel with a merged verdict.
//!
//! Observers are fire-and-forget for the producer, but never lossy: a full queue refuses the
//! submission (or makes the producer wait) before anything is queued, so an event is either
//! queued for every subscribed observer or for none.
//!
//! A handler lives in a [`Slot`] that outlasts its versions: the queue, the worker and the
//! counters stay, while the [`Version`] (config entry, compiled module, breaker) can be swapped
//! atomically by a reload. An invocation holds the version it started with, so events in flight
//! finish on the old version and later ones run the new one.

mod breaker;
mod report;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, EntryError, HandlerSpec, Mode};
use crate::event::Event;
use crate::metrics::{HandlerSample, HandlerStats, HostStats};
use crate::sandbox::{Handler, Invocation, LoadError, Sandbox, Status};

pub use breaker::{Admission, Breaker, BreakerView, Transition};
pub use report::{Attributed, Decision, Report, Verdict};

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

/// A handler in service: its current version, its queue (observers), counters and reload state.
#[derive(Debug)]
pub struct Slot {
    name: String,
    mode: Mode,
    current: ArcSwap<Version>,
    /// Invocation counters, kept across versions.
    pub stats: HandlerStats,
    queue: Option<mpsc::Sender<Event>>,
    close: watch::Sender<bool>,
    /// Set when the observer's worker has finished its queue and stopped.
    finished: watch::Sender<bool>,
    last_reload: Mutex<Option<ReloadStatus>>,
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

    /// Events waiting in the observer's queue.
    pub fn queue_depth(&self) -> Option<usize> {
        self.queue.as_ref().map(|q| q.max_capacity() - q.capacity())
    }

    /// The capacity of the observer's queue.
    pub fn queue_capacity(&self) -> Option<usize> {
        self.queue.as_ref().map(|q| q.max_capacity())
    }

    /// The last reload attempt, if any.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a reload attempt.
    pub fn set_last_reload(&self, status: ReloadStatus) {
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
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
                let invocation = version.handler.on_event(event).await;
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
        }
        report
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
        .map_err(|e| LoadError::Compile {
            path: spec.module.clone(),
            message: format!("the compiler thread failed: {e}"),
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

/// Why a submission was refused. Nothing of it was queued or run.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// An observer's queue is full: retry later.
    #[error("the queue of observer {handler} is full; retry later")]
    Busy {
        /// The observer whose queue is full.
        handler: String,
    },
    /// The batch holds more events for one observer than its queue can ever hold.
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
}

/// What shutdown managed to do with the observers' queues.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drained {
    /// Events still queued when the grace period ran out; they were not delivered.
    pub abandoned: usize,
}

/// Routes events to the handlers in service.
#[derive(Debug)]
pub struct Dispatcher {
    slots: ArcSwap<Vec<Arc<Slot>>>,
    stats: Arc<HostStats>,
    workers: Mutex<JoinSet<()>>,
}

impl Dispatcher {
    /// Puts the loaded handlers in service, with a worker per observer. Must be called inside a
    /// tokio runtime.
    pub fn start(handlers: Vec<(HandlerSpec, Handler)>) -> Dispatcher {
        let dispatcher = Dispatcher {
            slots: ArcSwap::from_pointee(Vec::new()),
            stats: Arc::default(),
            workers: Mutex::new(JoinSet::new()),
        };
        for (spec, handler) in handlers {
            dispatcher.add(Version::new(spec, handler));
        }
        dispatcher
    }

    /// The handlers in service, in config order: a snapshot.
    pub fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
        self.slots.load_full()
    }

    /// The handler called `name`, if it is in service.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.load().iter().find(|s| s.name == name).cloned()
    }

    /// Puts a new handler in service (an observer gets its queue and worker).
    pub fn add(&self, version: Version) -> Arc<Slot> {
        self.insert(version, None)
    }

    /// Puts `version` in service in place of the handler of the same name, in one step, so no
    /// event falls between them. The old handler works through what it has queued first: the
    /// new observer's worker starts only when the old one has finished, which keeps order.
    pub fn replace(&self, version: Version) -> Arc<Slot> {
        let old = self.slot(&version.spec.name);
        let slot = self.insert(version, old.clone());
        if let Some(old) = old {
            let _ = old.close.send(true);
        }
        slot
    }

    fn insert(&self, version: Version, replacing: Option<Arc<Slot>>) -> Arc<Slot> {
        let (close, closed) = watch::channel(false);
        let (queue, receiver) = match version.spec.mode {
            Mode::Observe => {
                let (tx, rx) = mpsc::channel(version.spec.queue_capacity);
                (Some(tx), Some(rx))
            }
            Mode::Gate => (None, None),
        };
        let slot = Arc::new(Slot {
            name: version.spec.name.clone(),
            mode: version.spec.mode,
            current: ArcSwap::from_pointee(version),
            stats: HandlerStats::default(),
            queue,
            close,
            finished: watch::channel(false).0,
            last_reload: Mutex::new(None),
        });
        if let Some(rx) = receiver {
            let mut predecessor = replacing.as_ref().map(|old| old.finished.subscribe());
            let worker = slot.clone();
            self.lock_workers().spawn(async move {
                if let Some(done) = predecessor.as_mut() {
                    // A closed channel means the old worker is gone, which is just as good.
                    let _ = done.wait_for(|finished| *finished).await;
                }
                observe(worker, rx, closed).await;
            });
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

    /// Takes a handler out of service: new events no longer reach it, and an observer's worker
    /// works through what is already queued, then stops. Returns how many events it still had
    /// queued.
    pub fn remove(&self, name: &str) -> Option<usize> {
        let slot = self.slot(name)?;
        self.slots.rcu(|slots| {
            slots
                .iter()
                .filter(|s| s.name != name)
                .cloned()
                .collect::<Vec<_>>()
        });
        let _ = slot.close.send(true);
        Some(slot.queue_depth().unwrap_or(0))
    }

    /// Host-wide counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Prometheus text for every counter.
    pub fn metrics(&self) -> String {
        let slots = self.slots();
        let samples: Vec<HandlerSample<'_>> = slots
            .iter()
            .map(|s| {
                let breaker = s.version().breaker.view();
                HandlerSample {
                    name: &s.name,
                    stats: &s.stats,
                    queue_depth: s.queue_depth(),
                    quarantined: breaker.state != "closed",
                    quarantines: breaker.quarantines,
                }
            })
            .collect();
        crate::metrics::render(&self.stats, &samples)
    }

    /// Accepts a batch of events: room is reserved in every subscribed observer's queue for the
    /// whole batch first (all or nothing), then each event's gates run in parallel and the
    /// event is queued for its observers. Returns one decision per event, in order.
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
        let mut permits = Vec::new();
        let observers = if route == Route::Gates {
            &[][..]
        } else {
            &slots[..]
        };
        for slot in observers {
            let Some(queue) = &slot.queue else { continue };
            let wanted = events.iter().filter(|e| slot.wants(e)).count();
            if wanted == 0 {
                continue;
            }
            if wanted > queue.max_capacity() {
                return Err(Refused::TooLarge {
                    handler: slot.name.clone(),
                    wanted,
                    capacity: queue.max_capacity(),
                });
            }
            let reserved = match backpressure {
                Backpressure::Refuse => queue.try_reserve_many(wanted).ok(),
                Backpressure::Wait => queue.reserve_many(wanted).await.ok(),
            };
            let Some(reserved) = reserved else {
                self.stats.events_busy.fetch_add(1, Relaxed);
                return Err(Refused::Busy {
                    handler: slot.name.clone(),
                });
            };
            permits.push((slot, reserved));
        }
        self.stats
            .events_received
            .fetch_add(events.len() as u64, Relaxed);

        let mut decisions = Vec::with_capacity(events.len());
        for event in events {
            let gates = match route {
                Route::Observers => Vec::new(),
                Route::All | Route::Gates => {
                    run(&slots, event, |slot| slot.mode == Mode::Gate).await
                }
            };
            let mut queued = 0;
            for (slot, reserved) in &mut permits {
                if slot.wants(event)
                    && let Some(permit) = reserved.next()
                {
                    permit.send(event.clone());
                    queued += 1;
                }
            }
            decisions.push(Decision::merge(event.id(), gates, queued));
        }
        Ok(decisions)
    }

    /// Runs every handler subscribed to `event`, observers included, and waits for all of them:
    /// what `replay` does. Reports come back in config order.
    pub async fn run_all(&self, event: &Event) -> Vec<Report> {
        self.stats.events_received.fetch_add(1, Relaxed);
        run(&self.slots(), event, |_| true).await
    }

    /// Stops accepting events for observers and lets them work through their queues for up to
    /// `grace`; what is left after that is counted, not delivered.
    pub async fn shutdown(&self, grace: Duration) -> Drained {
        for slot in self.slots().iter() {
            let _ = slot.close.send(true);
        }
        let mut workers = std::mem::take(&mut *self.lock_workers());
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return Drained::default();
        }
        // A worker still running is in the middle of an event: count that one too.
        let queued: usize = self.slots().iter().filter_map(|s| s.queue_depth()).sum();
        let abandoned = queued + workers.len();
        workers.abort_all();
        Drained { abandoned }
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the handlers of `slots` subscribed to `event` that `select` picks, in parallel; reports
/// come back in config order.
async fn run(slots: &[Arc<Slot>], event: &Event, select: impl Fn(&Slot) -> bool) -> Vec<Report> {
    let mut running = JoinSet::new();
    for (index, slot) in slots.iter().enumerate() {
        let version = slot.version();
        if select(slot) && version.wants(event) {
            let (slot, event) = (slot.clone(), event.clone());
            running.spawn(async move {
                let admission = version.breaker.admit();
                (index, slot.invoke(&event, &version, admission).await)
            });
        }
    }
    let mut reports: Vec<(usize, Report)> = running.join_all().await;
    reports.sort_by_key(|(index, _)| *index);
    reports.into_iter().map(|(_, report)| report).collect()
}

/// An observer's worker: takes events from its queue one at a time, in order. While the
/// handler is quarantined it holds the event in hand (and the rest in the queue) until the next
/// probe may start. When the slot closes (removal, shutdown) the queue stops taking events and
/// is drained.
async fn observe(
    slot: Arc<Slot>,
    mut queue: mpsc::Receiver<Event>,
    mut closed: watch::Receiver<bool>,
) {
    let mut closing = false;
    loop {
        // Look at the signal every turn: it may have come while an event was running.
        if !closing && *closed.borrow_and_update() {
            queue.close();
            closing = true;
        }
        tokio::select! {
            biased;
            event = queue.recv() => match event {
                Some(event) => {
                    let (version, admission) = admit_when_ready(&slot).await;
                    slot.invoke(&event, &version, admission).await;
                }
                None => {
                    let _ = slot.finished.send(true);
                    return;
                }
            },
            changed = closed.changed(), if !closing => {
                // The dispatcher is gone: nothing more can arrive, so drain and stop.
                if changed.is_err() {
                    queue.close();
                    closing = true;
                }
            }
        }
    }
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
