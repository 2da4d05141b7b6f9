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
    /// The duration histogram: `[upper bound in ms, invocations up to it]`, cumulative (the
    /// dashboard's p99 plot reads its changes).
    pub duration_buckets: Vec<(f64, u64)>,
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
    /// Deliveries open in the outbox, pending or being made (observers only).
    pub queue_depth: Option<u64>,
    /// Age of the oldest open delivery's event, in seconds (observers with open deliveries).
    pub oldest_open_secs: Option<f64>,
    /// Dead letters in the outbox (observers only).
    pub dead_letters: Option<u64>,
    /// Whether it is quarantined now (breaker open or half-open).
    pub quarantined: bool,
    /// How many times it has been quarantined.
    pub quarantines: u64,
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render(host: &HostStats, handlers: &[HandlerSample<'_>]) -> String {
    let mut out = String::new();
    let o = &mut out;
    let per_handler = |value: fn(&HandlerSample<'_>) -> u64| {
        handlers
            .iter()
            .map(move |h| (format!("handler=\"{}\"", h.name), value(h)))
            .collect::<Vec<_>>()
    };

    family(
        o,
        "hookwasm_events_received_total",
        "counter",
        "Events accepted for dispatch.",
        [(String::new(), host.events_received.load(Relaxed))],
    );
    family(
        o,
        "hookwasm_events_refused_total",
        "counter",
        "Events refused, by reason.",
        [
            (
                "reason=\"invalid\"".to_owned(),
                host.events_invalid.load(Relaxed),
            ),
            ("reason=\"busy\"".to_owned(), host.events_busy.load(Relaxed)),
        ],
    );
    family(
        o,
        "hookwasm_events_duplicate_total",
        "counter",
        "Events accepted before (same source and id), not stored or delivered again.",
        [(String::new(), host.events_duplicate.load(Relaxed))],
    );
    family(
        o,
        "hookwasm_reloads_total",
        "counter",
        "Handler reloads, by result.",
        [
            ("result=\"ok\"".to_owned(), host.reloads_ok.load(Relaxed)),
            (
                "result=\"failed\"".to_owned(),
                host.reloads_failed.load(Relaxed),
            ),
        ],
    );
    let by_status = handlers.iter().flat_map(|h| {
        Status::ALL.map(|status| {
            let count = h.stats.by_status[status_index(status)].load(Relaxed);
            (format!("handler=\"{}\",status=\"{status}\"", h.name), count)
        })
    });
    family(
        o,
        "hookwasm_handler_invocations_total",
        "counter",
        "Invocations by handler and status.",
        by_status,
    );
    family(
        o,
        "hookwasm_handler_denied_total",
        "counter",
        "Invocations whose effective verdict was deny.",
        per_handler(|h| h.stats.denied.load(Relaxed)),
    );
    family(
        o,
        "hookwasm_handler_fuel_consumed_total",
        "counter",
        "Fuel consumed, by handler.",
        per_handler(|h| h.stats.fuel.load(Relaxed)),
    );
    family(
        o,
        "hookwasm_handler_quarantined",
        "gauge",
        "1 while a handler is quarantined after repeated failures.",
        per_handler(|h| u64::from(h.quarantined)),
    );
    family(
        o,
        "hookwasm_handler_quarantines_total",
        "counter",
        "Times a handler was quarantined.",
        per_handler(|h| h.quarantines),
    );
    let label = |h: &HandlerSample<'_>| format!("handler=\"{}\"", h.name);
    family(
        o,
        "hookwasm_observer_queue_depth",
        "gauge",
        "Deliveries open in the outbox (pending, retrying or being made), by observer.",
        handlers
            .iter()
            .filter_map(|h| Some((label(h), h.queue_depth?))),
    );
    family(
        o,
        "hookwasm_observer_oldest_pending_age_seconds",
        "gauge",
        "Age of the event of the oldest open delivery, by observer.",
        handlers
            .iter()
            .filter_map(|h| Some((label(h), h.oldest_open_secs?))),
    );
    family(
        o,
        "hookwasm_observer_dead_letters",
        "gauge",
        "Deliveries in the outbox whose attempts ran out, by observer.",
        handlers
            .iter()
            .filter_map(|h| Some((label(h), h.dead_letters?))),
    );
    let observers = || handlers.iter().filter(|h| h.queue_depth.is_some());
    family(
        o,
        "hookwasm_delivery_retries_total",
        "counter",
        "Failed delivery attempts that were scheduled again, by observer.",
        observers().map(|h| (label(h), h.stats.retries.load(Relaxed))),
    );
    family(
        o,
        "hookwasm_delivery_dead_lettered_total",
        "counter",
        "Deliveries given up after their last attempt, by observer.",
        observers().map(|h| (label(h), h.stats.dead_lettered.load(Relaxed))),
    );

    let name = "hookwasm_handler_duration_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} Invocation wall-clock time, instantiation included.\n# TYPE {name} histogram"
    );
    for h in handlers {
        let label = format!("handler=\"{}\"", h.name);
        let mut cumulative = 0;
        for (le, bucket) in DURATION_BUCKETS.iter().zip(&h.stats.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(o, "{name}_bucket{{{label},le=\"{le}\"}} {cumulative}");
        }
        let count: u64 = h.stats.by_status.iter().map(|c| c.load(Relaxed)).sum();
        let sum = h.stats.duration_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "{name}_bucket{{{label},le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "{name}_sum{{{label}}} {sum}");
        let _ = writeln!(o, "{name}_count{{{label}}} {count}");
    }
    out
}

