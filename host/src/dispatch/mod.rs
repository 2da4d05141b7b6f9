//! Routing events to handlers: gates run in parallel with a merged verdict; observers go through
//! the outbox.
//!
//! An event for observers is written to the outbox (one delivery per subscribed observer) before
//! the producer hears "accepted", and each observer's worker works its deliveries off in order,
//! in batches of up to 64 (as many as fit in 5 s of its deadline): success marks a delivery done,
//! a failure schedules a retry with backoff, and the last allowed failure dead-letters it.
//! Backpressure is all or nothing: a submission that would take an observer past its
//! `queueCapacity` of open deliveries is refused (or waits) before anything is written.
//!
//! The parts, one module each:
//! - [`registry`]: the handlers in service, their slots and versions (add, replace, swap,
//!   remove);
//! - [`admission`]: reserving observers' room and storing what is accepted;
//! - [`gates`]: running handlers in parallel, and the verdict observers of a denied event see;
//! - [`worker`]: an observer's worker (claim, run, settle);
//! - [`invoke`]: one handler on one event; [`report`]: what it means; [`breaker`]: quarantine.

mod admission;
mod breaker;
mod gates;
mod invoke;
mod operations;
mod registry;
mod report;
mod size;
#[cfg(feature = "server")]
mod snapshot;
#[cfg(test)]
mod test_support;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, EntryError, HandlerSpec, Mode};
use crate::event::Event;
use crate::event::registry::Registry;
use crate::metrics::HostStats;
use crate::outbox::{self, OnDuplicate, Store};
use crate::sandbox::{Handler, LoadError, Sandbox, Status};

pub use admission::{Backpressure, Refused};
pub use breaker::{Admission, Breaker, BreakerView, Transition};
pub use gates::{DENIED_BY_ATTRIBUTE, VERDICT_ATTRIBUTE, denied_by, with_verdict};
pub use operations::{Deliveries, NotReady, RetriedLetter};
pub use registry::{Failure, Install, ReloadStatus, Slot, Version};
pub use report::{Attributed, Decision, Report, Verdict};
#[cfg(feature = "server")]
pub use snapshot::{HandlerSnapshot, Snapshot};

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
    slots: registry::Slots,
    stats: Arc<HostStats>,
    outbox: Arc<dyn Store>,
    workers: worker::Workers,
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
            slots: registry::Slots::default(),
            stats: Arc::default(),
            outbox,
            workers: worker::Workers::default(),
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
        self.slots.snapshot()
    }

    /// The handler called `name`, if it is in service.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.get(name)
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
        let (slot, predecessor) = self.slots.insert(version, replacing);
        if self.workers.delivering.load(Relaxed) {
            self.workers
                .start(&slot, predecessor.as_deref(), &self.outbox);
        }
        slot
    }

    /// Starts the observers' workers: from now on they deliver what the outbox holds for them,
    /// including what earlier processes left there. `serve` and `replay` start at once; a git
    /// hook only when it has something for observers (a pre-receive that only asks gates must
    /// not start working off the backlog, only to be cut off when it exits).
    pub fn start_delivering(&self) {
        if self.workers.delivering.swap(true, Relaxed) {
            return;
        }
        for slot in self.slots().iter() {
            self.workers.start(slot, None, &self.outbox);
        }
    }

    /// Takes a handler out of service: new events no longer reach it, and an observer's worker
    /// makes the deliveries that are due now, then stops. Retries due later stay in the outbox
    /// (for a later version of it, or an operator). Returns how many it had open.
    pub fn remove(&self, name: &str) -> Option<usize> {
        let slot = self.slots.remove(name)?;
        Some(slot.queue_depth().unwrap_or(0))
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
    ///
    /// With [`Route::All`], an event that gates and observers both subscribe to is stored once
    /// its gates have decided, so what observers receive carries the verdict (see
    /// [`with_verdict`]); other events are stored while their gates run.
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
        let mut reserved = admission::reserve(&self.stats, &demand, backpressure).await?;
        self.stats
            .events_received
            .fetch_add(events.len() as u64, Relaxed);

        let run_gates = async {
            let mut gates = Vec::with_capacity(events.len());
            for event in events {
                gates.push(match route {
                    Route::Observers => Vec::new(),
                    Route::All | Route::Gates => {
                        gates::run(&slots, event, |slot| slot.mode == Mode::Gate).await
                    }
                });
            }
            gates
        };
        let for_observers = route != Route::Gates;
        let gated = route == Route::All
            && events.iter().zip(&subscribed).any(|(event, who)| {
                !who.is_empty() && slots.iter().any(|s| s.mode == Mode::Gate && s.wants(event))
            });
        let (stored, gates, delivered) = if gated {
            let gates = run_gates.await;
            let marked: Vec<Event> = events
                .iter()
                .zip(&gates)
                .zip(&subscribed)
                .map(|((event, gates), who)| {
                    if who.is_empty() {
                        event.clone()
                    } else {
                        with_verdict(event, gates)
                    }
                })
                .collect();
            let stored = admission::store(&*self.outbox, &marked, &subscribed, for_observers).await;
            (stored, gates, marked)
        } else {
            let stored = admission::store(&*self.outbox, events, &subscribed, for_observers);
            let (stored, gates) = tokio::join!(stored, run_gates);
            (stored, gates, events.to_vec())
        };
        // On an error the reservation is dropped, which gives the room back.
        let accepted = stored.map_err(Refused::Unavailable)?;

        let mut decisions = Vec::with_capacity(events.len());
        for (((event, gates), (observers, accepted)), delivered) in events
            .iter()
            .zip(gates)
            .zip(subscribed.iter().zip(accepted))
            .zip(delivered)
        {
            if accepted.duplicate {
                self.stats.events_duplicate.fetch_add(1, Relaxed);
                for slot in observers {
                    reserved.give_back(slot, 1);
                }
            } else {
                for (slot, id) in observers.iter().zip(&accepted.deliveries) {
                    slot.keep_accepted([(*id, delivered.clone())]);
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
                .map(|s| worker::lease(&s.version().spec.limits))
                .max()
                .unwrap_or(worker::LEASE_MARGIN);
            let row = admission::new_event(event, observers.iter().map(|s| s.name.clone()), true);
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
        let reports = gates::run(&slots, event, |_| true).await;
        let mut settlements = Vec::new();
        for report in &reports {
            // A quarantined observer did not run: its delivery waits for its lease to run out
            // and is then made like any other, without this non-attempt counting as a failure.
            if report.status == Status::Quarantined {
                continue;
            }
            if let Some((slot, id)) = deliveries.get(report.handler.as_str()) {
                let retry = slot.version().spec.retry;
                settlements.push(worker::settle(slot, &retry, *id, 1, report));
            }
        }
        if !settlements.is_empty()
            && let Err(e) = self.outbox.settle(settlements).await
        {
            tracing::error!(
                "cannot record the attempts: {e}; they are made again when their lease runs out"
            );
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

    /// Stops the observers' workers: each finishes what is due now (its batch in hand, and
    /// the rest while the grace period lasts), then stops. What is left stays in the outbox.
    pub async fn shutdown(&self, grace: Duration) -> Drained {
        for slot in self.slots().iter() {
            let _ = slot.close.send_replace(true);
        }
        // A worker still running after `grace` is in the middle of a delivery, which stays
        // claimed until its lease runs out: the next process makes it again.
        self.workers.stop(grace).await;
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
}
