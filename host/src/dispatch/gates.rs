//! Running the handlers subscribed to an event in parallel (gates, and observers under
//! `replay`), and what observers of a denied event receive.
//!
//! Observers of an event that gates denied are still told: an audit log wants the attempt, and
//! a notifier must be able to tell it from what happened. The copy they receive carries the
//! verdict as CloudEvents extension attributes, set by the host only:
//! - `hookwasmverdict`: `denied`;
//! - `hookwasmdeniedby`: the denying gates' names, comma-separated, in config order.
//!
//! An allowed event carries neither (a producer's own values are removed when the host's gates
//! decided), so a handler can trust them.

use std::sync::Arc;

use serde_json::Value;

use crate::event::Event;

use super::registry::Slot;
use super::report::{Report, Verdict};

/// The extension attribute that says a gate denied the event.
pub const VERDICT_ATTRIBUTE: &str = "hookwasmverdict";

/// The extension attribute that names the gates that denied the event.
pub const DENIED_BY_ATTRIBUTE: &str = "hookwasmdeniedby";

/// Runs the handlers of `slots` subscribed to `event` that `select` picks, in parallel; reports
/// come back in config order.
///
/// The invocations are detached tasks: if the caller goes away (an HTTP client hangs up), they
/// still finish and record their outcome, so no breaker is left waiting on a probe.
pub(super) async fn run(
    slots: &[Arc<Slot>],
    event: &Event,
    select: impl Fn(&Slot) -> bool,
) -> Vec<Report> {
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

/// What observers receive of `event` once `gates` have decided: the event itself when they
/// allowed it, a copy carrying the verdict when any denied it (see the module's doc).
pub fn with_verdict(event: &Event, gates: &[Report]) -> Event {
    let deniers: Vec<&str> = gates
        .iter()
        .filter(|gate| gate.verdict == Some(Verdict::Deny))
        .map(|gate| gate.handler.as_str())
        .collect();
    let json = event.json();
    let carries = json.get(VERDICT_ATTRIBUTE).is_some() || json.get(DENIED_BY_ATTRIBUTE).is_some();
    if deniers.is_empty() && !carries {
        return event.clone();
    }
    denied_by(event, &deniers)
}

/// A copy of `event` marked as denied by `deniers` (none: unmarked). Used as is for an event
/// refused as part of a whole (a git push is refused with all its refs).
pub fn denied_by(event: &Event, deniers: &[&str]) -> Event {
    let mut json = event.json().clone();
    if let Value::Object(attributes) = &mut json {
        attributes.remove(VERDICT_ATTRIBUTE);
        attributes.remove(DENIED_BY_ATTRIBUTE);
        if !deniers.is_empty() {
            attributes.insert(VERDICT_ATTRIBUTE.into(), "denied".into());
            attributes.insert(DENIED_BY_ATTRIBUTE.into(), deniers.join(",").into());
        }
    }
    // Read as stored: it was accepted already, and the host's own attributes need no check.
    match Event::from_stored(json.to_string().as_bytes()) {
        Ok(marked) => marked,
        Err(e) => {
            tracing::error!(
                event = event.id(),
                "cannot mark the event with its verdict: {e}"
            );
            event.clone()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::super::test_support::{dispatcher, event};
    use super::super::{Backpressure, Route};
    use super::*;
    use crate::outbox::Store;

    /// What the observers were given of event `id`: the stored JSON.
    async fn stored(store: &crate::outbox::memory::MemoryStore, id: &str) -> Value {
        store.event(id.into(), None).await.unwrap().unwrap().event
    }

    #[tokio::test]
    async fn observers_of_a_denied_event_get_it_with_the_verdict_and_the_denying_gates() {
        let (d, store) = dispatcher(json!([
            {"name": "allows", "mode": "gate", "config": {"behavior": "ok"}},
            {"name": "denies", "mode": "gate", "config": {"behavior": "deny"}},
            {"name": "fails-closed", "mode": "gate", "config": {"behavior": "error"}},
            {"name": "audit", "config": {"behavior": "ok"}},
        ]))
        .await;
        let decisions = d
            .submit(&[event("d1")], Backpressure::Refuse)
            .await
            .unwrap();
        assert_eq!(decisions[0].verdict, Verdict::Deny);
        assert_eq!(decisions[0].observers_queued, 1, "observers are still told");
        let json = stored(&store, "d1").await;
        assert_eq!(json[VERDICT_ATTRIBUTE], "denied");
        assert_eq!(json[DENIED_BY_ATTRIBUTE], "denies,fails-closed");
        let kept = d.slot("audit").unwrap().take_accepted(1).unwrap();
        assert_eq!(
            kept.json()[VERDICT_ATTRIBUTE],
            "denied",
            "the worker runs the marked copy"
        );
        assert!(kept.wit().json.contains("\"hookwasmverdict\":\"denied\""));
    }

    #[tokio::test]
    async fn an_allowed_event_is_unmarked_even_when_the_producer_marked_it() {
        let (d, store) = dispatcher(json!([
            {"name": "allows", "mode": "gate", "config": {"behavior": "ok"}},
            {"name": "audit", "config": {"behavior": "ok"}},
        ]))
        .await;
        let mut forged = event("f1").json().clone();
        forged[VERDICT_ATTRIBUTE] = "denied".into();
        let forged = Event::from_json(forged).unwrap();
        d.submit(&[forged, event("f2")], Backpressure::Refuse)
            .await
            .unwrap();
        assert!(stored(&store, "f1").await.get(VERDICT_ATTRIBUTE).is_none());
        assert!(stored(&store, "f2").await.get(VERDICT_ATTRIBUTE).is_none());
    }

    #[tokio::test]
    async fn gates_run_in_parallel_in_config_order_and_only_gates_on_route_gates() {
        let (d, store) = dispatcher(json!([
            {"name": "one", "mode": "gate", "config": {"behavior": "ok"}},
            {"name": "two", "mode": "gate", "config": {"behavior": "deny", "reason": "no\nforged"}},
            {"name": "audit", "config": {"behavior": "ok"}},
        ]))
        .await;
        let decisions = d
            .submit_to(&[event("g1")], Route::Gates, Backpressure::Refuse)
            .await
            .unwrap();
        let names: Vec<&str> = decisions[0]
            .gates
            .iter()
            .map(|g| g.handler.as_str())
            .collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(decisions[0].observers_queued, 0);
        assert_eq!(store.open_count("audit".into()).await.unwrap(), 0);
    }

    #[test]
    fn denied_by_marks_and_an_empty_list_unmarks() {
        let marked = denied_by(&event("m"), &["a", "b"]);
        assert_eq!(marked.json()[DENIED_BY_ATTRIBUTE], "a,b");
        assert_eq!(marked.id(), "m");
        let unmarked = denied_by(&marked, &[]);
        assert!(unmarked.json().get(VERDICT_ATTRIBUTE).is_none());
    }
}
