//! End-to-end tests: the real `hookwasm` binary, real `.wasm` components built by
//! `cargo xtask build-guests`, real HTTP on 127.0.0.1.
//!
//! Each test starts its own host (or runs one command) in its own temporary folder, so tests are
//! independent and run in parallel. Read a test's name and its first lines to see what it
//! proves; `support.rs` holds the plumbing.
//!
//! - `observers`: order, exactly-once delivery, backpressure and draining on shutdown;
//! - `gates`: synchronous verdicts, merged from every gate;
//! - `isolation`: one handler's failure or mutation never reaches another handler or the
//!   producer;
//! - `http_api`: the HTTP surface: bad requests, status endpoints, metrics;
//! - `cli`: `call`, `replay` and `events`, their JSON output and exit codes;
//! - `config_errors`: every broken config entry reported, by `check` and by `serve`.
//! - `reload`: `serve --watch` and SIGHUP swap modules and apply config edits while events
//!   flow, losing nothing; the compile cache is one entry per module and rebuilds broken ones.
//! - `sandbox_limits`: each misbehaving guest (spin, sleep, allocate, recurse, panic, floods,
//!   huge answers, endless `init`, WASI probes) ends as one cause; the host and the other
//!   handlers carry on.
//! - `quarantine`: repeated failures open the breaker, a probe closes it, over HTTP.
//! - `capabilities`: outbound HTTP only where granted; the webhook plugin's signed deliveries.
//! - `history`: every event's outcomes kept and served by `GET /v1/events`; the sample config
//!   shared with GitProxy.
//! - `nats`: the outbox on NATS JetStream (real `nats-server` processes): hosts share the work
//!   and survive one being killed, a three-node cluster survives a node, dead letters, bad config.
//! - `outbox`: observers' deliveries are stored first, retried with backoff, dead-lettered,
//!   retried by an operator, kept once per event id, and survive `kill -9`.

mod support;

mod capabilities;
mod cli;
mod config_errors;
mod gates;
mod git;
mod history;
mod http_api;
mod isolation;
mod nats;
mod observers;
mod outbox;
mod quarantine;
mod receiver;
mod reload;
mod sandbox_limits;
