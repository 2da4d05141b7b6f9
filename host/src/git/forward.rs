//! Forwarding a hook's events to a running `hookwasm serve` instead of loading the handlers in
//! the hook's own process: `POST /v1/events?route=gates` in `pre-receive` (the answer carries
//! every gate's verdict) and `?route=observers` after (queued; the hook does not wait for them).
//!
//! The server is expected on loopback or a trusted network, so the client is hyper's, over
//! plain `http://`: one connection per hook run, a JSON body, a JSON answer read into the
//! dispatcher's own answer types.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::Denial;
use crate::address::{AddressError, Origin};
use crate::dispatch::{Attributed, Verdict};
use crate::event::Event;

/// Events per request. A batch must fit in every subscribed observer's queue (the server answers
/// 413 otherwise), and the default queue holds 1,024.
pub const BATCH: usize = 100;
/// The variable holding the API token the hooks send (a token with the `ingest` scope).
pub const TOKEN_ENV: &str = "HOOKWASM_TOKEN";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to answer one request: gates run within their own deadlines,
/// one event after another, so a large push takes a while.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long observers' full queues (HTTP 503) are retried before the hook gives up.
const BUSY_DEADLINE: Duration = Duration::from_secs(60);

/// Why forwarding failed. Messages name the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// `HOOKWASM_URL` is not `http://host[:port][/path]`.
    #[error("HOOKWASM_URL {url:?} is not a URL of the form http://host[:port][/path]{why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// A precise reason, starting with "; ", or empty.
        why: &'static str,
    },
    /// The server could not be reached, or the exchange broke off.
    #[error("cannot reach hookwasm serve at {url}: {message}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with an error.
    #[error("hookwasm serve at {url} answered HTTP {status}: {message}")]
    Status {
        /// The server's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's `error`, or the body.
        message: String,
    },
    /// The server ran observers for a gates-only request, so it does not know `?route=`.
    #[error(
        "hookwasm serve at {url} queued observers for a gates-only request: it predates `?route=`; run a serve of the same version as the hook"
    )]
    RouteIgnored {
        /// The server's URL.
        url: String,
    },
}

/// A `hookwasm serve` to forward to.
#[derive(Debug, Clone)]
pub struct Forwarder {
    url: String,
    /// Where `POST /v1/events` is, without the query.
    events: hyper::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The answer to an array of events: one result per event, in order.
#[derive(Debug, Deserialize)]
struct Answer {
    results: Vec<Decided>,
}

/// What the server decided for one event (the part of [`crate::dispatch::Decision`] a hook
/// needs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Decided {
    verdict: Verdict,
    #[serde(default)]
    reasons: Vec<Attributed>,
    #[serde(default)]
    observers_queued: usize,
}

/// An error answer's body.
#[derive(Debug, Deserialize)]
struct Refusal {
    error: String,
}

