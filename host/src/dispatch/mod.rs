//! Routing events to handlers: host-side filtering, a bounded queue and a worker per observer,
//! gates run in parallel with a merged verdict.
//!
//! Observers are fire-and-forget for the producer, but never lossy: a full queue refuses the
//! submission (or makes the producer wait) before anything is queued, so an event is either
//! queued for every subscribed observer or for none.

mod breaker;
mod report;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, EntryError, HandlerSpec, Mode};
use crate::event::Event;
use crate::metrics::{HandlerSample, HandlerStats, HostStats};
use crate::sandbox::{Handler, Invocation, LoadError, Sandbox, Status};

pub use breaker::{Admission, Breaker, BreakerView, Transition};
pub use report::{Attributed, Decision, Report, Verdict};

/// A loaded handler: its config entry, its compiled version and its counters.
#[derive(Debug)]
pub struct Slot {
    /// The entry from `proxy.config.json`.
    pub spec: HandlerSpec,
    /// The compiled module.
    pub handler: Handler,
    /// Invocation counters.
    pub stats: HandlerStats,
    /// Quarantine after repeated failures.
    pub breaker: Breaker,
    /// The observer's queue (observers only).
    queue: Option<mpsc::Sender<Event>>,
}

impl Slot {
    /// Runs the handler on one event as `admission` allows (a quarantined handler is not run and
    /// reports `quarantined`), records the outcome, and logs failures and quarantine changes.
    async fn invoke(&self, event: &Event, admission: Admission) -> Report {
        let spec = &self.spec;
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
                let invocation = self.handler.on_event(event).await;
                let transition = self
                    .breaker
                    .record(admission, invocation.status == Status::Ok);
                log_transition(&spec.name, transition);
                invocation
            }
        };
        let role = Some((spec.mode, spec.failure_policy));
        let report = Report::new(
            &spec.name,
            self.handler.digest(),
            role,
            event.id(),
            invocation,
        );
        let denied = spec.mode == Mode::Gate && report.verdict == Some(Verdict::Deny);
        self.stats.record(
            report.status,
            denied,
            report.fuel_consumed,
            Duration::from_secs_f64(report.duration_ms / 1e3),
        );
        if !matches!(report.status, Status::Ok | Status::Quarantined) {
            tracing::warn!(
                handler = %spec.name,
                version = %&self.handler.digest()[..12],
                event = %event.id(),
                cause = %report.status,
                "handler failed: {}",
                report.reason.as_deref().unwrap_or_default()
            );
        }
        report
    }

    /// Whether this handler subscribes to `event`.
    fn wants(&self, event: &Event) -> bool {
        self.spec.filter.matches(event.event_type(), event.refs())
    }

    /// Events waiting in the observer's queue.
    pub fn queue_depth(&self) -> Option<usize> {
        self.queue.as_ref().map(|q| q.max_capacity() - q.capacity())
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
        let result = async {
            let (sandbox, s) = (sandbox.clone(), spec.clone());
            let handler = tokio::task::spawn_blocking(move || sandbox.load(&s))
                .await
                .map_err(|e| LoadError::Compile {
                    path: spec.module.clone(),
                    message: format!("the compiler thread failed: {e}"),
                })??;
            handler.init().await?;
            Ok::<_, LoadError>(handler)
        }
        .await;
        match result {
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

/// Routes events to the loaded handlers.
#[derive(Debug)]
pub struct Dispatcher {
    slots: Vec<Arc<Slot>>,
    stats: Arc<HostStats>,
    stop: watch::Sender<bool>,
    workers: std::sync::Mutex<JoinSet<()>>,
}

impl Dispatcher {
    /// Starts a worker per observer. Must be called inside a tokio runtime.
    pub fn start(handlers: Vec<(HandlerSpec, Handler)>) -> Dispatcher {
        let (stop, _) = watch::channel(false);
        let mut workers = JoinSet::new();
        let slots = handlers
            .into_iter()
            .map(|(spec, handler)| {
                let (queue, receiver) = match spec.mode {
                    Mode::Observe => {
                        let (tx, rx) = mpsc::channel(spec.queue_capacity);
                        (Some(tx), Some(rx))
                    }
                    Mode::Gate => (None, None),
                };
                let slot = Arc::new(Slot {
                    breaker: Breaker::new(spec.quarantine),
                    spec,
                    handler,
                    stats: HandlerStats::default(),
                    queue,
                });
                if let Some(rx) = receiver {
                    workers.spawn(observe(slot.clone(), rx, stop.subscribe()));
                }
                slot
            })
            .collect();
        Dispatcher {
            slots,
            stats: Arc::default(),
            stop,
            workers: std::sync::Mutex::new(workers),
        }
    }

    /// The loaded handlers, in config order.
    pub fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// Host-wide counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Prometheus text for every counter.
    pub fn metrics(&self) -> String {
        let samples: Vec<HandlerSample<'_>> = self
            .slots
            .iter()
            .map(|s| {
                let breaker = s.breaker.view();
                HandlerSample {
                    name: &s.spec.name,
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
        let mut permits = Vec::new();
        let observers = if route == Route::Gates {
            &[][..]
        } else {
            &self.slots[..]
        };
        for slot in observers {
            let Some(queue) = &slot.queue else { continue };
            let wanted = events.iter().filter(|e| slot.wants(e)).count();
            if wanted == 0 {
                continue;
            }
            if wanted > queue.max_capacity() {
                return Err(Refused::TooLarge {
                    handler: slot.spec.name.clone(),
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
                    handler: slot.spec.name.clone(),
                });
            };
            permits.push((slot.clone(), reserved));
        }
        self.stats
            .events_received
            .fetch_add(events.len() as u64, Relaxed);

        let mut decisions = Vec::with_capacity(events.len());
        for event in events {
            let gates = match route {
                Route::Observers => Vec::new(),
                Route::All | Route::Gates => {
                    self.run(event, |slot| slot.spec.mode == Mode::Gate).await
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
        self.run(event, |_| true).await
    }

    /// Runs the handlers subscribed to `event` that `select` picks, in parallel; reports come
    /// back in config order.
    async fn run(&self, event: &Event, select: impl Fn(&Slot) -> bool) -> Vec<Report> {
        let mut running = JoinSet::new();
        for (index, slot) in self.slots.iter().enumerate() {
            if select(slot) && slot.wants(event) {
                let (slot, event) = (slot.clone(), event.clone());
                running
                    .spawn(async move { (index, slot.invoke(&event, slot.breaker.admit()).await) });
            }
        }
        let mut reports: Vec<(usize, Report)> = running.join_all().await;
        reports.sort_by_key(|(index, _)| *index);
        reports.into_iter().map(|(_, report)| report).collect()
    }

    /// Stops accepting events for observers and lets them work through their queues for up to
    /// `grace`; what is left after that is counted, not delivered.
    pub async fn shutdown(&self, grace: Duration) -> Drained {
        let _ = self.stop.send(true);
        let mut workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return Drained::default();
        }
        // A worker still running is in the middle of an event: count that one too.
        let queued: usize = self.slots.iter().filter_map(|s| s.queue_depth()).sum();
        let abandoned = queued + workers.len();
        workers.abort_all();
        Drained { abandoned }
    }
}

/// An observer's worker: takes events from its queue one at a time, in order. While the
/// handler is quarantined it holds the event in hand (and the rest in the queue) until the next
/// probe may start. On shutdown the queue is closed to new events and drained.
async fn observe(
    slot: Arc<Slot>,
    mut queue: mpsc::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            event = queue.recv() => match event {
                Some(event) => {
                    let admission = admit_when_ready(&slot.breaker).await;
                    slot.invoke(&event, admission).await;
                }
                None => return,
            },
            _ = stop.changed(), if !*stop.borrow() => queue.close(),
        }
    }
}

/// Waits until the breaker lets an event through.
async fn admit_when_ready(breaker: &Breaker) -> Admission {
    loop {
        match breaker.admit() {
            Admission::Refuse { retry_in } => {
                // A probe in progress elsewhere reports zero: check again shortly.
                tokio::time::sleep(retry_in.max(Duration::from_millis(10))).await;
            }
            admission => return admission,
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
