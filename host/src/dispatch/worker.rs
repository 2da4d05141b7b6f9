//! An observer's worker: claims its due deliveries from the outbox in batches, lowest id first,
//! runs each in order in a fresh instance, and settles each (outcome, done, retry or dead
//! letter) in one store call as soon as it is made, without waiting: the store's group commit
//! puts a batch's records in one transaction, and a process killed mid-batch repeats only the
//! delivery it had in hand.
//!
//! A fast handler's worker claims its next batch as it starts a batch ([`Store::claim_ahead`]:
//! its own lease does not hold it back), so the store finds it while the batch runs and the
//! worker does not wait for the store between batches. The next batch is run only if this one
//! was made to its end; otherwise it is given back after this one's rest, which keeps the order.
//! Without one claimed ahead, the records of a batch and the claim of the next are sent to the
//! store together, so they share a commit: a claimed delivery is never due, so neither can see
//! the other's row. While the handler is quarantined the worker claims nothing, so its
//! deliveries wait in the outbox without using up attempts. When the slot closes (removal,
//! replacement, shutdown) it makes what is due now and stops.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Mode, RetryPolicy};
use crate::escape::escape;
use crate::event::Event;
use crate::limits::Limits;
use crate::outbox::{self, Delivery, Settled, Settlement, Store, StoreFuture};
use crate::sandbox::{self, Status};

use super::breaker::Admission;
use super::registry::{Slot, Version};
use super::report::Report;

/// How often an idle observer looks in the outbox for retries that have come due, and for work
/// another process (an operator's `dead-letters retry`) put there.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often an idle observer recounts its open deliveries in the outbox: other processes (git
/// hooks, an operator's retries) add and finish deliveries this process does not count.
const RECOUNT_INTERVAL: Duration = Duration::from_secs(5);

/// How much handler time one claim may take on: the batch's lease covers this much (or one
/// deadline, if longer).
const BATCH_BUDGET: Duration = Duration::from_secs(5);

/// The most deliveries one claim takes.
const MAX_BATCH: usize = 64;

/// How long a claimed delivery stays claimed beyond the handler's deadline: if the process dies
/// mid-delivery, another one (or the next start) takes it over after this.
pub(super) const LEASE_MARGIN: Duration = Duration::from_millis(5_000);

/// How long after its deadline a delivery's lease runs out.
pub(super) fn lease(limits: &Limits) -> Duration {
    Duration::from_millis(limits.timeout_ms) + LEASE_MARGIN
}

/// How many deliveries a worker claims at once, and the lease that covers them: up to
/// [`MAX_BATCH`], leased for [`BATCH_BUDGET`] (or one deadline, if longer) plus
/// [`LEASE_MARGIN`], so a killed process's claims come back within about 10 s with the default
/// limits. A delivery is started only while its deadline ends within the budget (see
/// [`Budget`]); the rest of the batch is given back, so fast handlers get big batches and slow
/// ones are never run past their lease.
pub(super) fn batch(limits: &Limits) -> (usize, Duration) {
    let timeout = Duration::from_millis(limits.timeout_ms);
    (MAX_BATCH, BATCH_BUDGET.max(timeout) + LEASE_MARGIN)
}

/// The part of a batch's lease its deliveries may use.
struct Budget {
    claimed: tokio::time::Instant,
    budget: Duration,
    timeout: Duration,
    /// Claimed ahead, while the batch before ran: its lease has been running since.
    ahead: bool,
}

impl Budget {
    fn new(limits: &Limits) -> Budget {
        let timeout = Duration::from_millis(limits.timeout_ms);
        Budget {
            claimed: tokio::time::Instant::now(),
            budget: BATCH_BUDGET.max(timeout),
            timeout,
            ahead: false,
        }
    }

    /// The budget of a batch claimed ahead; `None` for a handler whose deadline is half the
    /// budget or more: after a batch of its, too little of the lease would be left to start one.
    fn ahead(limits: &Limits) -> Option<Budget> {
        let budget = Budget::new(limits);
        (budget.timeout < budget.budget / 2).then_some(Budget {
            ahead: true,
            ..budget
        })
    }

    /// The same lease, for deliveries run under `limits` (a reload may have changed the
    /// deadline since the batch was claimed ahead).
    fn under(self, limits: &Limits) -> Budget {
        Budget {
            timeout: Duration::from_millis(limits.timeout_ms),
            ..self
        }
    }

