//! Counters and histograms, kept in atomics (no lock on the dispatch path). Their exposition
//! for `GET /metrics` (`exposition.rs`, encoded by the `prometheus-client` crate) comes with the
//! `server` feature.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::sandbox::Status;

#[cfg(feature = "server")]
mod exposition;
#[cfg(feature = "server")]
pub use exposition::{CONTENT_TYPE, Exposition, HandlerSample};

/// Upper bounds of the invocation-duration histogram, in seconds.
pub(crate) const DURATION_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// Host-wide counters.
#[derive(Debug, Default)]
pub struct HostStats {
    /// Events accepted for dispatch.
    pub events_received: AtomicU64,
    /// Events refused as malformed.
    pub events_invalid: AtomicU64,
    /// Submissions refused because an observer's queue was full.
    pub events_busy: AtomicU64,
    /// Events accepted before (same `source` and `id`), so not stored again.
    pub events_duplicate: AtomicU64,
    /// Handler versions put in service by a reload.
    pub reloads_ok: AtomicU64,
    /// Reload attempts that left the running version in place.
    pub reloads_failed: AtomicU64,
}

/// Counters of one handler.
#[derive(Debug, Default)]
pub struct HandlerStats {
    by_status: [AtomicU64; Status::ALL.len()],
    denied: AtomicU64,
    fuel: AtomicU64,
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_micros: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
}

/// The host-wide counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounts {
    /// Events accepted for dispatch.
    pub events_received: u64,
    /// Events refused as malformed.
    pub events_invalid: u64,
    /// Submissions refused because an observer's queue was full.
    pub events_busy: u64,
    /// Events accepted before, not stored again.
    pub events_duplicate: u64,
    /// Handler versions put in service by a reload.
    pub reloads_ok: u64,
    /// Reload attempts that left the running version in place.
    pub reloads_failed: u64,
}

impl HostStats {
    /// The counters as they are now.
    pub fn counts(&self) -> HostCounts {
        HostCounts {
            events_received: self.events_received.load(Relaxed),
            events_invalid: self.events_invalid.load(Relaxed),
            events_busy: self.events_busy.load(Relaxed),
            events_duplicate: self.events_duplicate.load(Relaxed),
            reloads_ok: self.reloads_ok.load(Relaxed),
            reloads_failed: self.reloads_failed.load(Relaxed),
        }
    }
}

/// A snapshot of one handler's counters: `GET /v1/handlers` shows the serialized part,
/// `/metrics` all of it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerCounts {
    /// Invocations by status name (only the statuses seen).
    pub invocations: std::collections::BTreeMap<&'static str, u64>,
    /// Invocations whose effective verdict was deny.
    pub denied: u64,
    /// Fuel consumed over all invocations.
    pub fuel_consumed: u64,
    /// The duration histogram: `[upper bound in ms, invocations up to it]`, cumulative (the
    /// dashboard's p99 plot reads its changes).
    pub duration_buckets: Vec<(f64, u64)>,
    /// Total invocation time, in seconds.
    #[serde(skip)]
    pub duration_secs: f64,
    /// Failed delivery attempts scheduled again.
    #[serde(skip)]
    pub retries: u64,
    /// Deliveries given up after their last attempt.
    #[serde(skip)]
    pub dead_lettered: u64,
}

impl HandlerStats {
    /// Records one invocation.
    pub fn record(&self, status: Status, denied: bool, fuel: u64, duration: Duration) {
        self.by_status[status_index(status)].fetch_add(1, Relaxed);
        if denied {
            self.denied.fetch_add(1, Relaxed);
        }
        self.fuel.fetch_add(fuel, Relaxed);
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.duration_micros.fetch_add(
            u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Records a failed delivery attempt that will be retried.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Records a delivery given up after its last attempt.
    pub fn record_dead_letter(&self) {
        self.dead_lettered.fetch_add(1, Relaxed);
    }

    /// The counters as they are now.
    pub fn counts(&self) -> HandlerCounts {
        HandlerCounts {
            invocations: Status::ALL
                .iter()
                .map(|&s| (s.as_str(), self.by_status[status_index(s)].load(Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            denied: self.denied.load(Relaxed),
            fuel_consumed: self.fuel.load(Relaxed),
            duration_buckets: DURATION_BUCKETS
                .iter()
                .zip(&self.buckets)
                .scan(0, |total, (le, n)| {
                    *total += n.load(Relaxed);
                    Some((le * 1e3, *total))
                })
                .collect(),
            duration_secs: self.duration_micros.load(Relaxed) as f64 / 1e6,
            retries: self.retries.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
        }
    }
}

impl HandlerCounts {
    /// Invocations that ended with `status`.
    pub fn invocations_with(&self, status: Status) -> u64 {
        self.invocations.get(status.as_str()).copied().unwrap_or(0)
    }

    /// Invocations, whatever their status.
    pub fn invocations_total(&self) -> u64 {
        self.invocations.values().sum()
    }
}

fn status_index(status: Status) -> usize {
    Status::ALL.iter().position(|&s| s == status).unwrap_or(0)
}
