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
//! - `console`: API tokens and scopes on every endpoint, dashboard sessions with CSRF, the
//!   loopback-only default, and the resumable event stream.
//! - `dashboard`: the dashboard in headless Chromium (chromedriver): sign in, live events with
//!   verdicts and annotations, retrying a dead letter, a quarantined handler; screenshots.
//! - `config_errors`: every broken config entry reported, by `check` and by `serve`.
//! - `config_golden`: each config mistake under `tests/config-errors/` prints exactly its
//!   `expected.txt` (`BLESS=1` rewrites them).
//! - `reload`: `serve --watch` and SIGHUP swap modules and apply config edits while events
//!   flow, losing nothing; the compile cache is one entry per module and rebuilds broken ones.
//! - `sandbox_limits`: each misbehaving guest (spin, sleep, allocate, recurse, panic, floods,
//!   huge answers, endless `init`, WASI probes) ends as one cause; the host and the other
//!   handlers carry on.
//! - `quarantine`: repeated failures open the breaker, a probe closes it, over HTTP.
//! - `capabilities`: outbound HTTP only where granted; the webhook plugin's signed deliveries.
//! - `history`: every event's outcomes kept and served by `GET /v1/events`; the sample config
//!   shared with GitProxy.
//! - `notify`: the notify plugin's Slack and Teams cards and its e-mail through a real SMTP server
//!   (aiosmtpd); SMTP refused where not granted; a WIT 0.1.0 component still runs.
//! - `cloudevents`: the official CloudEvents SDKs in structured, binary and batch modes; declared
//!   event types validated at ingest and listed alike over HTTP and the CLI; trace context into
//!   handlers' outbound requests and OTLP; malformed headers and attributes refused.
//! - `nats`: the outbox on NATS JetStream (real `nats-server` processes): hosts share the work
//!   and survive one being killed, a three-node cluster survives a node, dead letters, bad config.
//! - `ingest_validation`: content types other than the event formats are a 415; ids, times,
//!   strings and typed payloads that break a rule are refused with it, and nothing is stored.
//! - `hardening`: guest text cannot forge the host's log; failures are one line with their cause;
//!   readiness is honest about the outbox; slow clients cannot lock producers out.
//! - `outbox`: observers' deliveries are stored first, retried with backoff, dead-lettered,
//!   retried by an operator, kept once per event id, and survive `kill -9`.
//! - `authors`: a plugin author's mistakes get one line saying what to do; `call` caches
//!   compiled modules; `--watch` reloads while the host's own log grows beside the config.
//! - `newcomer`: `hookwasm new` (Rust and JavaScript) → build → test → call → serve → an edit
//!   rebuilt by `--watch --build` while events flow.

mod support;

mod authors;
mod capabilities;
mod cli;
mod cloudevents;
mod config_errors;
mod config_golden;
mod console;
mod dashboard;
mod gates;
mod git;
mod hardening;
mod hardening_sandbox;
mod history;
mod http_api;
mod ingest_validation;
mod isolation;
mod nats;
mod newcomer;
mod notify;
mod observers;
mod outbox;
mod quarantine;
mod receiver;
mod reload;
mod sandbox_limits;
