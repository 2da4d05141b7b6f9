//! The bench guest's realistic handler (`tests/guests/bench/src/logic.rs`, the same file) as an
//! Extism plugin: `on_event` takes the CloudEvent JSON, parses it, and returns a string (the
//! repository and the 1 KiB summary), so the peer benchmark compares runtimes, not logic.

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
