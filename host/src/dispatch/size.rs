//! Events too large for a handler that would get them are refused at the door.
//!
//! A handler reads the event's JSON (the webhook plugin signs and sends it: about 125 fuel per
//! byte), so an event its fuel cannot cover fails every attempt, for hours of retries, before
//! it becomes a dead letter. Refusing it when it arrives tells the producer at once, with the
//! handler and the limit. The limit comes from the handler's fuel (see
//! [`crate::sandbox::max_event_bytes`]); raising `limits.fuel` raises it.

use std::sync::Arc;

use super::{Mode, Refused, Route, Slot};
use crate::event::Event;

/// The first event of `events` that a handler it would reach on `route` cannot take.
pub(super) fn check(slots: &[Arc<Slot>], events: &[Event], route: Route) -> Result<(), Refused> {
    for event in events {
        let size = event.wit().json.len() as u64;
        for slot in slots {
            let reached = match slot.mode {
                Mode::Gate => route != Route::Observers,
                Mode::Observe => route != Route::Gates,
            };
            if !reached || !slot.wants(event) {
                continue;
            }
            let fuel = slot.version().spec.limits.fuel;
            let limit = crate::sandbox::max_event_bytes(fuel);
            if size > limit {
                return Err(Refused::EventTooLarge {
                    event: event.id().to_owned(),
                    size,
                    handler: slot.name.clone(),
                    limit,
                    fuel,
                });
            }
        }
    }
    Ok(())
}
