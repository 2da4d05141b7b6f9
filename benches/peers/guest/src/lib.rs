//! The bench guest's handlers (`tests/guests/bench/src/logic.rs`, the same file) as an Extism
//! plugin, so the peer benchmark compares runtimes, not logic:
//! - `on_event` (hookwasm's `realistic`): takes the CloudEvent JSON, parses it, and returns a
//!   string (the repository and the 1 KiB summary);
//! - `trivial` (hookwasm's `trivial`): takes the event and returns an empty string, so what is
//!   left is what the runtime costs per call.

#[path = "../../../../tests/guests/bench/src/logic.rs"]
#[allow(dead_code)]
mod logic;

use extism_pdk::{plugin_fn, FnResult};

/// One event in, one string out.
#[plugin_fn]
pub fn on_event(event: String) -> FnResult<String> {
    let [(_, repository), (_, summary)] =
        logic::realistic(&event).map_err(extism_pdk::Error::msg)?;
    Ok(format!("{repository}\n{summary}"))
}

/// One event in (read into the plugin's memory, as hookwasm lowers it into the guest's), nothing
/// done with it, an empty string out.
#[plugin_fn]
pub fn trivial(event: String) -> FnResult<String> {
    drop(event);
    Ok(String::new())
}
