//! Admission: room reserved with every subscribed observer before anything is stored (all or
//! nothing, refused or waited for), then the events and their deliveries committed to the
//! outbox in one call.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::event::Event;
use crate::metrics::HostStats;
use crate::outbox::{self, NewEvent, OnDuplicate, Store};

use super::registry::Slot;

/// How a submission behaves when an observer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Refuse at once with [`Refused::Busy`] (HTTP answers 503).
    Refuse,
    /// Wait for room (the library and `replay`).
    Wait,
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

impl Slot {
    /// Reserves room for `wanted` deliveries within the observer's capacity; all or nothing.
    pub(super) fn reserve(&self, wanted: usize) -> bool {
        let capacity = self.version().spec.queue_capacity;
        let before = self.backlog.fetch_add(wanted, Relaxed);
        if before + wanted > capacity {
            self.unreserve(wanted);
            return false;
        }
        true
    }

    /// Gives back room: deliveries finished (done or dead), or a reservation not used.
    pub(super) fn unreserve(&self, count: usize) {
        let _ = self
            .backlog
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(count)));
    }
}

/// Room reserved with observers for one submission. Dropped before [`Reservation::keep`] (the
/// outbox failed, the producer went away), it gives the room back.
#[derive(Default)]
pub(super) struct Reservation<'a> {
    held: Vec<(&'a Arc<Slot>, usize)>,
}

impl Reservation<'_> {
    /// Gives back room for `count` deliveries of `slot` that were not stored (duplicates).
    pub(super) fn give_back(&mut self, slot: &Slot, count: usize) {
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
    pub(super) fn keep(mut self) {
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

/// Reserves room with each observer for the deliveries it is to get; on refusal (or if the
/// caller goes away while it waits) nothing stays reserved.
pub(super) async fn reserve<'a>(
    stats: &HostStats,
    demand: &[(&'a Arc<Slot>, usize)],
    backpressure: Backpressure,
) -> Result<Reservation<'a>, Refused> {
    let mut reserved = Reservation::default();
    for &(slot, wanted) in demand {
        if wanted == 0 {
            continue;
        }
        let capacity = slot.version().spec.queue_capacity;
        if wanted > capacity {
            return Err(Refused::TooLarge {
                handler: slot.name.clone(),
                wanted,
                capacity,
            });
        }
        while !slot.reserve(wanted) {
            if backpressure == Backpressure::Refuse {
                stats.events_busy.fetch_add(1, Relaxed);
                return Err(Refused::Busy {
                    handler: slot.name.clone(),
                    wanted,
                    capacity,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reserved.held.push((slot, wanted));
    }
    Ok(reserved)
}

/// Commits the events, with their observers' deliveries, in one call: every event is kept in
/// the history. Only a batch with deliveries is a promise (fsynced); a history the store cannot
/// write is logged and does not fail a request that stores no delivery.
pub(super) async fn store(
    outbox: &dyn Store,
    events: &[Event],
    subscribed: &[Vec<&Arc<Slot>>],
    for_observers: bool,
) -> Result<Vec<outbox::Accepted>, outbox::StoreError> {
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
    match outbox
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

/// The outbox row of `event` for `observers`; `for_observers` says whether the request was
/// routed to observers at all (see [`NewEvent::for_observers`]).
pub(super) fn new_event(
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
        // The JSON text the event was built with: serialised once, at acceptance.
        json: event.wit().json.clone(),
        handlers: observers.collect(),
        for_observers,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::super::test_support::{dispatcher, event};
    use super::*;
    use crate::outbox::Store;

    #[tokio::test]
    async fn room_is_all_or_nothing_and_a_refusal_stores_nothing() {
        let (d, store) = dispatcher(json!([
            {"name": "small", "config": {"behavior": "ok"}, "queueCapacity": 2},
            {"name": "big", "config": {"behavior": "ok"}, "queueCapacity": 10},
        ]))
        .await;
        d.submit(&[event("a")], Backpressure::Refuse).await.unwrap();
        let refused = d
            .submit(&[event("b"), event("c")], Backpressure::Refuse)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Refused::Busy { handler, wanted: 2, capacity: 2 } if handler == "small"),
            "{refused}"
        );
        let too_large = d
            .submit(&[event("d"), event("e"), event("f")], Backpressure::Refuse)
            .await
            .unwrap_err();
        assert!(
            matches!(too_large, Refused::TooLarge { wanted: 3, .. }),
            "{too_large}"
        );
        // Neither refusal stored anything nor kept room with the observer that had some.
        assert_eq!(store.open_count("big".into()).await.unwrap(), 1);
        assert_eq!(d.slot("big").unwrap().queue_depth(), Some(1));
        assert_eq!(d.stats().events_busy.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_dropped_reservation_gives_its_room_back_and_duplicates_take_none() {
        let (d, _) =
            dispatcher(json!([{"name": "o", "config": {"behavior": "ok"}, "queueCapacity": 3}]))
                .await;
        let slot = d.slot("o").unwrap();
        let stats = HostStats::default();
        {
            let demand = [(&slot, 2)];
            let reserved = reserve(&stats, &demand, Backpressure::Refuse)
                .await
                .unwrap();
            assert_eq!(slot.queue_depth(), Some(2));
            drop(reserved);
        }
        assert_eq!(slot.queue_depth(), Some(0));

        d.submit(&[event("x")], Backpressure::Refuse).await.unwrap();
        let again = d.submit(&[event("x")], Backpressure::Refuse).await.unwrap();
        assert!(again[0].duplicate);
        assert_eq!(again[0].observers_queued, 0);
        assert_eq!(
            slot.queue_depth(),
            Some(1),
            "the duplicate's room was given back"
        );
    }

    #[tokio::test]
    async fn rows_carry_the_accepted_json_text() {
        let e = event("j");
        let row = new_event(&e, ["o".to_owned()].into_iter(), true);
        assert_eq!(row.json, e.json().to_string());
        assert_eq!((row.source.as_str(), row.handlers.len()), ("unit", 1));
    }
}
