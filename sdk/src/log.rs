//! Writing to the host's log (the `host.log` import), tagged there with the handler's name.
//!
//! Use the functions for fixed text and the crate-root macros ([`info!`](crate::info) and
//! friends) for `format!`-style messages. Printing to stdout or stderr works too: the host
//! forwards both into its log, but without a level.

use crate::bindings::hookwasm::handler::host::{self, Level};

/// Logs at `trace` level.
pub fn trace(message: &str) {
    host::log(Level::Trace, message);
}

/// Logs at `debug` level.
pub fn debug(message: &str) {
    host::log(Level::Debug, message);
}

/// Logs at `info` level.
pub fn info(message: &str) {
    host::log(Level::Info, message);
}

/// Logs at `warn` level.
pub fn warn(message: &str) {
    host::log(Level::Warn, message);
}

/// Logs at `error` level.
pub fn error(message: &str) {
    host::log(Level::Error, message);
}

/// Logs a `format!`-style message at `trace` level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at `debug` level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at `info` level, e.g. `hookwasm_sdk::info!("ref {}", name)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at `warn` level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Logs a `format!`-style message at `error` level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}
