//! Counters and histograms, kept in atomics (no lock on the dispatch path), and their
//! exposition for `GET /metrics`, encoded by the `prometheus-client` crate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::outbox::Backend;
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

/// What `/metrics` shows of one handler.
#[derive(Debug, Clone)]
pub struct HandlerSample {
    /// The handler's name (the encoder escapes it in labels).
    pub name: String,
    /// Its counters.
    pub counts: HandlerCounts,
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
    /// Deliveries in a shared queue not yet handed to any host (a store with consumers).
    pub consumer_lag: Option<u64>,
}

/// Everything `/metrics` shows, at one moment.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// Host-wide counters.
    pub host: HostCounts,
    /// Every handler in service, in config order.
    pub handlers: Vec<HandlerSample>,
    /// The outbox's store and this host's id.
    pub backend: Backend,
}

/// The content type of [`Exposition::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Exposition {
    /// The OpenMetrics text exposition (which Prometheus reads as it reads its own text
    /// format): counters' samples end in `_total`, the histogram's in `_bucket`, `_sum` and
    /// `_count`.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing to a String cannot fail; the collector's own encoding cannot either.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// A label set of `(name, value)` pairs, as the encoder takes them.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Encodes one family: its descriptor, then one sample per label set (a sample without labels
/// is written without braces).
fn family<'a, V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error>
where
    V: EncodeMetric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            value.encode(metric)?;
            return Ok(());
        }
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter's value, read once.
#[derive(Debug)]
struct Count(u64);

impl EncodeMetric for Count {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&self.0, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A gauge's value, read once.
#[derive(Debug)]
struct Level<T>(T);

impl<T: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug> EncodeMetric for Level<T> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The duration histogram of one handler, read once.
#[derive(Debug)]
struct Durations<'a>(&'a HandlerCounts);

