//! The outbox: observers' deliveries are written down before the producer hears "accepted", then
//! worked off from the store, retried with backoff, and dead-lettered when they keep failing.
//!
//! [`Store`] is the whole contract between the dispatcher and the database, kept small so that
//! another store can take SQLite's place. [`sqlite::SqliteStore`] is the embedded default: a file
//! (durable) or an in-memory database (the same code, nothing survives the process).
//! [`nats::NatsStore`] keeps the outbox in NATS JetStream, shared by several hosts; it hands out
//! one delivery per claim, and its lease is its consumers' `ack_wait`.
//!
//! A delivery's life: `pending` (due at `due_at`) → `claimed` by a worker under a lease → `done`,
//! or back to `pending` with a later `due_at` (a retry), or `dead` (attempts exhausted). A
//! claimed delivery whose lease ran out (its process died) is claimable again.

pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
mod settings;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Built without the `nats` feature: the settings `config` reads, and no store.
#[cfg(not(feature = "nats"))]
pub mod nats {
    pub use super::settings::{NatsConfig, Secret, default_host_id, defaults};
}

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a commit counts as written (`eventDelivery.sync`): how much of what the outbox already
/// acknowledged a crash or a power loss may take. Read from the config, honoured by the SQLite
/// store (a NATS server keeps its own policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Survives the process crashing (kill -9); a power loss or OS crash may lose the last
    /// commits. No fsync per commit, only at checkpoints.
    Normal,
    /// Also survives a power loss: every commit is fsynced (group commit shares one fsync among
    /// all the calls that arrived together).
    #[default]
    Full,
}

/// Milliseconds since the Unix epoch: how the store keeps time.
pub type Millis = i64;

/// What every [`Store`] method returns: a boxed future, so the trait works behind `dyn`. It owns
/// what it needs, so a caller can keep it beyond the call (the worker awaits the record of one
/// delivery together with the claim of the next).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The store failed: the database is unreachable, full, corrupt or from a newer hookwasm.
///
/// The message is the whole sentence an operator reads, the cause's text included, because logs
/// and API answers print it alone; the cause itself is kept as
/// [`source`](std::error::Error::source) for programs. It is `Clone` because one failed batch
/// answers every caller in it, so the causes are shared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[cfg(feature = "sqlite")]
    Sqlite {
        /// What failed and what to check.
        message: String,
        /// SQLite's error.
        source: Arc<rusqlite::Error>,
    },
    /// A file, folder or thread the store needs failed.
    Io {
        /// What failed and what to check.
        message: String,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// A NATS call failed (connecting, publishing, reading a stream or bucket).
    #[cfg(feature = "nats")]
    Nats {
        /// What failed and what to check.
        message: String,
        /// async-nats's error (its type depends on the call).
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The store refused on its own: a file it will not use, a stopped writer, a server without
    /// JetStream. No lower error says more.
    Refused {
        /// What is wrong and what to do.
        message: String,
    },
}

impl StoreError {
    /// The store's own refusal.
    pub fn refused(message: impl Into<String>) -> StoreError {
        StoreError::Refused {
            message: message.into(),
        }
    }

    /// A failed file, folder or thread operation.
    pub fn io(message: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            message: message.into(),
            source: Arc::new(source),
        }
    }

    /// A failed SQLite call.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(message: impl Into<String>, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            message: message.into(),
            source: Arc::new(source),
        }
    }

    /// A failed NATS call.
    #[cfg(feature = "nats")]
    pub fn nats(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Nats {
            message: message.into(),
            source: Arc::from(source.into()),
        }
    }

    /// The message, without the `outbox` prefix the display adds.
    pub fn message(&self) -> &str {
        match self {
            #[cfg(feature = "sqlite")]
            StoreError::Sqlite { message, .. } => message,
            StoreError::Io { message, .. } => message,
            #[cfg(feature = "nats")]
            StoreError::Nats { message, .. } => message,
            StoreError::Refused { message } => message,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "outbox {}", self.message())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "sqlite")]
            StoreError::Sqlite { source, .. } => Some(&**source),
            StoreError::Io { source, .. } => Some(&**source),
            #[cfg(feature = "nats")]
            StoreError::Nats { source, .. } => Some(&**source),
            StoreError::Refused { .. } => None,
        }
    }
}

