//! Bounds on what crosses the boundary from a guest to the host. The guest's memory cap already
//! bounds how much it can hand back at all; these caps keep what the host then keeps, logs and
//! forwards to producers small.

use crate::wit;

/// Wasm stack a guest may use; deeper recursion traps as `stack-overflow`.
pub const MAX_WASM_STACK_BYTES: usize = 512 * 1024;
/// Fuel a handler is assumed to spend per byte of the event it reads: what the webhook plugin
/// spends parsing, signing and sending one (about 125), rounded up.
pub const FUEL_PER_EVENT_BYTE: u64 = 128;

/// The largest event (its CloudEvent JSON, in bytes) a handler with `fuel` is given; larger
/// ones are refused at ingest rather than failing every attempt for lack of fuel.
pub fn max_event_bytes(fuel: u64) -> u64 {
    fuel / FUEL_PER_EVENT_BYTE
}

/// Longest deny reason or error message a handler may return.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Most annotations one outcome may carry.
pub const MAX_ANNOTATIONS: usize = 32;
/// Longest annotation key.
pub const MAX_ANNOTATION_KEY_BYTES: usize = 128;
/// Longest annotation value.
pub const MAX_ANNOTATION_VALUE_BYTES: usize = 4 * 1024;

/// Why an outcome is too large to accept, or `None` when it fits.
pub fn check_outcome(outcome: &wit::Outcome) -> Option<String> {
    if let wit::Verdict::Deny(reason) = &outcome.verdict
        && let Some(oversize) = check_message(reason, "deny reason")
    {
        return Some(oversize);
    }
    if outcome.annotations.len() > MAX_ANNOTATIONS {
        return Some(format!(
            "returned {} annotations; the limit is {MAX_ANNOTATIONS}",
            outcome.annotations.len()
        ));
    }
    outcome.annotations.iter().find_map(|(key, value)| {
        if key.len() > MAX_ANNOTATION_KEY_BYTES {
            Some(format!("returned a {}-byte annotation key; the limit is {MAX_ANNOTATION_KEY_BYTES} bytes", key.len()))
        } else if value.len() > MAX_ANNOTATION_VALUE_BYTES {
            Some(format!(
                "returned a {}-byte value for annotation {key:?}; the limit is {MAX_ANNOTATION_VALUE_BYTES} bytes",
                value.len()
            ))
        } else {
            None
        }
    })
}

/// Why a returned message is too long, or `None` when it fits.
pub fn check_message(message: &str, what: &str) -> Option<String> {
    (message.len() > MAX_MESSAGE_BYTES).then(|| {
        format!(
            "returned a {}-byte {what}; the limit is {MAX_MESSAGE_BYTES} bytes",
            message.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_within_bounds_pass_and_each_bound_is_named() {
        let outcome = |verdict, annotations| wit::Outcome {
            verdict,
            annotations,
        };
        let small = vec![("k".to_string(), "v".to_string())];
        assert_eq!(
            check_outcome(&outcome(wit::Verdict::Deny("no".into()), small.clone())),
            None
        );
        let many = vec![("k".to_string(), "v".to_string()); MAX_ANNOTATIONS + 1];
        let err = check_outcome(&outcome(wit::Verdict::Deny("no".into()), many)).expect("too many");
        assert!(err.contains("annotations"), "{err}");
        let long = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let err =
            check_outcome(&outcome(wit::Verdict::Deny(long.clone()), vec![])).expect("too long");
        assert!(err.contains("deny reason"), "{err}");
        let many = vec![("k".to_string(), "v".to_string()); MAX_ANNOTATIONS + 1];
        assert!(
            check_outcome(&outcome(wit::Verdict::Allow, many))
                .is_some_and(|e| e.contains("annotations"))
        );
        let big = vec![("k".to_string(), long)];
        assert!(
            check_outcome(&outcome(wit::Verdict::Allow, big))
                .is_some_and(|e| e.contains("annotation \"k\""))
        );
    }
}