    /// Whether the next delivery, running to its deadline, still ends within the lease. The
    /// first one of a batch claimed when it was needed always does.
    fn fits(&self, first: bool) -> bool {
        (first && !self.ahead) || self.claimed.elapsed() + self.timeout <= self.budget
    }
}

/// The next batch, claimed while the current one runs (see [`Store::claim_ahead`]).
struct Ahead {
    claim: StoreFuture<Vec<Delivery>>,
    budget: Budget,
}

impl Ahead {
    /// Gives the batch back unattempted, when it is not to be run now (the batch before it was
    /// cut short, whose rest was given back first; quarantine; shutdown).
    async fn give_back(self, outbox: &dyn Store, queued: &mut Queued) {
        if let Ok(batch) = self.claim.await
            && !batch.is_empty()
        {
            let ids = batch.iter().map(|d| d.id).collect();
            queued.0.push(outbox.release(ids, outbox::now()));
        }
    }
}

/// The observers' workers of one dispatcher.
#[derive(Debug, Default)]
pub(super) struct Workers {
    /// Whether workers run; see [`super::Dispatcher::start_delivering`].
    pub(super) delivering: AtomicBool,
    set: Mutex<JoinSet<()>>,
}

impl Workers {
    fn lock(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `slot`'s worker, once, if it is an observer. A replacement's worker waits until
    /// the predecessor's has finished its delivery in hand, which keeps order.
    pub(super) fn start(
        &self,
        slot: &Arc<Slot>,
        predecessor: Option<&Slot>,
        outbox: &Arc<dyn Store>,
    ) {
        if slot.mode != Mode::Observe || slot.worker_started.swap(true, Relaxed) {
            return;
        }
        let mut predecessor = predecessor
            .filter(|old| old.worker_started.load(Relaxed))
            .map(|old| old.finished.subscribe());
        let (worker, outbox) = (slot.clone(), outbox.clone());
        let closed = slot.close.subscribe();
        // On the observers' runtime, where its invocations then run in place.
        let runtime = sandbox::runtime(Mode::Observe);
        self.lock().spawn_on(
            async move {
                if let Some(done) = predecessor.as_mut() {
                    // A closed channel means the old worker is gone, which is just as good.
                    let _ = done.wait_for(|finished| *finished).await;
                }
                deliver(worker, outbox, closed).await;
            },
            runtime,
        );
    }

    /// Waits up to `grace` for every worker to stop; the ones still running then are aborted
    /// (their deliveries in hand, and a batch claimed ahead, stay claimed until their lease runs
    /// out).
    pub(super) async fn stop(&self, grace: Duration) {
        let mut workers = std::mem::take(&mut *self.lock());
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            workers.abort_all();
            while workers.join_next().await.is_some() {}
        }
    }
}

/// Records sent to the store and not yet known to be committed.
#[derive(Default)]
struct Queued(Vec<StoreFuture<()>>);

impl Queued {
    /// Waits for every queued record to commit; failures are logged (the attempts are made
    /// again when their lease runs out).
    async fn commit(&mut self, handler: &str) {
        for recorded in self.0.drain(..) {
            if let Err(e) = recorded.await {
                tracing::error!(
                    handler,
                    "cannot record attempts: {e}; they are made again when their lease runs out"
                );
            }
        }
    }
}