/// An event to accept, with the observers it must reach.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// CloudEvents `source`; with `id` it identifies the event.
    pub source: String,
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type`, shown with dead letters.
    pub event_type: String,
    /// CloudEvents `subject`, for finding an event's history (GitProxy's action id).
    pub subject: Option<String>,
    /// The event as accepted (CloudEvent JSON), handed to the observer on every attempt.
    pub json: String,
    /// The observers subscribed to it, by name; one delivery each.
    pub handlers: Vec<String>,
    /// Whether the request was routed to observers. Only such an acceptance counts for
    /// duplicates: a gates-only request (a git server's pre-receive, a proxy's push gate) is
    /// kept in the history, and the same event may still be accepted for observers afterwards
    /// (its stored JSON is then the one given for observers).
    pub for_observers: bool,
}

/// What [`Store::accept`] did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The event (same `source` and `id`) was already stored: nothing new was written unless
    /// the acceptance asked to redeliver.
    pub duplicate: bool,
    /// The new deliveries' ids, in the order of [`NewEvent::handlers`]; empty for a duplicate
    /// that was not redelivered.
    pub deliveries: Vec<i64>,
    /// The event's row in the history, for recording gates' outcomes against it.
    pub seq: i64,
}

/// How [`Store::accept`] treats an event it already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    /// Store and deliver it once: a producer's retry is not a new event (`serve`, `git-hook`).
    Skip,
    /// Deliver it again (`replay`: running old events again is the point): new deliveries are
    /// added, and the stored JSON is replaced by the one given (its `accepted_at` stays).
    Redeliver,
}

/// A delivery handed to a worker: one attempt of one event for one observer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delivery's id: stable across attempts, shown in dead letters.
    pub id: i64,
    /// The observer.
    pub handler: String,
    /// The event's CloudEvents `id`: the same on every attempt.
    pub event_id: String,
    /// The event as accepted.
    pub event_json: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// When the event was accepted.
    pub accepted_at: Millis,
}

/// How one attempt of a delivery ended, for [`Store::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// It succeeded: the delivery is `done`.
    Done,
    /// It failed and another attempt is due at `at`.
    Retry {
        /// Why it failed.
        cause: String,
        /// When the next attempt is due.
        at: Millis,
    },
    /// It failed and no more attempts are allowed: the delivery is `dead`.
    Dead {
        /// Why the last attempt failed.
        cause: String,
    },
}

/// One attempt's record: its outcome for the history and what becomes of the delivery.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The delivery.
    pub delivery: i64,
    /// The attempt's outcome, added to the event's history.
    pub outcome: Outcome,
    /// What becomes of the delivery.
    pub settled: Settled,
    /// When the attempt finished.
    pub now: Millis,
}

/// Deliveries of one observer, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// The observer.
    pub handler: String,
    /// Waiting for a first attempt or a retry.
    pub pending: u64,
    /// Being attempted now (or by a process that died, until its lease runs out).
    pub claimed: u64,
    /// Delivered, not yet pruned.
    pub done: u64,
    /// Attempts exhausted.
    pub dead: u64,
    /// Of those pending or claimed, how many have failed at least once.
    pub retrying: u64,
    /// When the oldest pending or claimed delivery's event was accepted.
    pub oldest_open_at: Option<Millis>,
}

/// What an observer has open and dead now: cheap to read (it never touches delivered rows), for
/// `/metrics`, `/v1/handlers` and backpressure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauge {
    /// The observer.
    pub handler: String,
    /// Pending or claimed deliveries.
    pub open: u64,
    /// Dead letters.
    pub dead: u64,
    /// When the oldest open delivery's event was accepted.
    pub oldest_open_at: Option<Millis>,
    /// Deliveries not yet handed to any host (a JetStream consumer's pending count); `None`
    /// for a store without consumers.
    pub lag: Option<u64>,
}

/// Which store holds the outbox, and which host this process is: for `/v1/handlers` and the
/// metrics, so an operator of several hosts can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// `sqlite`, `memory` or `nats`.
    pub store: String,
    /// This host's id.
    pub host: String,
}

/// A delivery whose attempts ran out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The delivery's id: what `retry` and `discard` take.
    pub id: i64,
    /// The observer.
    pub handler: String,
    /// The event's CloudEvents `id`.
    pub event_id: String,
    /// The event's CloudEvents `type`.
    pub event_type: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub cause: String,
    /// When the event was accepted.
    pub accepted_at: Millis,
    /// When the delivery was given up.
    pub dead_at: Millis,
}

/// One handler's outcome for one event (one attempt, for observers), kept in the event history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The handler's name.
    pub handler: String,
    /// `gate` or `observe`.
    pub mode: String,
    /// SHA-256 of the module version that ran.
    pub digest: String,
    /// How the invocation ended (`ok`, `error`, `trap`, `out-of-fuel`, …).
    pub status: String,
    /// `allow` or `deny`; `null` for an observer that failed.
    pub verdict: Option<String>,
    /// The deny reason, or what the failure policy made of a failure.
    pub reason: Option<String>,
    /// Why it failed, when it did.
    pub cause: Option<String>,
    /// The handler's annotations, as an object (a repeated key keeps its last value).
    pub annotations: serde_json::Map<String, serde_json::Value>,
    /// Fuel used.
    pub fuel_consumed: u64,
    /// Wall-clock time in milliseconds.
    pub duration_ms: f64,
    /// Which attempt this was, from 1 (gates: always 1).
    pub attempt: u32,
    /// When it finished.
    pub at: Millis,
}

