//! Trace context: W3C `traceparent`/`tracestate` in, spans for ingest and each handler
//! invocation, `traceparent` out on the requests handlers make, and OTLP export when the
//! standard `OTEL_EXPORTER_OTLP_*` variables ask for it.
//!
//! - An event's trace context is its CloudEvents distributed-tracing extension (`traceparent`,
//!   `tracestate`); the HTTP `traceparent` header fills it in for events that have none, so it
//!   is stored with the event and an observer's delivery, made later, has the same parent.
//! - Ingest and every gate or observer invocation get a span whose parent is the event's trace
//!   context (attributes: handler, digest, fuel, cause).
//! - While a handler runs, [`outbound`] holds its span's context; the sandbox's `wasi:http`
//!   hook puts it on every outgoing request as `traceparent`.
//! - Spans are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (OTLP/HTTP, protobuf by default,
//!   `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` for JSON); otherwise no span is built and an
//!   outgoing request carries the producer's context on unchanged.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, global};

/// The tracer's name in exported spans.
const TRACER: &str = "hookwasm";

/// Whether spans are exported. Without export no span is built at all (a handler invocation
/// pays nothing), and outbound requests carry the event's own context.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The tracer, when spans are exported.
fn tracer() -> Option<global::BoxedTracer> {
    EXPORTING.load(Relaxed).then(|| global::tracer(TRACER))
}

/// A W3C trace context: `00-<trace id>-<parent span id>-<flags>` and an optional `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    state: Option<String>,
}

/// Longest `tracestate` kept (the W3C limit is 512 characters).
const MAX_TRACESTATE: usize = 512;

impl TraceParent {
    /// Parses a `traceparent` value as W3C Trace Context level 1 defines it; `None` when it is
    /// not one (the caller then ignores or refuses it).
    pub fn parse(text: &str) -> Option<TraceParent> {
        let text = text.trim();
        let mut parts = text.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
            state: None,
        })
    }

    /// The same context with a `tracestate` (dropped when longer than the W3C limit).
    pub fn with_state(mut self, state: Option<&str>) -> TraceParent {
        self.state = state
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
            .map(str::to_owned);
        self
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The parent span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// The `tracestate` that goes with it.
    pub fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    fn context(&self) -> Context {
        let state = self
            .state
            .as_deref()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let span = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            state,
        );
        Context::new().with_remote_span_context(span)
    }

    fn of_span(span: &SpanContext) -> Option<TraceParent> {
        if !span.is_valid() {
            return None;
        }
        let state = span.trace_state().header();
        Some(TraceParent {
            trace_id: span.trace_id().to_bytes(),
            span_id: span.span_id().to_bytes(),
            flags: span.trace_flags().to_u8(),
            state: (!state.is_empty()).then_some(state),
        })
    }
}

impl fmt::Display for TraceParent {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

/// What a handler span needs to know of the event it runs on. The event type implements it, so
/// this module stays below the events it traces and knows nothing else of them.
pub trait Traced {
    /// The CloudEvents `id`.
    fn id(&self) -> &str;
    /// The CloudEvents `type`.
    fn event_type(&self) -> &str;
    /// The event's own trace context, if it carries one.
    fn trace_parent(&self) -> Option<TraceParent>;
}

/// The context spans of `event` descend from: its own trace context, or a new trace.
fn parent_of(event: &impl Traced) -> Context {
    event
        .trace_parent()
        .map_or_else(Context::new, |t| t.context())
}

/// The span of one event's ingest, from the HTTP request until it was accepted or refused.
#[derive(Debug)]
pub struct IngestSpan {
    span: Option<global::BoxedSpan>,
}

impl IngestSpan {
    /// Starts the ingest span of an event received in `mode` (`structured`, `binary`, `batch`),
    /// under `parent` (the event's or the request's trace context, if any).
    pub fn start(parent: Option<&TraceParent>, mode: &str, attrs: &[(&str, &str)]) -> IngestSpan {
        let Some(tracer) = tracer() else {
            return IngestSpan { span: None };
        };
        let parent = parent.map_or_else(Context::new, TraceParent::context);
        let mut attributes = vec![KeyValue::new("cloudevents.mode", mode.to_owned())];
        attributes.extend(
            attrs
                .iter()
                .map(|(k, v)| KeyValue::new(format!("cloudevents.event_{k}"), (*v).to_owned())),
        );
        let span = tracer
            .span_builder("hookwasm ingest")
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        IngestSpan { span: Some(span) }
    }

    /// This span's context, when spans are exported.
    pub fn context(&self) -> Option<TraceParent> {
        TraceParent::of_span(self.span.as_ref()?.span_context())
    }

