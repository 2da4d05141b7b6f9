//! Forwarding a hook's events to a running `hookwasm serve` instead of loading the handlers in
//! the hook's own process: `POST /v1/events?route=gates` in `pre-receive` (the answer carries
//! every gate's verdict) and `?route=observers` after (queued; the hook does not wait for them).
//!
//! The server is expected on loopback or a trusted network, so this is a minimal HTTP/1.1 client
//! over [`TcpStream`] for `http://` URLs: one request per connection, a JSON body, a JSON answer.
//! It avoids pulling an HTTP client stack into every `git push`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Denial;
use crate::event::Event;

/// Events per request. A batch must fit in every subscribed observer's queue (the server answers
/// 413 otherwise), and the default queue holds 1,024.
pub const BATCH: usize = 100;
/// How long connecting may take.
/// The variable holding the API token the hooks send (a token with the `ingest` scope).
pub const TOKEN_ENV: &str = "HOOKWASM_TOKEN";

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
    host: String,
    port: u16,
    /// Path prefix before `/v1/events`, without a trailing slash (usually empty).
    base: String,
}

impl Forwarder {
    /// Parses `http://host[:port][/path]`.
    pub fn new(url: &str) -> Result<Forwarder, ForwardError> {
        let bad = |why| ForwardError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "; only plain http is supported: keep hookwasm serve on loopback or a trusted network",
                ));
            }
            _ => return Err(bad("")),
        };
        let (authority, base) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse()
                    .map_err(|_| bad("; the port is not a number"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || base.contains(['?', '#']) {
            return Err(bad(""));
        }
        Ok(Forwarder {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            base: base.to_owned(),
        })
    }

    /// Runs the server's gates on `events`; returns every refusal.
    pub fn gates(&self, events: &[Event]) -> Result<Vec<Denial>, ForwardError> {
        let mut denials = Vec::new();
        for batch in events.chunks(BATCH) {
            for result in self.post("gates", batch)? {
                if result["observersQueued"].as_u64().unwrap_or(0) > 0 {
                    return Err(ForwardError::RouteIgnored {
                        url: self.url.clone(),
                    });
                }
                if result["verdict"] != "deny" {
                    continue;
                }
                for reason in result["reasons"].as_array().into_iter().flatten() {
                    denials.push(Denial {
                        handler: text(&reason["handler"]),
                        // Guest text, printed to the pusher: one line, always.
                        reason: crate::escape::escape(&text(&reason["value"])).into_owned(),
                    });
                }
            }
        }
        Ok(denials)
    }

    /// Queues `events` for the server's observers, retrying while their queues are full.
    pub fn observers(&self, events: &[Event]) -> Result<(), ForwardError> {
        for batch in events.chunks(BATCH) {
            self.post("observers", batch)?;
        }
        Ok(())
    }

    /// `POST /v1/events?route=<route>` with a batch; returns the per-event results. A 503 (an
    /// observer's queue is full) is retried after the server's `Retry-After`.
    fn post(&self, route: &str, events: &[Event]) -> Result<Vec<Value>, ForwardError> {
        let body = Value::Array(events.iter().map(|e| e.json().clone()).collect()).to_string();
        let path = format!("{}/v1/events?route={route}", self.base);
        let started = Instant::now();
        loop {
            let (status, retry_after, answer) = self.exchange(&path, &body)?;
            let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            match status {
                200 | 202 => {
                    return match json["results"].as_array() {
                        Some(results) if results.len() == events.len() => Ok(results.clone()),
                        _ => Err(self.status(status, "the answer holds no result per event")),
                    };
                }
                503 if started.elapsed() < BUSY_DEADLINE => {
                    std::thread::sleep(retry_after.unwrap_or(Duration::from_secs(1)));
                }
                _ => {
                    let message = match json["error"].as_str() {
                        Some(error) => error.to_owned(),
                        None => String::from_utf8_lossy(&answer).trim().to_owned(),
                    };
                    return Err(self.status(status, &message));
                }
            }
        }
    }

    fn status(&self, status: u16, message: &str) -> ForwardError {
        ForwardError::Status {
            url: self.url.clone(),
            status,
            message: message.to_owned(),
        }
    }

    /// One request on its own connection: returns the status, `Retry-After` and the body.
    fn exchange(
        &self,
        path: &str,
        body: &str,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), ForwardError> {
        let unreachable = |message: String| ForwardError::Unreachable {
            url: self.url.clone(),
            message,
        };
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.host)))?;
        let mut last_error = format!("{} resolves to no address", self.host);
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let mut stream = stream.ok_or_else(|| unreachable(last_error))?;
        let io = |e: std::io::Error| unreachable(e.to_string());
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        // A server with API tokens wants one with the `ingest` scope (never logged).
        let authorization = std::env::var(TOKEN_ENV)
            .ok()
            .map(|token| token.trim().to_owned())
            .filter(|token| !token.is_empty() && !token.contains(['\r', '\n']))
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hookwasm-git-hook/{}\r\n\
             {authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        stream.write_all(body.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        parse_answer(&raw).ok_or_else(|| unreachable("the answer is not HTTP/1.1".into()))
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Splits an HTTP/1.1 answer read to the end of the connection into status, `Retry-After` and
/// body (de-chunked when the server streamed it).
fn parse_answer(raw: &[u8]) -> Option<(u16, Option<Duration>, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut retry_after = None;
    let mut chunked = false;
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok().map(Duration::from_secs);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((status, retry_after, body))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_an_optional_port_and_path() {
        let f = Forwarder::new("http://127.0.0.1:8787").unwrap();
        assert_eq!(
            (f.host.as_str(), f.port, f.base.as_str()),
            ("127.0.0.1", 8787, "")
        );
        let f = Forwarder::new("http://hooks.internal/hookwasm/").unwrap();
        assert_eq!(
            (f.host.as_str(), f.port, f.base.as_str()),
            ("hooks.internal", 80, "/hookwasm")
        );
        let f = Forwarder::new("http://[::1]:9000").unwrap();
        assert_eq!((f.host.as_str(), f.port), ("::1", 9000));

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
    }

    #[test]
    fn answers_are_split_and_dechunked() {
        let raw =
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_answer(raw),
            Some((503, Some(Duration::from_secs(2)), b"{}".to_vec()))
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_answer(raw), Some((200, None, b"{\"a\":1}".to_vec())));
        assert_eq!(parse_answer(b"garbage"), None);
    }

    #[test]
    fn an_unreachable_server_is_named() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let forwarder = Forwarder::new("http://127.0.0.1:9").unwrap();
        let error = forwarder
            .observers(&[])
            .map(|()| "no request for no events");
        assert_eq!(error.unwrap(), "no request for no events");
        let event = Event::from_json(serde_json::json!({
            "specversion": "1.0", "id": "e", "source": "t", "type": "t.t", "data": {}
        }))
        .unwrap();
        let error = forwarder.gates(&[event]).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot reach hookwasm serve at http://127.0.0.1:9: "),
            "{error}"
        );
    }
}