/// An event as the history keeps it, with every outcome recorded for it, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// When it was first accepted.
    pub accepted_at: Millis,
    /// Its place in the history: increases with every new event; what `before` pages by.
    pub seq: i64,
    /// The event as accepted.
    pub event: serde_json::Value,
    /// Each handler's outcome, in the order they were recorded.
    pub outcomes: Vec<Outcome>,
}

/// Which events a history listing returns; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// CloudEvents `type`.
    pub event_type: Option<String>,
    /// Events this handler ran for, or has a delivery of.
    pub handler: Option<String>,
    /// Only events older than this `seq` (the previous page's `next`).
    pub before: Option<i64>,
}

/// Which feed items a stream consumer wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// CloudEvents `type`.
    pub event_type: Option<String>,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// Only this handler's outcomes (no acceptance items).
    pub handler: Option<String>,
}

/// One item of the live feed: an event accepted (`outcome` is `None`), or a handler's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// Increases with every item; what `Last-Event-ID` resumes from.
    pub id: i64,
    /// The event's place in the history.
    pub seq: i64,
    /// CloudEvents `id`.
    pub event_id: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `type`.
    pub event_type: String,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// When the event was accepted.
    pub accepted_at: Millis,
    /// The event as accepted, on acceptance items.
    pub event: Option<serde_json::Value>,
    /// The outcome, on outcome items.
    pub outcome: Option<Outcome>,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    /// The items, oldest first.
    pub items: Vec<FeedItem>,
    /// The newest item's id (of any filter); 0 when there is none.
    pub head: i64,
    /// The highest id deleted by pruning or discarding: a consumer that last saw an id below
    /// it has missed items for good.
    pub pruned_through: i64,
}

/// Which dead letters an operator command applies to; every field that is set must match, and
/// an empty selector matches all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// One delivery.
    pub id: Option<i64>,
    /// One observer's.
    pub handler: Option<String>,
    /// One event's (CloudEvents `id`, whatever its `source`).
    pub event_id: Option<String>,
}

