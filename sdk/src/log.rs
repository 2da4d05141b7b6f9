//! Writing to the host's log (the `host.log` import), tagged there with the handler's name.
//!
//! Use the functions for fixed text and the crate-root macros ([`info!`](crate::info) and
//! friends) for `format!`-style messages. Printing to stdout or stderr works too: the host
//! forwards both into its log, but without a level.
//!
//! Outside WebAssembly (a handler's native unit tests) there is no host: lines go to stderr,
//! prefixed with their level, and a live [`crate::testing::TestHost`] keeps them for the test to
//! read.

use crate::bindings::hookwasm::handler::host::Level;

/// Logs at `trace` level.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Logs at `debug` level.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Logs at `info` level.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Logs at `warn` level.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Logs at `error` level.
pub fn error(message: &str) {
    write(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
fn write(level: Level, message: &str) {
    crate::bindings::hookwasm::handler::host::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn write(level: Level, message: &str) {
    crate::testing::capture_log(level, message);
    let level = match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    eprintln!("[{level}] {message}");
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
