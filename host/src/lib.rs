//! hookwasm runs lifecycle event handlers compiled to WebAssembly components.
//!
//! A producer (a git proxy, a git server's hooks, any service over HTTP) emits events; the host
//! reads `proxy.config.json`, loads every handler listed under `eventHandlers` into its own
//! sandbox, and dispatches each event to the handlers subscribed to it: observers through
//! per-handler queues, gates synchronously with a merged verdict.
//!
//! Reading order: [`config`] → [`sandbox`] → [`dispatch`] → [`server`].
//!
//! Cargo features (all on by default; the `hookwasm` binary needs them all):
//! - `server`: the HTTP API ([`server`], [`ingest`]) on axum/hyper, with reloads (`watch`);
//! - `sqlite` and `nats`: the outbox stores [`outbox::sqlite`] and [`outbox::nats`];
//! - `watch`: [`reload`] and [`rebuild`], which watch files with `notify`;
//! - `otlp`: exporting spans over OTLP (`trace::Telemetry`);
//! - `cli`: the binary itself (clap, the log subscriber) and everything above.
//!
//! With `default-features = false` the library is the embeddable core: [`config`], [`event`],
//! [`sandbox`] (load a handler from a file or from bytes, run events) and [`dispatch`] over any
//! [`outbox::Store`].
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod dispatch;
pub mod escape;
pub mod event;
pub mod git;
#[cfg(feature = "server")]
pub mod ingest;
pub mod metrics;
pub mod outbox;
#[cfg(feature = "watch")]
pub mod rebuild;
#[cfg(feature = "watch")]
pub mod reload;
pub mod sandbox;
pub mod scaffold;
#[cfg(test)]
mod sdk_agreement;
#[cfg(feature = "server")]
pub mod server;
pub mod trace;
