//! hookwasm runs lifecycle event handlers compiled to WebAssembly components.
//!
//! A producer (a git proxy, a git server's hooks, any service over HTTP) emits events; the host
//! reads `proxy.config.json`, loads every handler listed under `eventHandlers` into its own
//! sandbox, and dispatches each event to the handlers subscribed to it: observers through the
//! outbox (each observer's worker claims its deliveries in order, in batches), gates
//! synchronously with a merged verdict.
//!
//! Reading order: [`config`] → [`sandbox`] → [`dispatch`] → [`server`].
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod dispatch;
pub mod escape;
pub mod event;
pub mod git;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod rebuild;
pub mod reload;
pub mod sandbox;
pub mod scaffold;
#[cfg(test)]
mod sdk_agreement;
pub mod server;
pub mod trace;
