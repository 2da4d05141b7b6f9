//! How an invocation ended, in terms an operator understands. This is the one place where a
//! wasmtime error becomes a cause.

use std::fmt;

use serde::Serialize;

use super::state::StoreState;
use crate::limits::Limits;

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The handler returned an outcome.
    Ok,
    /// The handler returned an error.
    Error,
    /// The guest trapped: a panic, `unreachable`, a bad memory access.
    Trap,
    /// The guest used up its fuel (CPU budget).
    OutOfFuel,
    /// The guest missed its wall-clock deadline.
    Timeout,
    /// The guest tried to grow its memory past its cap.
    MemoryLimit,
    /// The guest recursed past the wasm stack limit.
    StackOverflow,
    /// The guest returned more than may cross the boundary (see `sandbox::limits`).
    Oversize,
    /// Not run: the handler is quarantined after repeated failures.
    Quarantined,
}

impl Status {
    /// Every status, in the order metrics list them.
    pub const ALL: [Status; 9] = [
        Status::Ok,
        Status::Error,
        Status::Trap,
        Status::OutOfFuel,
        Status::Timeout,
        Status::MemoryLimit,
        Status::StackOverflow,
        Status::Oversize,
        Status::Quarantined,
    ];

    /// The name used in JSON output, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Trap => "trap",
            Status::OutOfFuel => "out-of-fuel",
            Status::Timeout => "timeout",
            Status::MemoryLimit => "memory-limit",
            Status::StackOverflow => "stack-overflow",
            Status::Oversize => "oversize",
            Status::Quarantined => "quarantined",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a failed call: a trap, an interrupt, or an error from wasmtime itself.
pub fn classify(
    error: &wasmtime::Error,
    state: &StoreState,
    panic: Option<String>,
    budget: Limits,
) -> (Status, String) {
    let trap = error.downcast_ref::<wasmtime::Trap>().copied();
    // Memory first: a refused `memory.grow` shows up as whatever the guest does next (Rust
    // aborts with `unreachable`), and the refusal is the real cause.
    if state.memory.hit {
        return (
            Status::MemoryLimit,
            format!(
                "tried to grow memory past its limit of {} MiB",
                budget.memory_mib
            ),
        );
    }
    // `exit(n)` (wasi:cli/exit) ends the instance with an error of its own, not a trap.
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            Status::Trap,
            format!("exited with status {} instead of answering", exit.0),
        );
    }
    // An ungranted handler used `wasi:http` beyond building a request: the refusal is the cause.
    if let Some(refused) = error.downcast_ref::<super::http_refused::NotGranted>() {
        return (Status::Trap, refused.to_string());
    }
    // Output written after the deadline ends the invocation from inside the host call.
    if error
        .downcast_ref::<super::output::DeadlinePassed>()
        .is_some()
    {
        return timeout(budget);
    }
    match trap {
        Some(wasmtime::Trap::OutOfFuel) => (
            Status::OutOfFuel,
            format!("used up its fuel ({} units) before answering", budget.fuel),
        ),
        Some(wasmtime::Trap::Interrupt) => timeout(budget),
        Some(wasmtime::Trap::StackOverflow) => {
            (Status::StackOverflow, "overflowed the wasm stack".into())
        }
        Some(trap) => {
            let message = match panic {
                Some(panic) => format!("panicked: {panic}"),
                None => format!("trapped: {trap}"),
            };
            (Status::Trap, message)
        }
        None => (
            Status::Trap,
            format!("failed in the host: {}", one_line(error)),
        ),
    }
}

/// The innermost cause of `error`, on one line: the outer layers are wasmtime's multi-line
/// wasm backtrace, which names guest frames, not the cause.
fn one_line(error: &wasmtime::Error) -> String {
    let cause = error.root_cause().to_string();
    let first = cause.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first.trim().to_owned()
}

/// A deadline that passed while the guest was waiting in the host.
pub fn timeout(budget: Limits) -> (Status, String) {
    (
        Status::Timeout,
        format!("did not answer within {} ms", budget.timeout_ms),
    )
}
