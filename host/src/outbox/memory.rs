//! The outbox in plain memory: a [`Store`] without SQLite, for unit tests and for embedders who
//! need no durability. It keeps the same contract as the other stores (one claimed delivery run
//! per observer at a time, lowest id first, settlements only on claimed deliveries), but nothing
//! survives the process: [`Store::durable`] is `false`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::{
    Accepted, Backend, Counts, DeadLetter, Delivery, EventRecord, Feed, FeedFilter, FeedItem,
    Gauge, HistoryFilter, Millis, NewEvent, OnDuplicate, Outcome, Selector, Settled, Settlement,
    Store, StoreFuture,
};

/// An outbox held in memory. Cheap to create; every call completes at once.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Events by `seq`.
    events: BTreeMap<i64, StoredEvent>,
    /// Deliveries by id.
    deliveries: BTreeMap<i64, Row>,
    /// The feed: acceptances and outcomes, by id.
    feed: BTreeMap<i64, (i64, Option<Outcome>)>,
    next_seq: i64,
    next_delivery: i64,
    next_feed: i64,
    pruned_through: i64,
}

#[derive(Debug, Clone)]
struct StoredEvent {
    source: String,
    id: String,
    event_type: String,
    subject: Option<String>,
    json: String,
    accepted_at: Millis,
    observed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Claimed,
    Done,
    Dead,
}

#[derive(Debug, Clone)]
struct Row {
    event_seq: i64,
    handler: String,
    state: State,
    attempts: u32,
    due_at: Millis,
    last_error: Option<String>,
    updated_at: Millis,
}

impl Row {
    fn open(&self) -> bool {
        matches!(self.state, State::Pending | State::Claimed)
    }
}

fn ready<T: Send + 'static>(value: T) -> StoreFuture<T> {
    Box::pin(std::future::ready(Ok(value)))
}

fn lease_end(now: Millis, lease: Duration) -> Millis {
    now.saturating_add(Millis::try_from(lease.as_millis()).unwrap_or(Millis::MAX))
}

impl MemoryStore {
    /// An empty outbox.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the state and tells stream consumers that something changed.
    fn write<T: Send + 'static>(&self, op: impl FnOnce(&mut Inner) -> T) -> StoreFuture<T> {
        let value = op(&mut self.lock());
        self.changed.send_modify(|n| *n += 1);
        ready(value)
    }
}

impl Inner {
    fn feed_item(&mut self, seq: i64, outcome: Option<Outcome>) {
        self.next_feed += 1;
        self.feed.insert(self.next_feed, (seq, outcome));
    }

    fn accept_one(
        &mut self,
        event: NewEvent,
        on_duplicate: OnDuplicate,
        lease: Option<Duration>,
        now: Millis,
    ) -> Accepted {
        let existing = self
            .events
            .iter()
            .find(|(_, e)| e.source == event.source && e.id == event.id)
            .map(|(seq, e)| (*seq, e.observed));
        let (seq, duplicate) = match existing {
            None => {
                self.next_seq += 1;
                let seq = self.next_seq;
                self.events.insert(
                    seq,
                    StoredEvent {
                        source: event.source,
                        id: event.id,
                        event_type: event.event_type,
                        subject: event.subject,
                        json: event.json,
                        accepted_at: now,
                        observed: event.for_observers,
                    },
                );
                self.feed_item(seq, None);
                (seq, false)
            }
            Some((seq, observed)) if observed || !event.for_observers => match on_duplicate {
                OnDuplicate::Skip => {
                    return Accepted {
                        duplicate: event.for_observers,
                        deliveries: Vec::new(),
                        seq,
                    };
                }
                OnDuplicate::Redeliver => {
                    if let Some(stored) = self.events.get_mut(&seq) {
                        stored.json = event.json;
                        stored.event_type = event.event_type;
                        stored.observed = true;
                    }
                    (seq, true)
                }
            },
            Some((seq, _)) => {
                if let Some(stored) = self.events.get_mut(&seq) {
                    stored.observed = true;
                    stored.json = event.json;
                }
                (seq, false)
            }
        };
        let (state, attempts, due_at) = match lease {
            None => (State::Pending, 0, now),
            Some(lease) => (State::Claimed, 1, lease_end(now, lease)),
        };
        let deliveries = event
            .handlers
            .into_iter()
            .map(|handler| {
                self.next_delivery += 1;
                self.deliveries.insert(
                    self.next_delivery,
                    Row {
                        event_seq: seq,
                        handler,
                        state,
                        attempts,
                        due_at,
                        last_error: None,
                        updated_at: now,
                    },
                );
                self.next_delivery
            })
            .collect();
        Accepted {
            duplicate,
            deliveries,
            seq,
        }
    }

