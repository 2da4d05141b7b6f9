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
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Auth;
use crate::dispatch::{Backpressure, Dispatcher, Route};
use crate::ingest;
use crate::outbox::{self, Selector};
use crate::reload::Reloader;

mod access;
mod dashboard;
mod error;
pub mod listen;
mod stream;

pub use error::ApiError;
use error::{ApiQuery, error};

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
async fn reload(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let Some(reloader) = &console.reloader else {
        return Err(ApiError::Conflict(
            "this host was started without a config to reload".into(),
        ));
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
    Ok((status, axum::Json(body)).into_response())
}

/// Largest request body accepted by `POST /v1/events`.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Most events one `POST /v1/events` may carry.
pub const MAX_BATCH: usize = ingest::MAX_BATCH;

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
            ApiError::NotFound("no such endpoint; see the README's HTTP section".into())
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
    match dispatcher.ready(READY_PROBE_TIMEOUT).await {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not-ready", "reason": reason.to_string() })),
        )
            .into_response(),
    }
}

/// `?route=gates` or `?route=observers` reaches only those handlers (a git server asks its gates
/// before refs move and tells its observers after); `all`, the default, reaches both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteQuery {
    #[serde(default)]
    route: RouteParam,
}

/// The values of `?route=`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RouteParam {
    #[default]
    All,
    Gates,
    Observers,
}

impl From<RouteParam> for Route {
    fn from(route: RouteParam) -> Route {
        match route {
            RouteParam::All => Route::All,
            RouteParam::Gates => Route::Gates,
            RouteParam::Observers => Route::Observers,
        }
    }
}

/// Events in any CloudEvents HTTP mode (see [`crate::ingest`]). A single event (structured or
/// binary) or an array is answered with the merged gate verdict (200 when a gate ran, 202 when
/// the events were only queued); an array is all or nothing. A batch
/// (`application/cloudevents-batch+json`) is answered with one result per event, accepted or
/// refused on its own (400 only when every event was refused).
async fn post_events(
    State(dispatcher): State<Arc<Dispatcher>>,
    ApiQuery(query): ApiQuery<RouteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = match ingest::read(&headers, &body, &dispatcher.registry()) {
        Ok(request) => request,
        Err(refused) => {
            dispatcher.stats().events_invalid.fetch_add(1, Relaxed);
            return Ok((refused.status, axum::Json(refused)).into_response());
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
            .submit_to(&events, query.route.into(), Backpressure::Refuse)
            .await
    };
    let failure = submitted.as_ref().err().map(ToString::to_string);
    for span in spans {
        span.end(failure.as_deref());
    }
    let decisions = submitted?;
    if mode == ingest::Mode::Batch {
        return Ok(batch_answer(decisions, refused));
    }
    let mut decisions = decisions;
    let gated = decisions.iter().any(|d| !d.gates.is_empty());
    let status = if gated {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(match decisions.pop() {
        Some(decision) if mode != ingest::Mode::Array => {
            (status, axum::Json(decision)).into_response()
        }
        last => {
            decisions.extend(last);
            (status, axum::Json(json!({ "results": decisions }))).into_response()
        }
    })
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

/// Every handler in service with its config, counters and outbox figures: the snapshot the
/// dashboard and `/metrics` are drawn from too.
async fn get_handlers(State(dispatcher): State<Arc<Dispatcher>>) -> Result<Response, ApiError> {
    let snapshot = dispatcher.snapshot().await;
    if let Some(e) = snapshot.outbox_error {
        return Err(e.into());
    }
    Ok(
        axum::Json(json!({ "handlers": snapshot.handlers, "backend": snapshot.backend }))
            .into_response(),
    )
}

/// Every metric, from the same snapshot as `/v1/handlers`; without the outbox's figures when
/// the outbox cannot be read (the host's own counters still count).
async fn get_metrics(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    let snapshot = dispatcher.snapshot().await;
    if let Some(e) = &snapshot.outbox_error {
        tracing::warn!("metrics without outbox figures: {e}");
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        snapshot.prometheus(),
    )
        .into_response()
}

/// The outbox's deliveries by observer and state.
async fn get_deliveries(State(dispatcher): State<Arc<Dispatcher>>) -> Result<Response, ApiError> {
    let counts = dispatcher.deliveries().counts().await?;
    Ok(axum::Json(json!({ "deliveries": counts })).into_response())
}

/// `?handler=`, `?event=` and `?limit=` of `GET /v1/dead-letters`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    handler: Option<String>,
    event: Option<String>,
    limit: Option<usize>,
}

/// Dead letters, oldest first: `?handler=`, `?event=` and `?limit=` (default 100) narrow them.
async fn get_dead_letters(
    State(dispatcher): State<Arc<Dispatcher>>,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    let selector = Selector {
        id: None,
        handler: query.handler,
        event_id: query.event,
    };
    let letters = dispatcher
        .deliveries()
        .dead_letters(selector, query.limit.unwrap_or(100))
        .await?;
    Ok(axum::Json(json!({ "deadLetters": letters })).into_response())
}

/// Most events one history page holds.
const MAX_HISTORY_PAGE: u64 = 1_000;

/// `?source=` of `GET /v1/events/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    source: Option<String>,
}

/// One event from the history with every handler's outcome; `?source=` picks among events of
/// several producers that share an id (the newest is shown otherwise).
async fn get_event(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    match dispatcher.history_event(id.clone(), query.source).await? {
        Some(record) => Ok(axum::Json(record).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no event {id:?} in the history (events are kept for eventDelivery.retentionHours)"
        ))),
    }
}

/// `?subject=`, `?type=`, `?handler=`, `?limit=` and `?before=` of `GET /v1/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    subject: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    handler: Option<String>,
    limit: Option<u64>,
    before: Option<u64>,
}

/// The history, newest first: `?subject=`, `?type=`, `?handler=` narrow it, `?limit=` (default
/// 100, at most 1,000) sizes a page, and `?before=` takes the previous page's `next`.
async fn list_events(
    State(dispatcher): State<Arc<Dispatcher>>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit {
        None => 100,
        Some(n) if (1..=MAX_HISTORY_PAGE).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit={n} is out of range; use 1 to {MAX_HISTORY_PAGE}"
            )));
        }
    };
    let filter = outbox::HistoryFilter {
        subject: query.subject,
        event_type: query.event_type,
        handler: query.handler,
        before: query.before.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
    };
    let events = dispatcher.history(filter, limit).await?;
    // A full page may have more behind it: `next` is where the next page starts.
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(axum::Json(json!({ "events": events, "next": next })).into_response())
}

/// Makes one dead letter pending again, with a fresh set of attempts, and wakes its observer.
async fn retry_dead_letter(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let number = dead_letter_id(&id)?;
    match dispatcher.retry_dead_letter(number).await? {
        Some(retried) => Ok(axum::Json(
            json!({ "id": retried.id, "state": "pending", "handler": retried.handler }),
        )
        .into_response()),
        None => Err(ApiError::NotFound(format!("no dead letter {id}"))),
    }
}

/// Deletes one dead letter for good.
async fn discard_dead_letter(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let number = dead_letter_id(&id)?;
    if dispatcher.discard_dead_letter(number).await? {
        Ok(axum::Json(json!({ "id": number, "state": "discarded" })).into_response())
    } else {
        Err(ApiError::NotFound(format!("no dead letter {id}")))
    }
}

/// The id of one dead letter, from the path.
fn dead_letter_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{id:?} is not a dead letter id; GET /v1/dead-letters lists them"
        ))
    })
}
