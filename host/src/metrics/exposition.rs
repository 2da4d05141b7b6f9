//! What `GET /metrics` shows: a snapshot of the counters in OpenMetrics text, encoded by the
//! `prometheus-client` crate through a collector over the snapshot (no second registry of live
//! metrics to keep in step).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{DURATION_BUCKETS, HandlerCounts, HostCounts};
use crate::outbox::Backend;
use crate::sandbox::Status;

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
    use crate::metrics::HandlerStats;
    use std::time::Duration;

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