    /// The claimed delivery `id`, if it still is claimed.
    fn claimed(&mut self, id: i64) -> Option<&mut Row> {
        self.deliveries
            .get_mut(&id)
            .filter(|row| row.state == State::Claimed)
    }

    fn settle(&mut self, settlement: Settlement) {
        let Settlement {
            delivery,
            outcome,
            settled,
            now,
        } = settlement;
        if let Some(seq) = self.deliveries.get(&delivery).map(|row| row.event_seq) {
            self.feed_item(seq, Some(outcome));
        }
        let Some(row) = self.claimed(delivery) else {
            return;
        };
        row.updated_at = now;
        match settled {
            Settled::Done => row.state = State::Done,
            Settled::Retry { cause, at } => {
                row.state = State::Pending;
                row.due_at = at;
                row.last_error = Some(cause);
            }
            Settled::Dead { cause } => {
                row.state = State::Dead;
                row.last_error = Some(cause);
            }
        }
    }

    fn record(&self, seq: i64) -> Option<EventRecord> {
        let event = self.events.get(&seq)?;
        let outcomes = self
            .feed
            .values()
            .filter(|(s, _)| *s == seq)
            .filter_map(|(_, outcome)| outcome.clone())
            .collect();
        Some(EventRecord {
            id: event.id.clone(),
            source: event.source.clone(),
            event_type: event.event_type.clone(),
            subject: event.subject.clone(),
            accepted_at: event.accepted_at,
            seq,
            event: serde_json::from_str(&event.json)
                .unwrap_or_else(|_| serde_json::Value::String(event.json.clone())),
            outcomes,
        })
    }

    fn dead_matching<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = i64> + 'a {
        self.deliveries
            .iter()
            .filter(move |(id, row)| {
                row.state == State::Dead
                    && selector.id.is_none_or(|want| want == **id)
                    && selector.handler.as_ref().is_none_or(|h| *h == row.handler)
                    && selector.event_id.as_ref().is_none_or(|e| {
                        self.events
                            .get(&row.event_seq)
                            .is_some_and(|ev| ev.id == *e)
                    })
            })
            .map(|(id, _)| *id)
    }

    /// Forgets events of `seqs` that have no delivery left, with their feed items.
    fn delete_orphans(&mut self, seqs: &[i64]) {
        for seq in seqs {
            if self.deliveries.values().any(|row| row.event_seq == *seq) {
                continue;
            }
            self.events.remove(seq);
            let gone: Vec<i64> = self
                .feed
                .iter()
                .filter(|(_, (s, _))| s == seq)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                self.feed.remove(&id);
                self.pruned_through = self.pruned_through.max(id);
            }
        }
    }
}

impl Store for MemoryStore {
    fn durable(&self) -> bool {
        false
    }

    fn backend(&self) -> Backend {
        Backend {
            store: "memory".to_owned(),
            host: super::nats::default_host_id(),
        }
    }

    fn accept(
        &self,
        events: Vec<NewEvent>,
        on_duplicate: OnDuplicate,
        lease: Option<Duration>,
        now: Millis,
    ) -> StoreFuture<Vec<Accepted>> {
        self.write(|inner| {
            events
                .into_iter()
                .map(|event| inner.accept_one(event, on_duplicate, lease, now))
                .collect()
        })
    }

    fn claim(
        &self,
        handler: String,
        limit: usize,
        lease: Duration,
        now: Millis,
    ) -> StoreFuture<Vec<Delivery>> {
        self.claim_ahead(handler, Vec::new(), limit, lease, now)
    }

    fn claim_ahead(
        &self,
        handler: String,
        holding: Vec<i64>,
        limit: usize,
        lease: Duration,
        now: Millis,
    ) -> StoreFuture<Vec<Delivery>> {
        self.write(|inner| {
            let leased = inner.deliveries.iter().any(|(id, row)| {
                row.handler == handler
                    && row.state == State::Claimed
                    && row.due_at > now
                    && !holding.contains(id)
            });
            if leased {
                return Vec::new();
            }
            let due: Vec<i64> = inner
                .deliveries
                .iter()
                .filter(|(_, row)| row.handler == handler && row.open() && row.due_at <= now)
                .map(|(id, _)| *id)
                .take(limit)
                .collect();
            let mut claimed = Vec::with_capacity(due.len());
            for id in due {
                let Some(row) = inner.deliveries.get_mut(&id) else {
                    continue;
                };
                row.state = State::Claimed;
                row.attempts += 1;
                row.due_at = lease_end(now, lease);
                row.updated_at = now;
                let (attempt, seq) = (row.attempts, row.event_seq);
                if let Some(event) = inner.events.get(&seq) {
                    claimed.push(Delivery {
                        id,
                        handler: handler.clone(),
                        event_id: event.id.clone(),
                        event_json: event.json.clone(),
                        attempt,
                        accepted_at: event.accepted_at,
                    });
                }
            }
            claimed
        })
    }