/// The worker's loop; see the module's doc.
async fn deliver(slot: Arc<Slot>, outbox: Arc<dyn Store>, mut closed: watch::Receiver<bool>) {
    let mut queued = Queued::default();
    let mut recounted = tokio::time::Instant::now();
    let mut ahead: Option<Ahead> = None;
    // Whether the last batch was made to its end: after one cut short by its lease, a batch
    // claimed ahead would most likely be given back unrun.
    let mut last_finished = true;
    loop {
        let closing = *closed.borrow_and_update();
        let version = slot.version();
        let (version, admission) = match version.breaker.admit() {
            Admission::Refuse { .. } if closing => break,
            Admission::Refuse { .. } => {
                if let Some(ahead) = ahead.take() {
                    ahead.give_back(&*outbox, &mut queued).await;
                }
                queued.commit(&slot.name).await;
                tokio::select! {
                    ready = admit_when_ready(&slot) => ready,
                    _ = closed.changed() => continue,
                }
            }
            admission => (version, admission),
        };
        let limits = &version.spec.limits;
        let (size, lease) = batch(limits);
        let (claim, budget) = match ahead.take() {
            Some(Ahead { claim, budget }) => (claim, budget.under(limits)),
            // Queued behind the last batch's records, so it sees them and shares their commit.
            None => (
                outbox.claim(slot.name.clone(), size, lease, outbox::now()),
                Budget::new(limits),
            ),
        };
        let claimed_ahead = budget.ahead;
        queued.commit(&slot.name).await;
        match claim.await {
            Ok(batch) if !batch.is_empty() => {
                // The next batch, claimed now: the store works on it while this one runs.
                ahead = Budget::ahead(limits)
                    .filter(|_| last_finished)
                    .map(|budget| Ahead {
                        claim: outbox.claim_ahead(
                            slot.name.clone(),
                            batch.iter().map(|d| d.id).collect(),
                            size,
                            lease,
                            outbox::now(),
                        ),
                        budget,
                    });
                let batch = Batch {
                    deliveries: batch,
                    budget,
                };
                last_finished =
                    attempt_all(&slot, &*outbox, &version, admission, batch, &mut queued).await;
                if !last_finished && let Some(ahead) = ahead.take() {
                    ahead.give_back(&*outbox, &mut queued).await;
                }
            }
            // Nothing was due when the batch before was claimed: look again now.
            Ok(_) if claimed_ahead => version.breaker.release(admission),
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
    if let Some(ahead) = ahead.take() {
        ahead.give_back(&*outbox, &mut queued).await;
    }
    queued.commit(&slot.name).await;
    let _ = slot.finished.send_replace(true);
}

/// Deliveries claimed together, and how much of their lease is left.
struct Batch {
    deliveries: Vec<Delivery>,
    budget: Budget,
}

/// Makes the claimed deliveries in order, each admitted by the breaker; if it opens partway, or
/// the lease has no room left for another deadline, the rest are released unattempted and this
/// returns `false`. Each record is sent to the store as soon as the delivery is made, queued in
/// `queued`.
async fn attempt_all(
    slot: &Slot,
    outbox: &dyn Store,
    version: &Version,
    first: Admission,
    batch: Batch,
    queued: &mut Queued,
) -> bool {
    let mut admission = Some(first);
    let mut deliveries = batch.deliveries.into_iter();
    while let Some(delivery) = deliveries.next() {
        let first = admission.is_some();
        if !batch.budget.fits(first) {
            if let Some(unused) = admission.take() {
                version.breaker.release(unused);
            }
            let rest = std::iter::once(delivery.id)
                .chain(deliveries.map(|d| d.id))
                .collect();
            queued.0.push(outbox.release(rest, outbox::now()));
            return false;
        }
        let admitted = admission.take().unwrap_or_else(|| version.breaker.admit());
        if let Admission::Refuse { .. } = admitted {
            let rest = std::iter::once(delivery.id)
                .chain(deliveries.map(|d| d.id))
                .collect();
            queued.0.push(outbox.release(rest, outbox::now()));
            return false;
        }
        if let Some(settlement) = attempt(slot, outbox, version, admitted, delivery).await {
            queued.0.push(outbox.settle(vec![settlement]));
        }
    }
    true
}

/// Makes one attempt of one delivery, on the event this process accepted when it has it (no
/// second parse), else on the stored JSON; returns its record.
async fn attempt(
    slot: &Slot,
    outbox: &dyn Store,
    version: &Version,
    admission: Admission,
    delivery: Delivery,
) -> Option<Settlement> {
    let event = match slot.take_accepted(delivery.id) {
        Some(event) => event,
        None => match Event::from_stored(delivery.event_json.as_bytes()) {
            Ok(event) => event,
            Err(e) => {
                // Only a hand-edited outbox gets here: retrying cannot help.
                version.breaker.release(admission);
                let cause = format!("the stored event no longer parses ({e}); discard it");
                tracing::error!(handler = %slot.name, delivery = delivery.id, "{}", escape(&cause));
                slot.unreserve(1);
                if let Err(e) = outbox.dead_letter(delivery.id, cause, outbox::now()).await {
                    tracing::error!(handler = %slot.name, delivery = delivery.id, "{e}");
                }
                return None;
            }
        },
    };
    let report = slot.invoke(&event, version, admission).await;
    Some(settle(
        slot,
        &version.spec.retry,
        delivery.id,
        delivery.attempt,
        &report,
    ))
}

/// What attempt number `attempt` of delivery `id` comes to: done, a retry after a backoff, or a
/// dead letter once `retry.maxAttempts` is used up. Counts it and gives back the observer's
/// room when the delivery is finished.
pub(super) fn settle(
    slot: &Slot,
    retry: &RetryPolicy,
    id: i64,
    attempt: u32,
    report: &Report,
) -> Settlement {
    let now = outbox::now();
    let settled = if report.status == Status::Ok {
        slot.unreserve(1);
        Settled::Done
    } else {
        let cause = report
            .reason
            .clone()
            .unwrap_or_else(|| report.status.to_string());
        if attempt >= retry.max_attempts {
            slot.unreserve(1);
            slot.stats.record_dead_letter();
            tracing::warn!(handler = %slot.name, delivery = id, event = %report.event_id, "dead-lettered after {attempt} attempts: {}", escape(&cause));
            Settled::Dead { cause }
        } else {
            let wait = retry.backoff_with_jitter(attempt);
            slot.stats.record_retry();
            tracing::info!(handler = %slot.name, delivery = id, event = %report.event_id, "attempt {attempt} failed; retrying in {} ms", wait.as_millis());
            let at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            Settled::Retry { cause, at }
        }
    };
    Settlement {
        delivery: id,
        outcome: report.outcome(attempt),
        settled,
        now,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::super::Backpressure;
    use super::super::test_support::{dispatcher, event, until};
    use super::*;
    use crate::outbox::{NewEvent, OnDuplicate};

    fn invocations(slot: &Slot) -> u64 {
        slot.stats.counts().invocations.values().sum()
    }

    #[test]
    fn a_batch_fits_five_seconds_of_deadlines() {
        let limits = |timeout_ms| Limits {
            timeout_ms,
            ..Limits::default()
        };
        assert_eq!(batch(&limits(1000)), (MAX_BATCH, Duration::from_secs(10)));
        assert_eq!(batch(&limits(60_000)), (MAX_BATCH, Duration::from_secs(65)));
        let slow = Budget::new(&limits(60_000));
        assert!(
            slow.fits(true) && !slow.fits(false),
            "one slow delivery per lease"
        );
        let fast = Budget::new(&limits(1000));
        assert!(fast.fits(false), "a fast one fits many");
    }

    #[tokio::test]
    async fn a_slow_batch_gives_back_what_its_lease_cannot_cover() {
        let (d, store) = dispatcher(json!([{
            "name": "o", "config": {"behavior": "ok"}, "limits": {"timeoutMs": 5000}
        }]))
        .await;
        let events: Vec<Event> = (0..3).map(|i| event(&format!("s{i}"))).collect();
        d.submit(&events, Backpressure::Wait).await.unwrap();
        d.start_delivering();
        let slot = d.slot("o").unwrap();
        // A deadline of 5 s fills the 5 s budget: one delivery per claim, the rest given back
        // unattempted (so their attempts are not counted) and claimed again.
        until("3 deliveries", || invocations(&slot) == 3).await;
        d.shutdown(Duration::from_secs(5)).await;
        let record = store.event("s2".into(), None).await.unwrap().unwrap();
        assert_eq!(
            record.outcomes[0].attempt, 1,
            "released claims do not count"
        );
        assert_eq!(store.counts().await.unwrap()[0].done, 3);
    }

    #[tokio::test]
    async fn a_worker_delivers_in_order_and_settles_every_delivery() {
        let (d, store) = dispatcher(json!([{"name": "o", "config": {"behavior": "ok"}}])).await;
        let events: Vec<Event> = (0..20).map(|i| event(&format!("w{i}"))).collect();
        d.submit(&events, Backpressure::Wait).await.unwrap();
        d.start_delivering();
        let slot = d.slot("o").unwrap();
        until("20 deliveries", || invocations(&slot) == 20).await;
        d.shutdown(Duration::from_secs(5)).await;
        let counts = store.counts().await.unwrap();
        assert_eq!((counts[0].done, counts[0].pending), (20, 0));
        assert_eq!(
            slot.queue_depth(),
            Some(0),
            "every delivery gave its room back"
        );
        let record = store.event("w7".into(), None).await.unwrap().unwrap();
        assert_eq!(record.outcomes.len(), 1);
        assert_eq!(record.outcomes[0].annotations["seen"], "w7");
    }

    #[tokio::test]
    async fn batches_claimed_ahead_keep_the_order_and_make_each_delivery_once() {
        let (d, store) = dispatcher(json!([{"name": "o", "config": {"behavior": "ok"}}])).await;
        let total = 3 * MAX_BATCH + 5;
        let events: Vec<Event> = named("b", total).iter().map(|id| event(id)).collect();
        d.submit(&events, Backpressure::Wait).await.unwrap();
        d.start_delivering();
        let slot = d.slot("o").unwrap();
        until("every delivery", || invocations(&slot) == total as u64).await;
        d.shutdown(Duration::from_secs(5)).await;
        let feed = outcomes_of_o(&*store, total).await;
        assert_eq!(
            event_ids(&feed),
            named("b", total),
            "once each, in the order accepted"
        );
        assert!(
            feed.iter()
                .all(|i| i.outcome.as_ref().unwrap().attempt == 1)
        );
    }

    #[tokio::test]
    async fn a_batch_cut_short_gives_back_the_one_claimed_ahead_after_its_rest() {
        // Every delivery fails and is dead-lettered at once; the breaker opens after three in
        // a row, which cuts the first batch short while the next one is claimed ahead.
        let (d, store) = dispatcher(json!([{
            "name": "o", "config": {"behavior": "error"},
            "retry": {"maxAttempts": 1},
            "quarantine": {"afterFailures": 3, "backoffMs": 1, "maxBackoffMs": 1}
        }]))
        .await;
        let total = MAX_BATCH + 6;
        let events: Vec<Event> = named("c", total).iter().map(|id| event(id)).collect();
        d.submit(&events, Backpressure::Wait).await.unwrap();
        d.start_delivering();
        let slot = d.slot("o").unwrap();
        until("every delivery dead", || slot.queue_depth() == Some(0)).await;
        d.shutdown(Duration::from_secs(5)).await;
        let dead = store
            .dead_letters(outbox::Selector::default(), 10 * total)
            .await
            .unwrap();
        assert_eq!(dead.len(), total);
        assert!(
            dead.iter().all(|d| d.attempts == 1),
            "a delivery given back unattempted has no attempt counted"
        );
        let feed = outcomes_of_o(&*store, total).await;
        assert_eq!(
            event_ids(&feed),
            named("c", total),
            "once each, in the order accepted"
        );
    }

    /// Observer `o`'s outcomes in the history feed, oldest first.
    async fn outcomes_of_o(store: &dyn Store, total: usize) -> Vec<outbox::FeedItem> {
        let filter = outbox::FeedFilter {
            handler: Some("o".into()),
            ..outbox::FeedFilter::default()
        };
        store.feed(0, filter, 10 * total).await.unwrap().items
    }

    fn event_ids(feed: &[outbox::FeedItem]) -> Vec<&str> {
        feed.iter().map(|i| i.event_id.as_str()).collect()
    }

    /// The ids the tests give their events, in the order they are submitted.
    fn named(prefix: &str, total: usize) -> Vec<String> {
        (0..total).map(|i| format!("{prefix}{i:04}")).collect()
    }

    #[tokio::test]
    async fn failures_are_retried_then_dead_lettered() {
        let (d, store) = dispatcher(json!([{
            "name": "o", "config": {"behavior": "error"},
            "retry": {"maxAttempts": 2, "backoffMs": 1, "maxBackoffMs": 1}
        }]))
        .await;
        d.submit(&[event("bad")], Backpressure::Wait).await.unwrap();
        d.start_delivering();
        let slot = d.slot("o").unwrap();
        until("two attempts", || invocations(&slot) == 2).await;
        until("a dead letter", || slot.queue_depth() == Some(0)).await;
        d.shutdown(Duration::from_secs(5)).await;
        let dead = store
            .dead_letters(outbox::Selector::default(), 10)
            .await
            .unwrap();
        assert_eq!((dead.len(), dead[0].attempts), (1, 2));
        assert!(
            dead[0].cause.contains("chaos: asked to fail"),
            "{}",
            dead[0].cause
        );
        let record = store.event("bad".into(), None).await.unwrap().unwrap();
        assert_eq!(record.outcomes.len(), 2, "both attempts are in the history");
    }

    #[tokio::test]
    async fn a_delivery_this_process_did_not_accept_is_read_from_the_store() {
        let (d, store) = dispatcher(json!([{"name": "o", "config": {"behavior": "ok"}}])).await;
        let e = event("elsewhere");
        let row = NewEvent {
            source: "unit".into(),
            id: e.id().into(),
            event_type: e.event_type().into(),
            subject: None,
            json: e.json().to_string(),
            handlers: vec!["o".into()],
            for_observers: true,
        };
        store
            .accept(vec![row], OnDuplicate::Skip, None, outbox::now())
            .await
            .unwrap();
        d.start_delivering();
        d.wake("o");
        let slot = d.slot("o").unwrap();
        until("the delivery", || invocations(&slot) == 1).await;
        d.shutdown(Duration::from_secs(5)).await;
        assert_eq!(store.counts().await.unwrap()[0].done, 1);
    }
}
