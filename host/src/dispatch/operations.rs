//! What operators ask of the outbox, through the dispatcher that owns it: counts by state, dead
//! letters to list, retry or discard, readiness, pruning. The HTTP API and the CLI call these;
//! neither touches the store itself.

use std::sync::Arc;
use std::time::Duration;

use super::Dispatcher;
use crate::outbox::{self, Counts, DeadLetter, Feed, FeedFilter, Selector, Store, StoreError};

/// The outbox's deliveries, as operators see them.
#[derive(Debug, Clone)]
pub struct Deliveries {
    store: Arc<dyn Store>,
}

/// A dead letter made pending again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetriedLetter {
    /// Its id.
    pub id: i64,
    /// The observer that will deliver it.
    pub handler: String,
}

/// Why the host is not ready for events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The outbox refused the probe's write.
    #[error("the outbox cannot take a write: {0}")]
    Store(#[source] StoreError),
    /// The probe took too long.
    #[error("the outbox did not take a write within {} ms", .0.as_millis())]
    Slow(Duration),
}

impl Deliveries {
    /// Operations on `store`, for an operator command run beside a `serve` (or without one);
    /// [`crate::app::open_deliveries`] opens the store a config names.
    pub fn new(store: Arc<dyn Store>) -> Deliveries {
        Deliveries { store }
    }

    /// Deliveries by observer and state.
    pub async fn counts(&self) -> Result<Vec<Counts>, StoreError> {
        self.store.counts().await
    }

    /// Dead letters matching `selector`, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        selector: Selector,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters(selector, limit).await
    }

    /// Makes the dead letters matching `selector` pending again, with a fresh set of attempts;
    /// returns how many. A running `serve` picks them up within a second.
    pub async fn retry(&self, selector: Selector) -> Result<u64, StoreError> {
        self.store.retry_dead(selector, outbox::now()).await
    }

    /// Deletes the dead letters matching `selector` for good; returns how many.
    pub async fn discard(&self, selector: Selector) -> Result<u64, StoreError> {
        self.store.discard_dead(selector).await
    }

    /// Deletes delivered rows older than `retention`; returns how many.
    pub async fn prune_older_than(&self, retention: Duration) -> Result<u64, StoreError> {
        let before = outbox::now() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self.store.prune(before).await
    }

    /// The history's change feed after `after` (see [`Store::feed`]).
    pub async fn feed(
        &self,
        after: i64,
        filter: FeedFilter,
        limit: usize,
    ) -> Result<Feed, StoreError> {
        self.store.feed(after, filter, limit).await
    }

    /// Ticks whenever the feed has something new.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.changes()
    }

    /// Whether deliveries survive a restart.
    pub fn durable(&self) -> bool {
        self.store.durable()
    }
}

/// The operations on a running dispatcher's outbox.
impl Dispatcher {
    /// The outbox's deliveries, for operators.
    pub fn deliveries(&self) -> Deliveries {
        Deliveries {
            store: self.outbox().clone(),
        }
    }

    /// Makes dead letter `id` pending again and wakes its observer's worker, so it is
    /// delivered now rather than at the worker's next poll. `None`: no such dead letter (or
    /// someone else retried or discarded it in between).
    pub async fn retry_dead_letter(&self, id: i64) -> Result<Option<RetriedLetter>, StoreError> {
        let selector = Selector {
            id: Some(id),
            ..Selector::default()
        };
        let deliveries = self.deliveries();
        let Some(letter) = deliveries.dead_letters(selector.clone(), 1).await?.pop() else {
            return Ok(None);
        };
        if deliveries.retry(selector).await? == 0 {
            return Ok(None);
        }
        self.wake(&letter.handler);
        Ok(Some(RetriedLetter {
            id,
            handler: letter.handler,
        }))
    }

    /// Deletes dead letter `id` for good; `false` when there is none.
    pub async fn discard_dead_letter(&self, id: i64) -> Result<bool, StoreError> {
        let selector = Selector {
            id: Some(id),
            ..Selector::default()
        };
        Ok(self.deliveries().discard(selector).await? > 0)
    }

    /// Ready when the outbox takes a write within `within`: a host that would refuse every
    /// event (a read-only or full disk, a stopped writer) is not.
    pub async fn ready(&self, within: Duration) -> Result<(), NotReady> {
        match tokio::time::timeout(within, self.outbox().ready()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotReady::Store(e)),
            Err(_) => Err(NotReady::Slow(within)),
        }
    }
}