    fn release(&self, deliveries: Vec<i64>, now: Millis) -> StoreFuture<()> {
        self.write(|inner| {
            for id in deliveries {
                if let Some(row) = inner.claimed(id) {
                    row.state = State::Pending;
                    row.due_at = now;
                    row.attempts = row.attempts.saturating_sub(1);
                    row.updated_at = now;
                }
            }
        })
    }

    fn complete(&self, delivery: i64, now: Millis) -> StoreFuture<()> {
        self.write(|inner| {
            if let Some(row) = inner.claimed(delivery) {
                row.state = State::Done;
                row.updated_at = now;
            }
        })
    }

    fn retry_later(
        &self,
        delivery: i64,
        cause: String,
        retry_at: Millis,
        now: Millis,
    ) -> StoreFuture<()> {
        self.write(|inner| {
            if let Some(row) = inner.claimed(delivery) {
                row.state = State::Pending;
                row.due_at = retry_at;
                row.last_error = Some(cause);
                row.updated_at = now;
            }
        })
    }

    fn dead_letter(&self, delivery: i64, cause: String, now: Millis) -> StoreFuture<()> {
        self.write(|inner| {
            if let Some(row) = inner.claimed(delivery) {
                row.state = State::Dead;
                row.last_error = Some(cause);
                row.updated_at = now;
            }
        })
    }

    fn settle(&self, settlements: Vec<Settlement>) -> StoreFuture<()> {
        self.write(|inner| {
            for settlement in settlements {
                inner.settle(settlement);
            }
        })
    }

    fn open_count(&self, handler: String) -> StoreFuture<u64> {
        let inner = self.lock();
        let open = inner
            .deliveries
            .values()
            .filter(|row| row.handler == handler && row.open())
            .count();
        ready(open as u64)
    }

    fn gauges(&self) -> StoreFuture<Vec<Gauge>> {
        let inner = self.lock();
        let mut gauges: BTreeMap<&str, Gauge> = BTreeMap::new();
        for row in inner.deliveries.values() {
            if !(row.open() || row.state == State::Dead) {
                continue;
            }
            let gauge = gauges.entry(&row.handler).or_insert_with(|| Gauge {
                handler: row.handler.clone(),
                ..Gauge::default()
            });
            if row.open() {
                gauge.open += 1;
                let accepted = inner.events.get(&row.event_seq).map(|e| e.accepted_at);
                gauge.oldest_open_at = match (gauge.oldest_open_at, accepted) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            } else {
                gauge.dead += 1;
            }
        }
        ready(gauges.into_values().collect())
    }

