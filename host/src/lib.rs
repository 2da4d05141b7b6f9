//! hookwasm runs lifecycle event handlers compiled to WebAssembly components.
//!
//! A producer (a git proxy, a git server's hooks, any service over HTTP) emits events; the host
//! reads `proxy.config.json`, loads every handler listed under `eventHandlers` into its own
//! sandbox, and dispatches each event to the handlers subscribed to it: observers through the
//! outbox (each observer's worker claims its deliveries in order, in batches), gates
//! synchronously with a merged verdict.
//!
//! The modules form layers; each imports only from layers below it:
//!
//! 1. Vocabulary, importing nothing of the crate: [`wit`] (the generated bindings: the event,
//!    outcome and verdict types every layer speaks), [`limits`] (a handler's per-event limits),
//!    [`address`] (`scheme://host[:port]` and `allowedHosts` matching), [`trace`] (trace
//!    context and spans), [`escape`], [`auth`].
//! 2. [`event`] (the CloudEvents envelope, the taxonomy, declared types) and [`outbox`] (where
//!    accepted events and their deliveries are kept).
//! 3. [`config`] (the file, read into specs), [`ingest`] (the CloudEvents HTTP binding),
//!    [`scaffold`] (`hookwasm new`).
//! 4. [`sandbox`] (one handler's component, run under its limits and grants).
//! 5. [`metrics`], then [`dispatch`] (who gets an event, gates, observers' workers).
//! 6. Producers and operations: [`git`], [`reload`], [`rebuild`], [`server`].
//! 7. [`app`], the composition root: it opens all of the above from a config; the CLI
//!    (`main.rs`), the benches and the git hooks start the host through it.
//!
//! Reading order: [`event`] → [`config`] → [`sandbox`] → [`dispatch`] → [`server`].
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

pub mod address;
#[cfg(feature = "app")]
pub mod app;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod escape;
pub mod event;
#[cfg(feature = "server")]
pub mod git;
#[cfg(feature = "server")]
pub mod ingest;
pub mod limits;
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
pub mod wit;