/// The outbox's storage. Every method commits before its future resolves: once `accept` returns,
/// the event survives the process being killed.
///
/// `complete`, `retry_later` and `dead_letter` act only on a delivery that is still `claimed`; on
/// any other (an operator discarded or retried it meanwhile, or it is gone) they change nothing
/// and still succeed. Leases are not fenced: a worker whose lease ran out, and whose delivery was
/// claimed again, can still finish it; delivery is at least once.
///
/// Calls are applied in the order they are made: the work is queued when the method is called,
/// not when its future is first polled. So a worker may record one delivery and claim the next
/// without waiting in between, and the claim sees the record.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Whether accepted events survive the process (a file) or not (memory).
    fn durable(&self) -> bool;

    /// Which store this is, and this host's id.
    fn backend(&self) -> Backend {
        Backend {
            store: if self.durable() { "sqlite" } else { "memory" }.to_owned(),
            host: nats::default_host_id(),
        }
    }

    /// Whether the store can take a write now: `/readyz` asks before saying the host is ready.
    /// The default (a store with nothing that can fail this way) is always ready.
    fn ready(&self) -> StoreFuture<()> {
        Box::pin(async { Ok(()) })
    }

    /// Stores each event (unless it is a duplicate, see `on_duplicate`) with one `pending`
    /// delivery per handler, due now. With a `lease`, the new deliveries start `claimed` by the
    /// caller for that long, as attempt 1 (the caller runs them itself: `replay`). An event with
    /// no handlers is stored without deliveries, so that a repeat is still a duplicate.
    fn accept(
        &self,
        events: Vec<NewEvent>,
        on_duplicate: OnDuplicate,
        lease: Option<Duration>,
        now: Millis,
    ) -> StoreFuture<Vec<Accepted>>;

    /// Claims up to `limit` of `handler`'s deliveries that are due, lowest id first (a claimed
    /// one whose lease has run out counts as due): marks them `claimed` until `now + lease` and
    /// counts an attempt for each. Empty when nothing is due, or while another delivery of
    /// `handler` is claimed under a live lease: one observer's deliveries are claimed by one
    /// worker at a time, whichever process it is in.
    fn claim(
        &self,
        handler: String,
        limit: usize,
        lease: Duration,
        now: Millis,
    ) -> StoreFuture<Vec<Delivery>>;

    /// Claims `handler`'s next due deliveries while the caller still holds `holding`, its
    /// current claim: as [`Store::claim`], except that the lease on `holding` does not count
    /// as another worker's. A worker claims its next batch this way while it runs the current
    /// one, so it does not wait for the store between batches. The default claims nothing (the
    /// worker then claims once the current batch is settled).
    fn claim_ahead(
        &self,
        handler: String,
        holding: Vec<i64>,
        limit: usize,
        lease: Duration,
        now: Millis,
    ) -> StoreFuture<Vec<Delivery>> {
        let _ = (handler, holding, limit, lease, now);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Gives back claimed deliveries that were not attempted (the observer was quarantined
    /// meanwhile, the lease had no room left for them, or a batch claimed ahead is not to be
    /// run): pending again, due now, the attempt not counted.
    fn release(&self, deliveries: Vec<i64>, now: Millis) -> StoreFuture<()>;

    /// The attempt succeeded: the delivery is `done`.
    fn complete(&self, delivery: i64, now: Millis) -> StoreFuture<()>;

    /// The attempt failed and another is due at `retry_at`.
    fn retry_later(
        &self,
        delivery: i64,
        cause: String,
        retry_at: Millis,
        now: Millis,
    ) -> StoreFuture<()>;

    /// The attempt failed and no more are allowed: the delivery is `dead` with `cause`.
    fn dead_letter(&self, delivery: i64, cause: String, now: Millis) -> StoreFuture<()>;

    /// Records a batch of attempts, in order: each one's outcome in the history, then its
    /// delivery `done`, retried later or `dead` (as [`Store::complete`], [`Store::retry_later`]
    /// and [`Store::dead_letter`] would). Bookkeeping: not fsynced. A store that can should
    /// commit the whole batch at once; the default makes one call per record.
    fn settle(&self, settlements: Vec<Settlement>) -> StoreFuture<()> {
        let calls: Vec<_> = settlements
            .into_iter()
            .flat_map(|s| {
                let recorded = self.record_delivery_outcome(s.delivery, s.outcome);
                let settled = match s.settled {
                    Settled::Done => self.complete(s.delivery, s.now),
                    Settled::Retry { cause, at } => self.retry_later(s.delivery, cause, at, s.now),
                    Settled::Dead { cause } => self.dead_letter(s.delivery, cause, s.now),
                };
                [recorded, settled]
            })
            .collect();
        Box::pin(async move {
            let mut first_error = None;
            for call in calls {
                if let Err(e) = call.await {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    /// `handler`'s open deliveries (pending or claimed): cheap, for backpressure.
    fn open_count(&self, handler: String) -> StoreFuture<u64>;

    /// Open and dead deliveries by observer (those that have any), by name. Unlike
    /// [`Store::counts`] it does not read delivered rows, so it stays cheap as they pile up.
    fn gauges(&self) -> StoreFuture<Vec<Gauge>>;

    /// Deliveries by observer and state, every observer that has any, by name. Reads every
    /// row: for operators, not for polling.
    fn counts(&self) -> StoreFuture<Vec<Counts>>;

    /// Dead letters matching `selector`, lowest delivery id (so earliest accepted) first, at most
    /// `limit`.
    fn dead_letters(&self, selector: Selector, limit: usize) -> StoreFuture<Vec<DeadLetter>>;

    /// Makes the matching dead letters `pending` again, due now, with their attempts reset.
    /// Returns how many.
    fn retry_dead(&self, selector: Selector, now: Millis) -> StoreFuture<u64>;

    /// Deletes the matching dead letters. Returns how many.
    fn discard_dead(&self, selector: Selector) -> StoreFuture<u64>;

    /// Deletes deliveries `done` before `before`, then the events accepted before `before` that
    /// have no delivery left, with their outcomes. Returns how many deliveries.
    fn prune(&self, before: Millis) -> StoreFuture<u64>;

    /// Adds gates' outcomes to the history of the event stored as `seq` (see
    /// [`Accepted::seq`]). Bookkeeping: not fsynced.
    fn record_outcomes(&self, seq: i64, outcomes: Vec<Outcome>) -> StoreFuture<()>;

    /// Adds an observer's outcome to the history of the event of `delivery`. Bookkeeping: not
    /// fsynced; queued before the delivery is settled, it shares that commit.
    fn record_delivery_outcome(&self, delivery: i64, outcome: Outcome) -> StoreFuture<()>;

    /// The newest event with CloudEvents id `id` (from `source`, when given), with its outcomes.
    fn event(&self, id: String, source: Option<String>) -> StoreFuture<Option<EventRecord>>;

    /// Events matching `filter`, newest first, at most `limit`, each with its outcomes.
    fn events(&self, filter: HistoryFilter, limit: usize) -> StoreFuture<Vec<EventRecord>>;

    /// The feed's items after id `after` that match `filter`, oldest first, at most `limit`.
    fn feed(&self, after: i64, filter: FeedFilter, limit: usize) -> StoreFuture<Feed>;

    /// Changes whenever this process commits to the store: a stream waits on it (and polls
    /// for what other processes write).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The current time as the store counts it.
pub fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}
