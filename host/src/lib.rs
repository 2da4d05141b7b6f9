//! hookwasm runs lifecycle event handlers compiled to WebAssembly components.
//!
//! A producer (a git proxy, a git server's hooks, any service over HTTP) emits events; the host
//! reads `proxy.config.json`, loads every handler listed under `eventHandlers` into its own
//! sandbox, and dispatches each event to the handlers subscribed to it: observers through
//! per-handler queues, gates synchronously with a merged verdict.
//!
//! Reading order: [`config`] → [`sandbox`] → [`dispatch`] → [`server`]; [`app`] puts them
//! together from a config (the CLI, the benches and the git hooks start the host through it).
#![deny(missing_docs)]

pub mod app;
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
