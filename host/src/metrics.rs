//! Counters and histograms, kept in atomics (no lock on the dispatch path) and rendered in the
//! Prometheus text format for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::sandbox::Status;

/// Upper bounds of the invocation-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] = [
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
}

/// A snapshot of one handler's counters, for `GET /v1/handlers`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerCounts {
    /// Invocations by status name (only the statuses seen).
    pub invocations: std::collections::BTreeMap<&'static str, u64>,
    /// Invocations whose effective verdict was deny.
    pub denied: u64,
    /// Fuel consumed over all invocations.
    pub fuel_consumed: u64,
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
        }
    }
}

fn status_index(status: Status) -> usize {
    Status::ALL.iter().position(|&s| s == status).unwrap_or(0)
}

/// What `/metrics` needs to know about one handler.
#[derive(Debug)]
pub struct HandlerSample<'a> {
    /// The handler's name (config validation keeps it to `[A-Za-z0-9._-]`, safe in a label).
    pub name: &'a str,
    /// Its counters.
    pub stats: &'a HandlerStats,
    /// Events waiting in its queue (observers only).
    pub queue_depth: Option<usize>,
    /// Whether it is quarantined now (breaker open or half-open).
    pub quarantined: bool,
    /// How many times it has been quarantined.
    pub quarantines: u64,
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render(host: &HostStats, handlers: &[HandlerSample<'_>]) -> String {
    let mut out = String::new();
    let o = &mut out;
    header(
        o,
        "hookwasm_events_received_total",
        "counter",
        "Events accepted for dispatch.",
    );
    let _ = writeln!(
        o,
        "hookwasm_events_received_total {}",
        host.events_received.load(Relaxed)
    );
    header(
        o,
        "hookwasm_events_refused_total",
        "counter",
        "Events refused, by reason.",
    );
    let _ = writeln!(
        o,
        "hookwasm_events_refused_total{{reason=\"invalid\"}} {}",
        host.events_invalid.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "hookwasm_events_refused_total{{reason=\"busy\"}} {}",
        host.events_busy.load(Relaxed)
    );

    header(
        o,
        "hookwasm_reloads_total",
        "counter",
        "Handler reloads, by result.",
    );
    let _ = writeln!(
        o,
        "hookwasm_reloads_total{{result=\"ok\"}} {}",
        host.reloads_ok.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "hookwasm_reloads_total{{result=\"failed\"}} {}",
        host.reloads_failed.load(Relaxed)
    );

    header(
        o,
        "hookwasm_handler_invocations_total",
        "counter",
        "Invocations by handler and status.",
    );
    for h in handlers {
        for status in Status::ALL {
            let count = h.stats.by_status[status_index(status)].load(Relaxed);
            let _ = writeln!(
                o,
                "hookwasm_handler_invocations_total{{handler=\"{}\",status=\"{status}\"}} {count}",
                h.name
            );
        }
    }
    header(
        o,
        "hookwasm_handler_denied_total",
        "counter",
        "Invocations whose effective verdict was deny.",
    );
    for h in handlers {
        let _ = writeln!(
            o,
            "hookwasm_handler_denied_total{{handler=\"{}\"}} {}",
            h.name,
            h.stats.denied.load(Relaxed)
        );
    }
    header(
        o,
        "hookwasm_handler_fuel_consumed_total",
        "counter",
        "Fuel consumed, by handler.",
    );
    for h in handlers {
        let _ = writeln!(
            o,
            "hookwasm_handler_fuel_consumed_total{{handler=\"{}\"}} {}",
            h.name,
            h.stats.fuel.load(Relaxed)
        );
    }
    header(
        o,
        "hookwasm_handler_duration_seconds",
        "histogram",
        "Invocation wall-clock time, instantiation included.",
    );
    for h in handlers {
        let name = h.name;
        let mut cumulative = 0;
        for (le, bucket) in DURATION_BUCKETS.iter().zip(&h.stats.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                o,
                "hookwasm_handler_duration_seconds_bucket{{handler=\"{name}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count: u64 = h.stats.by_status.iter().map(|c| c.load(Relaxed)).sum();
        let sum = h.stats.duration_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            o,
            "hookwasm_handler_duration_seconds_bucket{{handler=\"{name}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "hookwasm_handler_duration_seconds_sum{{handler=\"{name}\"}} {sum}"
        );
        let _ = writeln!(
            o,
            "hookwasm_handler_duration_seconds_count{{handler=\"{name}\"}} {count}"
        );
    }
    header(
        o,
        "hookwasm_observer_queue_depth",
        "gauge",
        "Events waiting in an observer's queue.",
    );
    for h in handlers {
        if let Some(depth) = h.queue_depth {
            let _ = writeln!(
                o,
                "hookwasm_observer_queue_depth{{handler=\"{}\"}} {depth}",
                h.name
            );
        }
    }
    header(
        o,
        "hookwasm_handler_quarantined",
        "gauge",
        "1 while a handler is quarantined after repeated failures.",
    );
    for h in handlers {
        let _ = writeln!(
            o,
            "hookwasm_handler_quarantined{{handler=\"{}\"}} {}",
            h.name,
            u8::from(h.quarantined)
        );
    }
    header(
        o,
        "hookwasm_handler_quarantines_total",
        "counter",
        "Times a handler was quarantined.",
    );
    for h in handlers {
        let _ = writeln!(
            o,
            "hookwasm_handler_quarantines_total{{handler=\"{}\"}} {}",
            h.name, h.quarantines
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_add_up() {
        let stats = HandlerStats::default();
        stats.record(Status::Ok, false, 10, Duration::from_micros(80));
        stats.record(Status::Timeout, true, 5, Duration::from_millis(3));
        let text = render(
            &HostStats::default(),
            &[HandlerSample {
                name: "gate",
                stats: &stats,
                queue_depth: None,
                quarantined: true,
                quarantines: 2,
            }],
        );
        assert!(
            text.contains(
                "hookwasm_handler_invocations_total{handler=\"gate\",status=\"timeout\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "hookwasm_handler_duration_seconds_bucket{handler=\"gate\",le=\"0.0001\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "hookwasm_handler_duration_seconds_bucket{handler=\"gate\",le=\"0.005\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("hookwasm_handler_duration_seconds_count{handler=\"gate\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hookwasm_handler_fuel_consumed_total{handler=\"gate\"} 15"),
            "{text}"
        );
        assert!(
            text.contains("hookwasm_handler_denied_total{handler=\"gate\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hookwasm_handler_quarantined{handler=\"gate\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hookwasm_handler_quarantines_total{handler=\"gate\"} 2"),
            "{text}"
        );
    }
}