impl EncodeMetric for Durations<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let counts = self.0;
        let count = counts.invocations_total();
        // The encoder adds the buckets up; ours are cumulative already, and the last one
        // (`+Inf`) holds everything.
        let mut previous = 0;
        let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .zip(&counts.duration_buckets)
            .map(|(&le, &(_, cumulative))| {
                let own = cumulative - previous;
                previous = cumulative;
                (le, own)
            })
            .collect();
        buckets.push((f64::MAX, count.saturating_sub(previous)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            counts.duration_secs,
            count,
            &buckets,
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
/// (Handler names need none: config validation keeps them to `[A-Za-z0-9._-]`.)
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The label set of one handler's series.
fn by_handler(h: &HandlerSample) -> Labels<'_> {
    vec![("handler", h.name.as_str())]
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram};
        let e = &mut encoder;
        let host = &self.host;
        let handlers = &self.handlers;
        let per_handler = |value: fn(&HandlerSample) -> u64| {
            handlers
                .iter()
                .map(move |h| (by_handler(h), Count(value(h))))
        };
        family(
            e,
            "hookwasm_events_received",
            "Events accepted for dispatch.",
            Counter,
            [(vec![], Count(host.events_received))],
        )?;
        family(
            e,
            "hookwasm_events_refused",
            "Events refused, by reason.",
            Counter,
            [
                (vec![("reason", "invalid")], Count(host.events_invalid)),
                (vec![("reason", "busy")], Count(host.events_busy)),
            ],
        )?;
        family(
            e,
            "hookwasm_events_duplicate",
            "Events accepted before (same source and id), not stored or delivered again.",
            Counter,
            [(vec![], Count(host.events_duplicate))],
        )?;
        family(
            e,
            "hookwasm_reloads",
            "Handler reloads, by result.",
            Counter,
            [
                (vec![("result", "ok")], Count(host.reloads_ok)),
                (vec![("result", "failed")], Count(host.reloads_failed)),
            ],
        )?;
        let by_status = handlers.iter().flat_map(|h| {
            Status::ALL.map(|status| {
                let labels = vec![("handler", h.name.as_str()), ("status", status.as_str())];
                (labels, Count(h.counts.invocations_with(status)))
            })
        });
        family(
            e,
            "hookwasm_handler_invocations",
            "Invocations by handler and status.",
            Counter,
            by_status,
        )?;
        family(
            e,
            "hookwasm_handler_denied",
            "Invocations whose effective verdict was deny.",
            Counter,
            per_handler(|h| h.counts.denied),
        )?;
        family(
            e,
            "hookwasm_handler_fuel_consumed",
            "Fuel consumed, by handler.",
            Counter,
            per_handler(|h| h.counts.fuel_consumed),
        )?;
        family(
            e,
            "hookwasm_handler_quarantined",
            "1 while a handler is quarantined after repeated failures.",
            Gauge,
            handlers
                .iter()
                .map(|h| (by_handler(h), Level(u64::from(h.quarantined)))),
        )?;
        family(
            e,
            "hookwasm_handler_quarantines",
            "Times a handler was quarantined.",
            Counter,
            per_handler(|h| h.quarantines),
        )?;
        family(
            e,
            "hookwasm_observer_queue_depth",
            "Deliveries open in the outbox (pending, retrying or being made), by observer.",
            Gauge,
            handlers
                .iter()
                .filter_map(|h| Some((by_handler(h), Level(h.queue_depth?)))),
        )?;
        family(
            e,
            "hookwasm_observer_oldest_pending_age_seconds",
            "Age of the event of the oldest open delivery, by observer.",
            Gauge,
            handlers
                .iter()
                .filter_map(|h| Some((by_handler(h), Level(h.oldest_open_secs?)))),
        )?;
        family(
            e,
            "hookwasm_observer_dead_letters",
            "Deliveries in the outbox whose attempts ran out, by observer.",
            Gauge,
            handlers
                .iter()
                .filter_map(|h| Some((by_handler(h), Level(h.dead_letters?)))),
        )?;
        let observers = || handlers.iter().filter(|h| h.queue_depth.is_some());
        family(
            e,
            "hookwasm_delivery_retries",
            "Failed delivery attempts that were scheduled again, by observer.",
            Counter,
            observers().map(|h| (by_handler(h), Count(h.counts.retries))),
        )?;
        family(
            e,
            "hookwasm_delivery_dead_lettered",
            "Deliveries given up after their last attempt, by observer.",
            Counter,
            observers().map(|h| (by_handler(h), Count(h.counts.dead_lettered))),
        )?;
        family(
            e,
            "hookwasm_handler_duration_seconds",
            "Invocation wall-clock time, instantiation included.",
            Histogram,
            handlers
                .iter()
                .map(|h| (by_handler(h), Durations(&h.counts))),
        )?;
        // prometheus-client 0.24 writes label values as given: escape the ones not checked.
        let (store, host_id) = (escape(&self.backend.store), escape(&self.backend.host));
        family(
            e,
            "hookwasm_backend_info",
            "1, labelled with the outbox's store and this host's id.",
            Gauge,
            [(
                vec![("store", store.as_str()), ("host", host_id.as_str())],
                Level(1u64),
            )],
        )?;
        let lags: Vec<_> = handlers
            .iter()
            .filter_map(|h| Some((by_handler(h), Level(h.consumer_lag?))))
            .collect();
        if !lags.is_empty() {
            family(
                e,
                "hookwasm_observer_consumer_lag",
                "Deliveries in the shared queue not yet handed to any host, by observer.",
                Gauge,
                lags,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, stats: &HandlerStats, observer: bool) -> HandlerSample {
        HandlerSample {
            name: name.to_owned(),
            counts: stats.counts(),
            queue_depth: observer.then_some(4),
            oldest_open_secs: observer.then_some(12.5),
            dead_letters: observer.then_some(1),
            quarantined: false,
            quarantines: 0,
            consumer_lag: None,
        }
    }

    fn render(handlers: Vec<HandlerSample>) -> String {
        Exposition {
            host: HostCounts::default(),
            handlers,
            backend: Backend {
                store: "sqlite".into(),
                host: "h\"1".into(),
            },
        }
        .render()
    }

    #[test]
    fn observers_show_their_outbox_figures_and_gates_do_not() {
        let observer = HandlerStats::default();
        observer.record_retry();
        observer.record_retry();
        observer.record_dead_letter();
        let gate = HandlerStats::default();
        let text = render(vec![
            sample("hook", &observer, true),
            sample("gate", &gate, false),
        ]);
        for line in [
            "hookwasm_observer_queue_depth{handler=\"hook\"} 4",
            "hookwasm_observer_oldest_pending_age_seconds{handler=\"hook\"} 12.5",
            "hookwasm_observer_dead_letters{handler=\"hook\"} 1",
            "hookwasm_delivery_retries_total{handler=\"hook\"} 2",
            "hookwasm_delivery_dead_lettered_total{handler=\"hook\"} 1",
            "hookwasm_events_received_total 0",
            "hookwasm_events_refused_total{reason=\"busy\"} 0",
            "hookwasm_backend_info{store=\"sqlite\",host=\"h\\\"1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(!text.contains("queue_depth{handler=\"gate\"}"), "{text}");
        assert!(!text.contains("retries_total{handler=\"gate\"}"), "{text}");
        assert!(!text.contains("consumer_lag"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_add_up() {
        let stats = HandlerStats::default();
        stats.record(Status::Ok, false, 10, Duration::from_micros(80));
        stats.record(Status::Timeout, true, 5, Duration::from_millis(3));
        stats.record(Status::Ok, false, 0, Duration::from_secs(5));
        let mut gate = sample("gate", &stats, false);
        gate.quarantined = true;
        gate.quarantines = 2;
        gate.consumer_lag = Some(7);
        let text = render(vec![gate]);
        for line in [
            "hookwasm_handler_invocations_total{handler=\"gate\",status=\"timeout\"} 1",
            "hookwasm_handler_invocations_total{handler=\"gate\",status=\"trap\"} 0",
            "hookwasm_handler_duration_seconds_bucket{le=\"0.0001\",handler=\"gate\"} 1",
            "hookwasm_handler_duration_seconds_bucket{le=\"0.005\",handler=\"gate\"} 2",
            "hookwasm_handler_duration_seconds_bucket{le=\"2.5\",handler=\"gate\"} 2",
            "hookwasm_handler_duration_seconds_bucket{le=\"+Inf\",handler=\"gate\"} 3",
            "hookwasm_handler_duration_seconds_count{handler=\"gate\"} 3",
            "hookwasm_handler_fuel_consumed_total{handler=\"gate\"} 15",
            "hookwasm_handler_denied_total{handler=\"gate\"} 1",
            "hookwasm_handler_quarantined{handler=\"gate\"} 1",
            "hookwasm_handler_quarantines_total{handler=\"gate\"} 2",
            "hookwasm_observer_consumer_lag{handler=\"gate\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("hookwasm_handler_duration_seconds_sum{handler=\"gate\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert!(sum.is_some_and(|s| (s - 5.00308).abs() < 1e-9), "{text}");
    }
}
