//! HTTP ingest and status: `POST /v1/events` (every CloudEvents HTTP mode, see
//! [`crate::ingest`]), the event history (`GET /v1/events`, `GET /v1/events/{id}`),
//! `GET /v1/event-types`, `GET /v1/handlers`, the outbox
//! (`GET /v1/deliveries`, `GET /v1/dead-letters`, `POST /v1/dead-letters/{id}/retry`,
//! `DELETE /v1/dead-letters/{id}`), `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Every error answer is JSON `{"error": "<one sentence>"}`; a bad request never affects the
//! events accepted before or after it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use serde_json::json;

use crate::auth::Auth;
use crate::config::{FailurePolicy, Mode};
use crate::dispatch::{Backpressure, BreakerView, Dispatcher, Refused, ReloadStatus, Route};
use crate::ingest;
use crate::limits::Limits;
use crate::metrics::HandlerCounts;
use crate::outbox::{self, Selector};
use crate::reload::Reloader;

mod access;
mod dashboard;
pub mod listen;
mod stream;

pub use stream::STREAM_BUFFER;

/// The kernel send buffer of each connection. Fixed, so a stream consumer that stops reading
/// fills its own buffer (and is cut off) after a few hundred KiB, rather than the kernel's
/// autotuning holding megabytes for it.
pub const SEND_BUFFER_BYTES: usize = 32 << 10;

/// Applies [`SEND_BUFFER_BYTES`] to an accepted connection.
pub fn tune_connection(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(SEND_BUFFER_BYTES) {
        tracing::debug!("cannot set a connection's send buffer: {e}");
    }
}

/// What the operator console serves beside the API: who may call (tokens and sessions), and
/// the reloader behind `POST /v1/reload`.
#[derive(Debug)]
pub struct Console {
    /// The dispatcher whose handlers, history and outbox are shown.
    pub dispatcher: Arc<Dispatcher>,
    /// Tokens and sessions.
    pub auth: Auth,
    /// Reloads the config and modules on an admin's request; `None` where nothing reloads.
    pub reloader: Option<Arc<Reloader>>,
}

/// The whole server: the API ([`router`]), the event stream, the dashboard and its sign-in,
/// `POST /v1/reload`, all behind the access check of `console.auth`.
pub fn app(console: Console) -> Router {
    let console = Arc::new(console);
    let routes = Router::new()
        .route("/v1/stream", get(stream::stream))
        .route("/v1/session", get(dashboard::session))
        .route("/v1/reload", post(reload))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/login", get(dashboard::login_page).post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .with_state(console.clone());
    router(console.dispatcher.clone())
        .merge(routes)
        .layer(axum::middleware::from_fn_with_state(console, access::check))
}

/// Reloads the config and every module now, as SIGHUP does; answers what changed.
async fn reload(State(console): State<Arc<Console>>) -> Response {
    let Some(reloader) = &console.reloader else {
        return error(
            StatusCode::CONFLICT,
            "this host was started without a config to reload",
        );
    };
    let summary = reloader.reload().await;
    let failed: Vec<serde_json::Value> = summary
        .failed
        .iter()
        .map(|(what, why)| json!({ "handler": what, "error": why }))
        .collect();
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = json!({
        "added": summary.added, "removed": summary.removed,
        "swapped": summary.swapped, "failed": failed,
    });
    (status, axum::Json(body)).into_response()
}