    /// Ends the span: the event was accepted, or refused for `error`.
    pub fn end(self, error: Option<&str>) {
        let Some(mut span) = self.span else { return };
        if let Some(error) = error {
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }
}

/// The span of one handler invocation (a gate's answer or an observer's delivery attempt).
#[derive(Debug)]
pub struct HandlerSpan {
    span: Option<global::BoxedSpan>,
    outbound: Option<TraceParent>,
}

impl HandlerSpan {
    /// Starts the span of `handler` (a `gate` or an `observer`, version `digest`) on `event`.
    pub fn start(handler: &str, role: &str, digest: &str, event: &impl Traced) -> HandlerSpan {
        let Some(tracer) = tracer() else {
            // Not exported: requests the handler makes carry the producer's context on.
            return HandlerSpan {
                span: None,
                outbound: event.trace_parent(),
            };
        };
        let parent = parent_of(event);
        let span = tracer
            .span_builder(format!("hookwasm {role} {handler}"))
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("hookwasm.handler", handler.to_owned()),
                KeyValue::new("hookwasm.role", role.to_owned()),
                KeyValue::new("hookwasm.digest", digest.to_owned()),
                KeyValue::new("cloudevents.event_id", event.id().to_owned()),
                KeyValue::new("cloudevents.event_type", event.event_type().to_owned()),
            ])
            .start_with_context(&tracer, &parent);
        // Requests the handler makes are children of this span.
        let outbound = TraceParent::of_span(span.span_context()).or_else(|| event.trace_parent());
        HandlerSpan {
            span: Some(span),
            outbound,
        }
    }

    /// Runs `invocation` with this span as the context of the handler's outbound requests.
    pub async fn scope<F: Future>(&self, invocation: F) -> F::Output {
        OUTBOUND.scope(self.outbound.clone(), invocation).await
    }

    /// Ends the span with how the invocation went: `cause` is the report's status (`ok`,
    /// `error`, `trap`, `out-of-fuel`, …).
    pub fn end(self, cause: &str, fuel: u64, reason: Option<&str>) {
        let Some(mut span) = self.span else { return };
        span.set_attribute(KeyValue::new("hookwasm.cause", cause.to_owned()));
        span.set_attribute(KeyValue::new(
            "hookwasm.fuel",
            i64::try_from(fuel).unwrap_or(i64::MAX),
        ));
        if cause != "ok" {
            span.set_status(Status::error(reason.unwrap_or(cause).to_owned()));
        }
        span.end();
    }
}

tokio::task_local! {
    /// The trace context of the handler invocation running on this task.
    static OUTBOUND: Option<TraceParent>;
}

/// The trace context a handler's outgoing requests carry now, if any.
pub fn outbound() -> Option<TraceParent> {
    OUTBOUND.try_with(Clone::clone).ok().flatten()
}

#[cfg(feature = "otlp")]
/// Span export, while it runs; [`Telemetry::shutdown`] flushes what is left.
#[derive(Debug)]
pub struct Telemetry {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

#[cfg(feature = "otlp")]
/// Why the OTLP exporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` names a protocol that is not built in.
    #[error(
        "cannot export traces over OTLP: protocol {0:?} is not supported; use http/protobuf or http/json"
    )]
    Protocol(String),
    /// Called outside a tokio runtime, which the exports need.
    #[error("cannot export traces over OTLP: no async runtime ({0})")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The exporter refused its settings.
    #[error("cannot export traces over OTLP: {0}; check the OTEL_EXPORTER_OTLP_* variables")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

#[cfg(feature = "otlp")]
impl Telemetry {
    /// Starts OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and neither `OTEL_SDK_DISABLED=true` nor
    /// `OTEL_TRACES_EXPORTER=none` says otherwise); `Ok(None)` when not asked. Must be called in
    /// the tokio runtime that will carry the exports.
    pub fn from_env() -> Result<Option<Telemetry>, TelemetryError> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true")
            || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
        if disabled
            || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            return Ok(None);
        }
        // The specification's default is http/protobuf; the crate's, with JSON compiled in, is
        // JSON. Only an explicit choice picks JSON; gRPC is not built in.
        let protocol = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
        let protocol = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => opentelemetry_otlp::Protocol::HttpBinary,
            Some("http/json") => opentelemetry_otlp::Protocol::HttpJson,
            Some(other) => {
                return Err(TelemetryError::Protocol(other.to_owned()));
            }
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(TelemetryError::NoRuntime)?;
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_http_client(OnRuntime {
                client: opentelemetry_http::hyper::HyperClient::new(
                    https_or_http(),
                    EXPORT_TIMEOUT,
                    None,
                ),
                runtime,
            })
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(TelemetryError::Exporter)?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(
                        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| TRACER.into()),
                    )
                    .build(),
            )
            .build();
        global::set_tracer_provider(provider.clone());
        EXPORTING.store(true, Relaxed);
        Ok(Some(Telemetry { provider }))
    }

    /// Exports the spans still buffered and stops. Blocks: call it off the async executor.
    pub fn shutdown(self) {
        EXPORTING.store(false, Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("traces not all exported: {e}");
        }
    }
}

#[cfg(feature = "otlp")]
/// The collector's connector: `https://` endpoints over rustls (verified against the webpki
/// roots), `http://` ones in the clear.
fn https_or_http() -> Connector {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build()
}

#[cfg(feature = "otlp")]
type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

#[cfg(feature = "otlp")]
/// How long one OTLP export may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(feature = "otlp")]
/// The exporter runs on the SDK's own thread, which has no tokio reactor; hyper needs one, so
/// each request is spawned onto the host's runtime and awaited from there.
#[derive(Debug, Clone)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient<Connector>,
    runtime: tokio::runtime::Handle,
}

#[cfg(feature = "otlp")]
#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| format!("the export task failed: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_follow_the_w3c_grammar() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).expect("valid");
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        assert_eq!(parsed.to_string(), valid);
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
        // A later version may append fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
    }
}
