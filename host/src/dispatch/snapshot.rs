//! One picture of the handlers in service, joined with the outbox's figures once: `GET
//! /v1/handlers` serializes it, `GET /metrics` renders it, and the dashboard reads the former.
//! A view never joins slots with outbox gauges its own way.

use std::path::PathBuf;

use serde::Serialize;

use super::{BreakerView, Dispatcher, Failure, ReloadStatus};
use crate::config::{FailurePolicy, Mode};
use crate::limits::Limits;
use crate::metrics::{Exposition, HandlerCounts, HandlerSample, HostCounts};
use crate::outbox::{self, Backend, StoreError};

/// Every handler in service, in config order, with its outbox figures, and the host's counters.
#[derive(Debug)]
pub struct Snapshot {
    /// The handlers.
    pub handlers: Vec<HandlerSnapshot>,
    /// Which store holds the outbox, and which host this is.
    pub backend: Backend,
    /// Host-wide counters.
    pub host: HostCounts,
    /// Set when the outbox could not be read: the observers' figures are then zero.
    pub outbox_error: Option<StoreError>,
}

/// One handler as every status view shows it (serialized as `GET /v1/handlers` answers).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerSnapshot {
    /// Its name.
    pub name: String,
    /// Its module file.
    pub module: PathBuf,
    /// The module's sha256, in hex.
    pub digest: String,
    /// Gate or observer.
    pub mode: Mode,
    /// The event-type patterns it subscribes to.
    pub events: Vec<String>,
    /// The ref patterns it subscribes to.
    pub refs: Vec<String>,
    /// What a failed invocation means for the verdict.
    pub failure_policy: FailurePolicy,
    /// Its per-event limits.
    pub limits: Limits,
    /// Observers: deliveries open in the outbox (`null` for gates).
    pub queue_depth: Option<u64>,
    /// Observers: dead letters in the outbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<u64>,
    /// Its circuit breaker.
    pub quarantine: BreakerView,
    /// How its last reload went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<ReloadStatus>,
    /// Its most recent failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// Its invocation counters.
    pub counters: HandlerCounts,
    /// Observers with open deliveries: the age of the oldest one's event, in seconds.
    #[serde(skip)]
    pub oldest_open_secs: Option<f64>,
    /// A store with consumers (NATS): deliveries not yet handed to any host.
    #[serde(skip)]
    pub consumer_lag: Option<u64>,
}

impl Snapshot {
    /// The Prometheus (OpenMetrics) text of every metric; see [`crate::metrics::CONTENT_TYPE`].
    pub fn prometheus(self) -> String {
        let handlers = self
            .handlers
            .into_iter()
            .map(|h| HandlerSample {
                quarantined: h.quarantine.state != "closed",
                quarantines: h.quarantine.quarantines,
                name: h.name,
                counts: h.counters,
                queue_depth: h.queue_depth,
                oldest_open_secs: h.oldest_open_secs,
                dead_letters: h.dead_letters,
                consumer_lag: h.consumer_lag,
            })
            .collect();
        Exposition {
            host: self.host,
            handlers,
            backend: self.backend,
        }
        .render()
    }
}

/// The snapshot of a running dispatcher.
impl Dispatcher {
    /// Every handler in service with the outbox's figures read now. An outbox that cannot be
    /// read leaves the figures at zero and says why in [`Snapshot::outbox_error`].
    pub async fn snapshot(&self) -> Snapshot {
        let (gauges, outbox_error) = match self.outbox().gauges().await {
            Ok(gauges) => (gauges, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let now = outbox::now();
        let handlers = self
            .slots()
            .iter()
            .map(|slot| {
                let version = slot.version();
                let spec = &version.spec;
                let observer = spec.mode == Mode::Observe;
                let gauge = gauges.iter().find(|g| g.handler == slot.name());
                HandlerSnapshot {
                    name: slot.name().to_owned(),
                    module: spec.module.clone(),
                    digest: version.handler.digest().to_owned(),
                    mode: spec.mode,
                    events: owned(spec.filter.event_patterns()),
                    refs: owned(spec.filter.ref_patterns()),
                    failure_policy: spec.failure_policy,
                    limits: version.spec.limits,
                    queue_depth: observer.then(|| gauge.map_or(0, |g| g.open)),
                    dead_letters: observer.then(|| gauge.map_or(0, |g| g.dead)),
                    quarantine: version.breaker.view(),
                    last_reload: slot.last_reload(),
                    last_failure: slot.last_failure(),
                    counters: slot.stats.counts(),
                    oldest_open_secs: gauge
                        .and_then(|g| g.oldest_open_at)
                        .map(|at| (now - at).max(0) as f64 / 1e3),
                    consumer_lag: gauge.and_then(|g| g.lag),
                }
            })
            .collect();
        Snapshot {
            handlers,
            backend: self.outbox().backend(),
            host: self.stats().counts(),
            outbox_error,
        }
    }
}

fn owned(patterns: Vec<&str>) -> Vec<String> {
    patterns.into_iter().map(str::to_owned).collect()
}
