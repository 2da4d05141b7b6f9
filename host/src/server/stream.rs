//! `GET /v1/stream`: Server-Sent Events, one message per accepted event and one per handler
//! outcome, each with the feed id it can be resumed from (`Last-Event-ID`).
//!
//! Each consumer has its own task reading the store's feed into a bounded buffer: a slow
//! consumer costs a read now and then, never a write, so it cannot slow dispatch. When its
//! buffer stays full while more is waiting, it is cut off with a reason (and can resume).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{ApiQuery, Console, error};
use crate::dispatch::Deliveries;
use crate::outbox::{FeedFilter, FeedItem};

/// Messages a consumer may have waiting before it counts as slow.
pub const STREAM_BUFFER: usize = 128;
/// How long a full buffer may stay full, with more waiting, before the consumer is cut off.
const SLOW_GRACE: Duration = Duration::from_secs(1);
/// How often the feed is read when this process has written nothing (other processes, such as
/// git hooks, write to the same store).
const POLL: Duration = Duration::from_millis(250);
/// How often an idle stream sends a comment, so proxies keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `?type=`, `?subject=`, `?handler=` and `?lastEventId=` of the stream.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StreamQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    subject: Option<String>,
    handler: Option<String>,
    last_event_id: Option<String>,
}

/// The stream. `?type=`, `?subject=` and `?handler=` (that handler's outcomes only) filter it;
/// `Last-Event-ID` (or `?lastEventId=`) resumes after that id, otherwise it starts now.
pub async fn stream(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Response {
    let filter = FeedFilter {
        event_type: query.event_type,
        subject: query.subject,
        handler: query.handler,
    };
    let resume = query.last_event_id.or_else(|| {
        headers
            .get("last-event-id")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    });
    let resume = match resume.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => match id.parse::<i64>() {
            Ok(id) if id >= 0 => Some(id),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID {id:?} is not an id this stream sent (a whole number)"),
                );
            }
        },
    };
    let store = console.dispatcher.deliveries();
    let now = match store.feed(i64::MAX, FeedFilter::default(), 0).await {
        Ok(feed) => feed,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let start = match resume {
        Some(id) if id < now.pruned_through => {
            return error(
                StatusCode::GONE,
                format!(
                    "messages after id {id} were pruned from the history (up to id {}, see \
                     eventDelivery.retentionHours); reconnect without Last-Event-ID to follow \
                     from now, and read what is left with GET /v1/events",
                    now.pruned_through
                ),
            );
        }
        Some(id) => id,
        None => now.head,
    };

    let (messages, receiver) = mpsc::channel(STREAM_BUFFER);
    let (cut, cut_off) = oneshot::channel();
    let hello = json!({ "head": now.head, "after": start, "buffer": STREAM_BUFFER });
    tokio::spawn(feed_consumer(store, filter, start, messages, cut));
    let body = body(
        SseEvent::default().event("hello").data(hello.to_string()),
        receiver,
        cut_off,
    );
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

/// Reads the feed after `after` into `messages` until the consumer goes away or is too slow.
async fn feed_consumer(
    store: Deliveries,
    filter: FeedFilter,
    mut after: i64,
    messages: mpsc::Sender<SseEvent>,
    cut: oneshot::Sender<String>,
) {
    let mut changes = store.changes();
    loop {
        let room = messages.capacity();
        if room == 0 {
            // Full: wait a little for the consumer; cut it off if more is waiting meanwhile.
            let freed = tokio::time::timeout(SLOW_GRACE, messages.reserve()).await;
            match freed {
                Ok(Ok(permit)) => drop(permit),
                Ok(Err(_)) => return,
                Err(_) => {
                    let waiting = store.feed(after, filter.clone(), 1).await;
                    if waiting.is_ok_and(|feed| !feed.items.is_empty()) {
                        let _ = cut.send(format!(
                            "this consumer read too slowly: its buffer of {STREAM_BUFFER} messages \
                             stayed full; reconnect with Last-Event-ID: {after} to resume"
                        ));
                        return;
                    }
                }
            }
            continue;
        }
        let page = match store.feed(after, filter.clone(), room).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!("the event stream cannot read the feed: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = page.items.len() == room;
        for item in page.items {
            after = item.id;
            if messages.try_send(message(&item)).is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = messages.closed() => return,
        }
    }
}

/// One feed item as an SSE message.
fn message(item: &FeedItem) -> SseEvent {
    let (kind, data) = match &item.outcome {
        None => (
            "accepted",
            json!({
                "eventId": item.event_id, "source": item.source, "type": item.event_type,
                "subject": item.subject, "seq": item.seq, "acceptedAt": item.accepted_at,
                "event": item.event,
            }),
        ),
        Some(outcome) => (
            "outcome",
            json!({
                "eventId": item.event_id, "source": item.source, "type": item.event_type,
                "subject": item.subject, "seq": item.seq, "outcome": outcome,
            }),
        ),
    };
    SseEvent::default()
        .id(item.id.to_string())
        .event(kind)
        .data(data.to_string())
}

/// The response body: `hello`, then the messages; a cut-off goes first, with its reason, and
/// ends the stream.
fn body(
    hello: SseEvent,
    receiver: mpsc::Receiver<SseEvent>,
    cut_off: oneshot::Receiver<String>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    /// What is left to send: the greeting, then messages until a cut-off or the end.
    struct Pending {
        hello: Option<SseEvent>,
        receiver: mpsc::Receiver<SseEvent>,
        /// `None` once the consumer task ended without cutting off: only messages remain.
        cut_off: Option<oneshot::Receiver<String>>,
        done: bool,
    }
    let pending = Pending {
        hello: Some(hello),
        receiver,
        cut_off: Some(cut_off),
        done: false,
    };
    futures_util::stream::unfold(pending, |mut pending| async move {
        if pending.done {
            return None;
        }
        if let Some(hello) = pending.hello.take() {
            return Some((Ok(hello), pending));
        }
        loop {
            let Some(cut_off) = pending.cut_off.as_mut() else {
                let message = pending.receiver.recv().await?;
                return Some((Ok(message), pending));
            };
            tokio::select! {
                biased;
                reason = cut_off => match reason {
                    Ok(reason) => {
                        pending.done = true;
                        let data = json!({ "reason": reason }).to_string();
                        return Some((Ok(SseEvent::default().event("cut-off").data(data)), pending));
                    }
                    Err(_) => pending.cut_off = None,
                },
                message = pending.receiver.recv() => {
                    let message = message?;
                    return Some((Ok(message), pending));
                }
            }
        }
    })
}