/// Largest request body accepted by `POST /v1/events`.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Most events one `POST /v1/events` may carry.
pub const MAX_BATCH: usize = ingest::MAX_BATCH;
/// What `Retry-After` says when an observer's queue is full, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// The routes, serving `dispatcher`.
pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events).get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/event-types", get(get_event_types))
        .route("/v1/handlers", get(get_handlers))
        .route("/v1/deliveries", get(get_deliveries))
        .route("/v1/dead-letters", get(get_dead_letters))
        .route("/v1/dead-letters/{id}/retry", post(retry_dead_letter))
        .route("/v1/dead-letters/{id}", delete(discard_dead_letter))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(get_ready))
        .route("/metrics", get(get_metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see the README's HTTP section",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(dispatcher)
}

/// How long `/readyz` waits for the outbox's probe before answering not ready.
const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness, apart from liveness (`/healthz`): 200 only when the outbox takes a write now, so
/// a load balancer stops sending events to a host that would answer every one with 503 (a
/// read-only or full disk, a stopped writer). Answers 503 with the reason otherwise.
async fn get_ready(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    let probe = tokio::time::timeout(READY_PROBE_TIMEOUT, dispatcher.outbox().ready()).await;
    let reason = match probe {
        Ok(Ok(())) => return axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => format!("the outbox cannot take a write: {e}"),
        Err(_) => format!(
            "the outbox did not take a write within {} ms",
            READY_PROBE_TIMEOUT.as_millis()
        ),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "status": "not-ready", "reason": reason })),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Events in any CloudEvents HTTP mode (see [`crate::ingest`]). A single event (structured or
/// binary) or an array is answered with the merged gate verdict (200 when a gate ran, 202 when
/// the events were only queued); an array is all or nothing. A batch
/// (`application/cloudevents-batch+json`) is answered with one result per event, accepted or
/// refused on its own (400 only when every event was refused).
async fn post_events(
    State(dispatcher): State<Arc<Dispatcher>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = match route(query.as_deref()) {
        Ok(route) => route,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let request = match ingest::read(&headers, &body, &dispatcher.registry()) {
        Ok(request) => request,
        Err(refused) => {
            dispatcher.stats().events_invalid.fetch_add(1, Relaxed);
            return (refused.status, axum::Json(refused)).into_response();
        }
    };
    let mode = request.mode;
    let mut events = Vec::with_capacity(request.items.len());
    let mut spans = Vec::with_capacity(request.items.len());
    let mut refused = Vec::new();
    for (index, item) in request.items.into_iter().enumerate() {
        match item {
            ingest::Item::Accepted(event, span) => {
                events.push(event);
                spans.push(span);
            }
            ingest::Item::Refused { id, refused: why } => {
                dispatcher.stats().events_invalid.fetch_add(1, Relaxed);
                refused.push((index, id, why));
            }
        }
    }
    let submitted = if events.is_empty() {
        Ok(Vec::new())
    } else {
        dispatcher
            .submit_to(&events, route, Backpressure::Refuse)
            .await
    };
    let failure = submitted.as_ref().err().map(ToString::to_string);
    for span in spans {
        span.end(failure.as_deref());
    }
    match submitted {
        Ok(decisions) if mode == ingest::Mode::Batch => batch_answer(decisions, refused),
        Ok(mut decisions) => {
            let gated = decisions.iter().any(|d| !d.gates.is_empty());
            let status = if gated {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            match decisions.pop() {
                Some(decision) if mode != ingest::Mode::Array => {
                    (status, axum::Json(decision)).into_response()
                }
                last => {
                    decisions.extend(last);
                    (status, axum::Json(json!({ "results": decisions }))).into_response()
                }
            }
        }
        Err(refused @ (Refused::Busy { .. } | Refused::Unavailable(_))) => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            response
        }
        Err(refused) => error(StatusCode::PAYLOAD_TOO_LARGE, refused.to_string()),
    }
}

/// A batch's answer: per event, in order, `{"index", "status": "accepted", …decision}` or
/// `{"index", "id", "status": "refused", "error", …}`.
fn batch_answer(
    decisions: Vec<crate::dispatch::Decision>,
    refused: Vec<(usize, Option<String>, ingest::Refused)>,
) -> Response {
    let gated = decisions.iter().any(|d| !d.gates.is_empty());
    let all_refused = decisions.is_empty();
    let total = decisions.len() + refused.len();
    let mut decisions = decisions.into_iter();
    let mut refused = refused.into_iter().peekable();
    let mut results = Vec::with_capacity(total);
    for index in 0..total {
        let mut result = match refused.next_if(|(at, ..)| *at == index) {
            Some((_, id, why)) => {
                let mut value = serde_json::to_value(why).unwrap_or_default();
                value["status"] = json!("refused");
                if let Some(id) = id {
                    value["eventId"] = json!(id);
                }
                value
            }
            None => {
                let mut value = decisions
                    .next()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .unwrap_or_default();
                value["status"] = json!("accepted");
                value
            }
        };
        result["index"] = json!(index);
        results.push(result);
    }
    let status = if all_refused {
        StatusCode::BAD_REQUEST
    } else if gated {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (
        status,
        axum::Json(json!({ "mode": "batch", "results": results })),
    )
        .into_response()
}

/// Every event type with the JSON Schema of its `data`: what `hookwasm events` prints.
async fn get_event_types(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    let registry = dispatcher.registry();
    axum::Json(json!({
        "strictTypes": registry.strict(),
        "eventTypes": registry.catalogue(),
    }))
    .into_response()
}

/// A query parameter `POST /v1/events` does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown query {0:?}; the only parameter is route=all|gates|observers")]
struct UnknownQuery(String);

/// `?route=gates` or `?route=observers` reaches only those handlers (a git server asks its gates
/// before refs move and tells its observers after); `all`, the default, reaches both.
fn route(query: Option<&str>) -> Result<Route, UnknownQuery> {
    let mut route = Route::All;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        route = match pair.split_once('=') {
            Some(("route", "all")) => Route::All,
            Some(("route", "gates")) => Route::Gates,
            Some(("route", "observers")) => Route::Observers,
            _ => return Err(UnknownQuery(pair.to_owned())),
        };
    }
    Ok(route)
}

/// One handler as `GET /v1/handlers` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HandlerView<'a> {
    name: &'a str,
    module: &'a std::path::Path,
    digest: &'a str,
    mode: Mode,
    events: Vec<&'a str>,
    refs: Vec<&'a str>,
    failure_policy: FailurePolicy,
    limits: Limits,
    queue_depth: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letters: Option<u64>,
    quarantine: BreakerView,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_reload: Option<ReloadStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failure: Option<crate::dispatch::Failure>,
    counters: HandlerCounts,
}

async fn get_handlers(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    let gauges = match dispatcher.outbox().gauges().await {
        Ok(gauges) => gauges,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let slots = dispatcher.slots();
    let versions: Vec<_> = slots.iter().map(|slot| (slot, slot.version())).collect();
    let handlers: Vec<HandlerView<'_>> = versions
        .iter()
        .map(|(slot, version)| {
            let spec = &version.spec;
            let observer = spec.mode == Mode::Observe;
            let gauge = gauges.iter().find(|g| g.handler == slot.name());
            HandlerView {
                name: slot.name(),
                module: &spec.module,
                digest: version.handler.digest(),
                mode: spec.mode,
                events: spec.filter.event_patterns(),
                refs: spec.filter.ref_patterns(),
                failure_policy: spec.failure_policy,
                limits: spec.limits,
                queue_depth: observer.then(|| gauge.map_or(0, |g| g.open)),
                dead_letters: observer.then(|| gauge.map_or(0, |g| g.dead)),
                quarantine: version.breaker.view(),
                last_reload: slot.last_reload(),
                last_failure: slot.last_failure(),
                counters: slot.stats.counts(),
            }
        })
        .collect();
    let backend = dispatcher.outbox().backend();
    axum::Json(json!({ "handlers": handlers, "backend": backend })).into_response()
}

async fn get_metrics(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        dispatcher.metrics().await,
    )
        .into_response()
}

/// The outbox's deliveries by observer and state.
async fn get_deliveries(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    match dispatcher.outbox().counts().await {
        Ok(counts) => axum::Json(json!({ "deliveries": counts })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Dead letters, oldest first: `?handler=`, `?event=` and `?limit=` (default 100) narrow them.
async fn get_dead_letters(
    State(dispatcher): State<Arc<Dispatcher>>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut selector = Selector::default();
    let mut limit = 100;
    let query = query.unwrap_or_default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match (key.as_ref(), value) {
            ("handler", value) => selector.handler = Some(value.into_owned()),
            ("event", value) => selector.event_id = Some(value.into_owned()),
            ("limit", value) => match value.parse() {
                Ok(value) => limit = value,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit={value:?} is not a number"),
                    );
                }
            },
            (other, _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {other:?}; use handler=, event= or limit="),
                );
            }
        }
    }
    match dispatcher.outbox().dead_letters(selector, limit).await {
        Ok(letters) => axum::Json(json!({ "deadLetters": letters })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Most events one history page holds.
const MAX_HISTORY_PAGE: usize = 1_000;

/// One event from the history with every handler's outcome; `?source=` picks among events of
/// several producers that share an id (the newest is shown otherwise).
async fn get_event(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut source = None;
    let query = query.unwrap_or_default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "source" => source = Some(value.into_owned()),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {other:?}; use source="),
                );
            }
        }
    }
    match dispatcher.history_event(id.clone(), source).await {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no event {id:?} in the history (events are kept for eventDelivery.retentionHours)"
            ),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The history, newest first: `?subject=`, `?type=`, `?handler=` narrow it, `?limit=` (default
/// 100, at most 1,000) sizes a page, and `?before=` takes the previous page's `next`.
async fn list_events(
    State(dispatcher): State<Arc<Dispatcher>>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut filter = outbox::HistoryFilter::default();
    let mut limit = 100;
    let query = query.unwrap_or_default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what}={value:?} is not a whole number"))
        };
        match key.as_ref() {
            "subject" => filter.subject = Some(value.into_owned()),
            "type" => filter.event_type = Some(value.into_owned()),
            "handler" => filter.handler = Some(value.into_owned()),
            "limit" => match number("limit") {
                Ok(n) if (1..=MAX_HISTORY_PAGE as u64).contains(&n) => limit = n as usize,
                Ok(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit={value} is out of range; use 1 to {MAX_HISTORY_PAGE}"),
                    );
                }
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            },
            "before" => match number("before") {
                Ok(n) => filter.before = Some(i64::try_from(n).unwrap_or(i64::MAX)),
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {other:?}; use subject=, type=, handler=, \
                         limit= or before="
                    ),
                );
            }
        }
    }
    match dispatcher.history(filter, limit).await {
        Ok(events) => {
            // A full page may have more behind it: `next` is where the next page starts.
            let next = (events.len() == limit)
                .then(|| events.last().map(|e| e.seq))
                .flatten();
            axum::Json(json!({ "events": events, "next": next })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Makes one dead letter pending again, with a fresh set of attempts.
async fn retry_dead_letter(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(id): Path<String>,
) -> Response {
    let selector = match dead_letter_id(&id) {
        Ok(selector) => selector,
        Err(response) => return *response,
    };
    let outbox = dispatcher.outbox();
    let handler = match outbox.dead_letters(selector.clone(), 1).await {
        Ok(letters) => letters.into_iter().next().map(|l| l.handler),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some(handler) = handler else {
        return error(StatusCode::NOT_FOUND, format!("no dead letter {id}"));
    };
    match outbox.retry_dead(selector.clone(), outbox::now()).await {
        // Discarded (or retried) by someone else in between.
        Ok(0) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Ok(_) => {
            dispatcher.wake(&handler);
            let id = selector.id;
            axum::Json(json!({ "id": id, "state": "pending", "handler": handler })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Deletes one dead letter for good.
async fn discard_dead_letter(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(id): Path<String>,
) -> Response {
    let selector = match dead_letter_id(&id) {
        Ok(selector) => selector,
        Err(response) => return *response,
    };
    let selector_id = selector.id;
    match dispatcher.outbox().discard_dead(selector).await {
        Ok(0) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Ok(_) => axum::Json(json!({ "id": selector_id, "state": "discarded" })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The selector of one dead letter, from the id in the path.
fn dead_letter_id(id: &str) -> Result<Selector, Box<Response>> {
    match id.parse() {
        Ok(id) => Ok(Selector {
            id: Some(id),
            ..Selector::default()
        }),
        Err(_) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a dead letter id; GET /v1/dead-letters lists them"),
        ))),
    }
}