    fn counts(&self) -> StoreFuture<Vec<Counts>> {
        let inner = self.lock();
        let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
        for row in inner.deliveries.values() {
            let count = counts.entry(&row.handler).or_insert_with(|| Counts {
                handler: row.handler.clone(),
                ..Counts::default()
            });
            match row.state {
                State::Pending => count.pending += 1,
                State::Claimed => count.claimed += 1,
                State::Done => count.done += 1,
                State::Dead => count.dead += 1,
            }
            let retrying = (row.state == State::Pending && row.attempts > 0)
                || (row.state == State::Claimed && row.attempts > 1);
            count.retrying += u64::from(retrying);
            if row.open() {
                let accepted = inner.events.get(&row.event_seq).map(|e| e.accepted_at);
                count.oldest_open_at = match (count.oldest_open_at, accepted) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        ready(counts.into_values().collect())
    }

    fn dead_letters(&self, selector: Selector, limit: usize) -> StoreFuture<Vec<DeadLetter>> {
        let inner = self.lock();
        let letters = inner
            .dead_matching(&selector)
            .take(limit)
            .filter_map(|id| {
                let row = inner.deliveries.get(&id)?;
                let event = inner.events.get(&row.event_seq)?;
                Some(DeadLetter {
                    id,
                    handler: row.handler.clone(),
                    event_id: event.id.clone(),
                    event_type: event.event_type.clone(),
                    attempts: row.attempts,
                    cause: row.last_error.clone().unwrap_or_default(),
                    accepted_at: event.accepted_at,
                    dead_at: row.updated_at,
                })
            })
            .collect();
        ready(letters)
    }

    fn retry_dead(&self, selector: Selector, now: Millis) -> StoreFuture<u64> {
        self.write(|inner| {
            let ids: Vec<i64> = inner.dead_matching(&selector).collect();
            for id in &ids {
                if let Some(row) = inner.deliveries.get_mut(id) {
                    row.state = State::Pending;
                    row.attempts = 0;
                    row.due_at = now;
                    row.updated_at = now;
                }
            }
            ids.len() as u64
        })
    }

    fn discard_dead(&self, selector: Selector) -> StoreFuture<u64> {
        self.write(|inner| {
            let ids: Vec<i64> = inner.dead_matching(&selector).collect();
            let seqs: Vec<i64> = ids
                .iter()
                .filter_map(|id| inner.deliveries.remove(id).map(|row| row.event_seq))
                .collect();
            inner.delete_orphans(&seqs);
            ids.len() as u64
        })
    }

    fn prune(&self, before: Millis) -> StoreFuture<u64> {
        self.write(|inner| {
            let old: Vec<i64> = inner
                .deliveries
                .iter()
                .filter(|(_, row)| row.state == State::Done && row.updated_at < before)
                .map(|(id, _)| *id)
                .collect();
            for id in &old {
                inner.deliveries.remove(id);
            }
            let expired: Vec<i64> = inner
                .events
                .iter()
                .filter(|(_, e)| e.accepted_at < before)
                .map(|(seq, _)| *seq)
                .collect();
            inner.delete_orphans(&expired);
            old.len() as u64
        })
    }

    fn record_outcomes(&self, seq: i64, outcomes: Vec<Outcome>) -> StoreFuture<()> {
        self.write(|inner| {
            if inner.events.contains_key(&seq) {
                for outcome in outcomes {
                    inner.feed_item(seq, Some(outcome));
                }
            }
        })
    }

    fn record_delivery_outcome(&self, delivery: i64, outcome: Outcome) -> StoreFuture<()> {
        self.write(|inner| {
            if let Some(seq) = inner.deliveries.get(&delivery).map(|row| row.event_seq) {
                inner.feed_item(seq, Some(outcome));
            }
        })
    }

    fn event(&self, id: String, source: Option<String>) -> StoreFuture<Option<EventRecord>> {
        let inner = self.lock();
        let seq = inner
            .events
            .iter()
            .rev()
            .find(|(_, e)| e.id == id && source.as_ref().is_none_or(|s| *s == e.source))
            .map(|(seq, _)| *seq);
        ready(seq.and_then(|seq| inner.record(seq)))
    }

    fn events(&self, filter: HistoryFilter, limit: usize) -> StoreFuture<Vec<EventRecord>> {
        let inner = self.lock();
        let ran = |seq: i64, handler: &str| {
            inner
                .feed
                .values()
                .any(|(s, o)| *s == seq && o.as_ref().is_some_and(|o| o.handler == handler))
                || inner
                    .deliveries
                    .values()
                    .any(|row| row.event_seq == seq && row.handler == handler)
        };
        let records = inner
            .events
            .iter()
            .rev()
            .filter(|(seq, e)| {
                filter
                    .subject
                    .as_ref()
                    .is_none_or(|s| e.subject.as_ref() == Some(s))
                    && filter
                        .event_type
                        .as_ref()
                        .is_none_or(|t| *t == e.event_type)
                    && filter.before.is_none_or(|b| **seq < b)
                    && filter.handler.as_ref().is_none_or(|h| ran(**seq, h))
            })
            .take(limit)
            .filter_map(|(seq, _)| inner.record(*seq))
            .collect();
        ready(records)
    }

    fn feed(&self, after: i64, filter: FeedFilter, limit: usize) -> StoreFuture<Feed> {
        let inner = self.lock();
        let items = inner
            .feed
            .range(after + 1..)
            .filter_map(|(id, (seq, outcome))| {
                let event = inner.events.get(seq)?;
                let keep = filter
                    .event_type
                    .as_ref()
                    .is_none_or(|t| *t == event.event_type)
                    && filter
                        .subject
                        .as_ref()
                        .is_none_or(|s| event.subject.as_ref() == Some(s))
                    && filter
                        .handler
                        .as_ref()
                        .is_none_or(|h| outcome.as_ref().is_some_and(|o| o.handler == *h));
                keep.then(|| FeedItem {
                    id: *id,
                    seq: *seq,
                    event_id: event.id.clone(),
                    source: event.source.clone(),
                    event_type: event.event_type.clone(),
                    subject: event.subject.clone(),
                    accepted_at: event.accepted_at,
                    event: outcome
                        .is_none()
                        .then(|| serde_json::from_str(&event.json).ok())
                        .flatten(),
                    outcome: outcome.clone(),
                })
            })
            .take(limit)
            .collect();
        let head = inner.feed.keys().next_back().copied().unwrap_or(0);
        ready(Feed {
            items,
            head,
            pruned_through: inner.pruned_through,
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn event(id: &str, handlers: &[&str]) -> NewEvent {
        NewEvent {
            source: "test".into(),
            id: id.into(),
            event_type: "acme.thing.done".into(),
            subject: None,
            json: format!(r#"{{"id":"{id}"}}"#),
            handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
            for_observers: true,
        }
    }

    fn outcome(handler: &str) -> Outcome {
        Outcome {
            handler: handler.into(),
            mode: "observe".into(),
            digest: "d".into(),
            status: "ok".into(),
            verdict: Some("allow".into()),
            reason: None,
            cause: None,
            annotations: serde_json::Map::new(),
            fuel_consumed: 1,
            duration_ms: 0.1,
            attempt: 1,
            at: 5,
        }
    }

    #[tokio::test]
    async fn claims_lowest_first_one_batch_at_a_time_and_settles_in_one_call() {
        let store = MemoryStore::new();
        let accepted = store
            .accept(
                vec![event("a", &["o"]), event("b", &["o"]), event("c", &["o"])],
                OnDuplicate::Skip,
                None,
                1,
            )
            .await
            .unwrap();
        let ids: Vec<i64> = accepted.iter().flat_map(|a| a.deliveries.clone()).collect();
        let lease = Duration::from_secs(10);
        let batch = store.claim("o".into(), 2, lease, 2).await.unwrap();
        assert_eq!(batch.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..2]);
        assert_eq!(batch[0].event_json, r#"{"id":"a"}"#);
        assert!(
            store
                .claim("o".into(), 2, lease, 2)
                .await
                .unwrap()
                .is_empty(),
            "one batch of an observer at a time"
        );
        assert!(
            store
                .claim_ahead("o".into(), vec![ids[0]], 2, lease, 2)
                .await
                .unwrap()
                .is_empty(),
            "holding part of the batch: the rest is another lease"
        );
        let ahead = store
            .claim_ahead("o".into(), ids[..2].to_vec(), 2, lease, 2)
            .await
            .unwrap();
        assert_eq!(ahead.iter().map(|d| d.id).collect::<Vec<_>>(), ids[2..3]);
        store.release(vec![ids[2]], 2).await.unwrap();
        let settle = |delivery, settled| Settlement {
            delivery,
            outcome: outcome("o"),
            settled,
            now: 3,
        };
        store
            .settle(vec![
                settle(ids[0], Settled::Done),
                settle(
                    ids[1],
                    Settled::Retry {
                        cause: "boom".into(),
                        at: 100,
                    },
                ),
            ])
            .await
            .unwrap();
        let next = store.claim("o".into(), 5, lease, 4).await.unwrap();
        assert_eq!(next.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[2]]);
        store
            .settle(vec![settle(ids[2], Settled::Dead { cause: "no".into() })])
            .await
            .unwrap();
        let retried = store.claim("o".into(), 5, lease, 100).await.unwrap();
        assert_eq!((retried[0].id, retried[0].attempt), (ids[1], 2));

        let counts = store.counts().await.unwrap();
        assert_eq!(
            (counts[0].done, counts[0].claimed, counts[0].dead),
            (1, 1, 1)
        );
        let dead = store.dead_letters(Selector::default(), 10).await.unwrap();
        assert_eq!((dead[0].id, dead[0].cause.as_str()), (ids[2], "no"));
        let history = store.event("a".into(), None).await.unwrap().unwrap();
        assert_eq!(history.outcomes.len(), 1);
    }

    #[tokio::test]
    async fn duplicates_are_skipped_and_settling_an_unclaimed_delivery_changes_nothing() {
        let store = MemoryStore::new();
        let first = store
            .accept(vec![event("a", &["o"])], OnDuplicate::Skip, None, 1)
            .await
            .unwrap();
        let again = store
            .accept(vec![event("a", &["o"])], OnDuplicate::Skip, None, 1)
            .await
            .unwrap();
        assert!(!first[0].duplicate && again[0].duplicate && again[0].deliveries.is_empty());
        store.complete(first[0].deliveries[0], 2).await.unwrap();
        assert_eq!(store.open_count("o".into()).await.unwrap(), 1);
        assert_eq!(store.gauges().await.unwrap()[0].open, 1);
    }
}