/// One metric family: its header, then a sample per label set (labels without braces).
/// The outbox's store and this host's id (`hookwasm_backend_info`), and, for a store with
/// consumers (NATS), each observer's deliveries not yet handed to any host.
pub fn render_backend(backend: &crate::outbox::Backend, lags: &[(&str, u64)]) -> String {
    let mut out = String::new();
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    family(
        &mut out,
        "hookwasm_backend_info",
        "gauge",
        "1, labelled with the outbox's store and this host's id.",
        [(
            format!(
                "store=\"{}\",host=\"{}\"",
                quote(&backend.store),
                quote(&backend.host)
            ),
            1,
        )],
    );
    if !lags.is_empty() {
        family(
            &mut out,
            "hookwasm_observer_consumer_lag",
            "gauge",
            "Deliveries in the shared queue not yet handed to any host, by observer.",
            lags.iter()
                .map(|(name, lag)| (format!("handler=\"{name}\""), *lag)),
        );
    }
    out
}

fn family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observers_show_their_outbox_figures_and_gates_do_not() {
        let observer = HandlerStats::default();
        observer.record_retry();
        observer.record_retry();
        observer.record_dead_letter();
        let gate = HandlerStats::default();
        let text = render(
            &HostStats::default(),
            &[
                HandlerSample {
                    name: "hook",
                    stats: &observer,
                    queue_depth: Some(4),
                    oldest_open_secs: Some(12.5),
                    dead_letters: Some(1),
                    quarantined: false,
                    quarantines: 0,
                },
                HandlerSample {
                    name: "gate",
                    stats: &gate,
                    queue_depth: None,
                    oldest_open_secs: None,
                    dead_letters: None,
                    quarantined: false,
                    quarantines: 0,
                },
            ],
        );
        for line in [
            "hookwasm_observer_queue_depth{handler=\"hook\"} 4",
            "hookwasm_observer_oldest_pending_age_seconds{handler=\"hook\"} 12.5",
            "hookwasm_observer_dead_letters{handler=\"hook\"} 1",
            "hookwasm_delivery_retries_total{handler=\"hook\"} 2",
            "hookwasm_delivery_dead_lettered_total{handler=\"hook\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(!text.contains("queue_depth{handler=\"gate\"}"), "{text}");
        assert!(!text.contains("retries_total{handler=\"gate\"}"), "{text}");
    }

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
                oldest_open_secs: None,
                dead_letters: None,
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