impl Forwarder {
    /// Parses `http://host[:port][/path]`.
    pub fn new(url: &str) -> Result<Forwarder, ForwardError> {
        let bad = |why| ForwardError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let (origin, base) = Origin::parse_with_path(url).map_err(|e| match e {
            AddressError::InvalidPort => bad("; the port is not a number"),
            _ => bad(""),
        })?;
        match origin.scheme.as_str() {
            "http" => {}
            "https" => {
                return Err(bad(
                    "; only plain http is supported: keep hookwasm serve on loopback or a trusted network",
                ));
            }
            _ => return Err(bad("")),
        }
        let events = format!("http://{}{base}/v1/events", origin.authority())
            .parse()
            .map_err(|_| bad(""))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Forwarder {
            url: url.to_owned(),
            events,
            client,
        })
    }

    /// Runs the server's gates on `events`; returns every refusal.
    pub async fn gates(&self, events: &[Event]) -> Result<Vec<Denial>, ForwardError> {
        let mut denials = Vec::new();
        for batch in events.chunks(BATCH) {
            for decided in self.post("gates", batch).await? {
                if decided.observers_queued > 0 {
                    return Err(ForwardError::RouteIgnored {
                        url: self.url.clone(),
                    });
                }
                if decided.verdict != Verdict::Deny {
                    continue;
                }
                denials.extend(decided.reasons.into_iter().map(|reason| Denial {
                    handler: reason.handler,
                    // Guest text, printed to the pusher: one line, always.
                    reason: crate::escape::escape(&reason.value).into_owned(),
                }));
            }
        }
        Ok(denials)
    }

    /// Queues `events` for the server's observers, retrying while their queues are full.
    pub async fn observers(&self, events: &[Event]) -> Result<(), ForwardError> {
        for batch in events.chunks(BATCH) {
            self.post("observers", batch).await?;
        }
        Ok(())
    }

    /// `POST /v1/events?route=<route>` with a batch; returns the per-event results. A 503 (an
    /// observer's queue is full) is retried after the server's `Retry-After`.
    async fn post(&self, route: &str, events: &[Event]) -> Result<Vec<Decided>, ForwardError> {
        let body = Bytes::from(
            serde_json::Value::Array(events.iter().map(|e| e.json().clone()).collect()).to_string(),
        );
        let started = Instant::now();
        loop {
            let (status, retry_after, answer) = self.exchange(route, body.clone()).await?;
            match status {
                StatusCode::OK | StatusCode::ACCEPTED => {
                    return match serde_json::from_slice::<Answer>(&answer) {
                        Ok(answer) if answer.results.len() == events.len() => Ok(answer.results),
                        _ => Err(self.status(status, "the answer holds no result per event")),
                    };
                }
                StatusCode::SERVICE_UNAVAILABLE if started.elapsed() < BUSY_DEADLINE => {
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
                }
                _ => {
                    let message = match serde_json::from_slice::<Refusal>(&answer) {
                        Ok(refusal) => refusal.error,
                        Err(_) => String::from_utf8_lossy(&answer).trim().to_owned(),
                    };
                    return Err(self.status(status, &message));
                }
            }
        }
    }

    fn status(&self, status: StatusCode, message: &str) -> ForwardError {
        ForwardError::Status {
            url: self.url.clone(),
            status: status.as_u16(),
            message: message.to_owned(),
        }
    }

    /// One request: returns the status, `Retry-After` and the body, within [`ANSWER_TIMEOUT`].
    async fn exchange(
        &self,
        route: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), ForwardError> {
        let unreachable = |message: String| ForwardError::Unreachable {
            url: self.url.clone(),
            message,
        };
        let uri = format!("{}?route={route}", self.events);
        let mut request = Request::post(uri)
            .header(
                header::USER_AGENT,
                concat!("hookwasm-git-hook/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONTENT_TYPE, "application/json");
        // A server with API tokens wants one with the `ingest` scope (never logged).
        if let Some(token) = std::env::var(TOKEN_ENV)
            .ok()
            .map(|token| token.trim().to_owned())
            .filter(|token| !token.is_empty())
        {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| unreachable(format!("the request cannot be built: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs);
            let answer = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(error_chain(&e)))?
                .to_bytes();
            Ok((status, retry_after, answer))
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())))?
    }
}

/// An error with its causes, `: `-separated (hyper's own message is only "client error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_an_optional_port_and_path() {
        let f = Forwarder::new("http://127.0.0.1:8787").unwrap();
        assert_eq!(f.events.to_string(), "http://127.0.0.1:8787/v1/events");
        let f = Forwarder::new("http://hooks.internal/hookwasm/").unwrap();
        assert_eq!(
            f.events.to_string(),
            "http://hooks.internal/hookwasm/v1/events"
        );
        let f = Forwarder::new("http://[::1]:9000").unwrap();
        assert_eq!(f.events.to_string(), "http://[::1]:9000/v1/events");

        let error = |url: &str| Forwarder::new(url).unwrap_err().to_string();
        assert_eq!(
            error("https://hooks.example.com"),
            "HOOKWASM_URL \"https://hooks.example.com\" is not a URL of the form \
             http://host[:port][/path]; only plain http is supported: keep hookwasm serve on \
             loopback or a trusted network"
        );
        assert!(error("127.0.0.1:8787").ends_with("http://host[:port][/path]"));
        assert!(error("http://localhost:x").ends_with("the port is not a number"));
        assert!(error("http://:80").contains("is not a URL"));
        assert!(error("http://h/p?q=1").contains("is not a URL"));
    }

    #[test]
    fn answers_are_read_into_decisions() {
        let answer: Answer = serde_json::from_str(
            r#"{"results": [{"eventId": "e", "verdict": "deny", "observersQueued": 0,
                "reasons": [{"handler": "g", "value": "no"}], "annotations": [], "gates": []}]}"#,
        )
        .unwrap();
        assert_eq!(answer.results[0].verdict, Verdict::Deny);
        assert_eq!(answer.results[0].reasons[0].value, "no");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let forwarder = Forwarder::new("http://127.0.0.1:9").unwrap();
        forwarder.observers(&[]).await.unwrap();
        let event = Event::from_json(serde_json::json!({
            "specversion": "1.0", "id": "e", "source": "t", "type": "t.t", "data": {}
        }))
        .unwrap();
        let error = forwarder.gates(&[event]).await.unwrap_err().to_string();
        assert!(
            error.starts_with("cannot reach hookwasm serve at http://127.0.0.1:9: "),
            "{error}"
        );
    }
}
