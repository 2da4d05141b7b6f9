//! Outbound HTTP: blocking requests through the host's `wasi:http`, for handlers whose operator
//! granted them hosts.
//!
//! A handler can reach only what its entry in `proxy.config.json` lists under
//! `capabilities.allowedHosts` (`scheme://host[:port]`); the host refuses everything else, and
//! names that resolve to internal addresses unless that exact address is listed. Every request
//! also ends with the event's deadline (`limits.timeoutMs`), and a response body may be at most
//! [`MAX_RESPONSE_BYTES`]. A refusal is an ordinary [`Error`] whose message says which rule
//! refused it, so `?` hands it to the host's log as the event's failure.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use hookwasm_sdk::{Event, Handler, Outcome, Result, http};
//!
//! #[derive(serde::Deserialize)]
//! struct Notify {
//!     url: String,
//! }
//!
//! impl Handler for Notify {
//!     fn on_event(&self, event: &Event) -> Result<Outcome> {
//!         let response = http::Request::post(&self.url)
//!             .header("content-type", "application/json")
//!             .body(event.json.as_bytes())
//!             .timeout(Duration::from_millis(500))
//!             .send()?;
//!         if !response.is_success() {
//!             return Err(format!("{} answered {}: {}", self.url, response.status, response.text()).into());
//!         }
//!         Ok(Outcome::allow().annotate("status", response.status))
//!     }
//! }
//!
//! hookwasm_sdk::export_handler!(Notify);
//! ```
//!
//! Requests block the handler until the response has been read: a handler runs one event at a
//! time in its own instance, so there is nothing else it could do meanwhile. Error messages name
//! the URL's origin (`https://hooks.example.com`) but never its path or query, which often carry
//! tokens (chat webhooks, signed URLs), because these messages end up in the host's log.
//!
//! Outside WebAssembly (a handler's native unit tests) there is no host to send through: a live
//! [`crate::testing::TestHost`] answers from the test's expectations; without one,
//! [`Request::send`] checks the URL and then fails with an error saying so.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::{Error, Result};

/// The largest response body a handler can read, in bytes: 1 MiB, the host's own cap. A larger
/// body fails the request rather than being cut short.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method's name as sent, e.g. `POST`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to build up and [`send`](Request::send):
/// `Request::post(url).header(name, value).body(bytes).timeout(duration).send()`.
///
/// Its `Debug` output shows the method, the URL's origin, the header names and the body's size,
/// never header values, path or body: those are where credentials live.
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with this method to an `http://` or `https://` URL. The URL is checked when the
    /// request is sent.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new(Method::Put, url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Request {
        Request::new(Method::Patch, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new(Method::Delete, url)
    }

    /// Adds a header. Repeating a name sends it several times. `content-length` is set for you
    /// when the request has a body; `host`, `connection`, `transfer-encoding` and the other
    /// hop-by-hop headers are the host's to set and fail the request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body, sent as is.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON and `content-type` to `application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Request> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Gives up when the whole exchange (connecting, sending, and reading the response to its
    /// end) takes longer than this. Without it the event's deadline still ends the request;
    /// with it, the earlier of the two does.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers, as set.
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    pub(crate) fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    pub(crate) fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Sends the request and reads the whole response, blocking until then.
    ///
    /// Any answer is `Ok`, whatever its status: check [`Response::is_success`]. `Err` means no
    /// complete answer came: an invalid URL or header, a refusal by the host
    /// (`request to https://x refused by the host: not granted in capabilities.allowedHosts`),
    /// a network failure, a timeout, or a body over [`MAX_RESPONSE_BYTES`].
    pub fn send(self) -> Result<Response> {
        let target = Target::parse(&self.url)?;
        transport::send(&self, &target)
    }

    /// The headers to send: the author's, plus `content-length` when there is a body and the
    /// author set none. Without it the body would go out chunked, which simple receivers (a
    /// script behind Python's `http.server`, say) cannot read.
    // Natively nothing is sent, so only the unit tests call it there.
    #[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
    fn headers_to_send(&self) -> Vec<(&str, Cow<'_, str>)> {
        let mut headers: Vec<(&str, Cow<'_, str>)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), Cow::Borrowed(value.as_str())))
            .collect();
        let has_length = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
        let expects_body = matches!(self.method, Method::Post | Method::Put | Method::Patch);
        if !has_length && (expects_body || !self.body.is_empty()) {
            headers.push(("content-length", Cow::Owned(self.body.len().to_string())));
        }
        headers
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = Target::parse(&self.url)
            .map(|target| target.origin())
            .unwrap_or_else(|_| "<invalid URL>".to_owned());
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("origin", &origin)
            .field("headers", &header_names)
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends a `GET` request: `Request::get(url).send()`.
pub fn get(url: impl Into<String>) -> Result<Response> {
    Request::get(url).send()
}

/// The `scheme://host[:port]` of an `http://` or `https://` URL: what
/// `capabilities.allowedHosts` must list for requests to it. An `Err` says what is wrong with
/// the URL, so a handler can check URLs from its config in `init` and refuse to load with a
/// clear message rather than fail on every event.
///
/// ```
/// use hookwasm_sdk::http::origin;
///
/// assert_eq!(origin("https://hooks.example.com/a/b?c=d").unwrap(), "https://hooks.example.com");
/// assert_eq!(origin("HTTP://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
/// assert!(origin("ftp://example.com").is_err());
/// ```
pub fn origin(url: &str) -> Result<String> {
    Target::parse(url).map(|target| target.origin())
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. `200`.
    pub status: u16,
    /// Every header in the order received, names in lower case; values that are not UTF-8 are
    /// converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text; bytes that are not UTF-8 become `U+FFFD`, so an error page can always
    /// be shown.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The first value of a header, whatever the case of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The parts of a URL that `wasi:http` asks for separately.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `true` for `https`.
    https: bool,
    /// `host[:port]`, as written.
    authority: String,
    /// Starts with `/`; no fragment.
    path_with_query: String,
}

impl Target {
    /// Splits an absolute `http://` or `https://` URL. Messages never repeat the URL: its path
    /// may hold a token.
    fn parse(url: &str) -> Result<Target> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::new(
                "invalid URL: it contains spaces or control characters (percent-encode them)",
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(Error::new(
                "invalid URL: it must be absolute, starting with http:// or https://",
            ));
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(Error::new(format!(
                    "invalid URL: scheme `{scheme}` is not supported; use http:// or https://"
                )));
            }
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(Error::new(format!(
                "invalid URL: it carries credentials (user:password@) for {scheme}://; \
                 send them in a header (e.g. authorization) instead"
            )));
        }
        if authority.is_empty() {
            return Err(Error::new(format!(
                "invalid URL: no host after {scheme}://"
            )));
        }
        check_port(authority)?;
        let without_fragment = tail.split('#').next().unwrap_or_default();
        let path_with_query = if without_fragment.starts_with('/') {
            without_fragment.to_owned()
        } else {
            format!("/{without_fragment}")
        };
        Ok(Target {
            https,
            authority: authority.to_owned(),
            path_with_query,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `scheme://authority`, the part of the URL that errors may show.
    fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority)
    }
}

/// Checks the `:port` of `host[:port]` (IPv6 hosts are bracketed: `[::1]:8080`).
fn check_port(authority: &str) -> Result<()> {
    let after_host = match authority.rfind(']') {
        Some(close) => &authority[close + 1..],
        None => authority,
    };
    let Some((host, port)) = after_host.rsplit_once(':') else {
        return Ok(());
    };
    if host.is_empty() && !authority.starts_with('[') {
        return Err(Error::new(format!(
            "invalid URL: no host before the port in `{authority}`"
        )));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(Error::new(format!(
            "invalid URL: port `{port}` in `{authority}` is not a number from 1 to 65535"
        ))),
    }
}

/// Sending, through the host's `wasi:http/outgoing-handler`.
#[cfg(target_os = "wasi")]
mod transport {
    use wasi::clocks::monotonic_clock;
    use wasi::http::outgoing_handler;
    use wasi::http::types::{
        ErrorCode, Fields, HeaderError, IncomingBody, IncomingResponse, Method as WasiMethod,
        OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
    };
    use wasi::io::poll::{Pollable, poll};
    use wasi::io::streams::StreamError;

    use super::{MAX_RESPONSE_BYTES, Method, Request, Response, Target};
    use crate::{Error, Result};

    /// How much one write or read moves at most. Writes are also bounded by what the stream
    /// says it can take (`check-write`).
    const CHUNK: usize = 64 << 10;

    pub(super) fn send(request: &Request, target: &Target) -> Result<Response> {
        let origin = target.origin();
        let failed = |why: String| Error::new(format!("request to {origin} failed: {why}"));
        let deadline = Deadline::after(request.timeout);

        let headers = Fields::new();
        for (name, value) in request.headers_to_send() {
            headers
                .append(name, value.as_bytes())
                .map_err(|error| failed(header_error(name, error)))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        outgoing
            .set_method(&wasi_method(request.method))
            .map_err(|()| failed(format!("the host refused the method {}", request.method)))?;
        let scheme = if target.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        outgoing
            .set_scheme(Some(&scheme))
            .and_then(|()| outgoing.set_authority(Some(&target.authority)))
            .and_then(|()| outgoing.set_path_with_query(Some(&target.path_with_query)))
            .map_err(|()| failed("the host refused the URL".to_owned()))?;
        // Only a request that has a body asks for one: `content-length: 0` needs none.
        let body = if request.body.is_empty() {
            None
        } else {
            Some(
                outgoing
                    .body()
                    .map_err(|()| failed("could not open the request body".to_owned()))?,
            )
        };

        let future = outgoing_handler::handle(outgoing, options(request))
            .map_err(|code| Error::new(describe(&origin, &code)))?;
        // The body is written after `handle`: the host streams it to the server as it comes,
        // so a body larger than the stream's buffer cannot stall before anything is sent.
        let written = match body {
            Some(body) => write_body(body, &request.body, &deadline),
            None => Ok(()),
        };

        if !deadline.wait(&future.subscribe()) {
            return Err(deadline.timed_out(&origin));
        }
        let incoming = match future.get() {
            Some(Ok(Ok(incoming))) => incoming,
            Some(Ok(Err(code))) => return Err(Error::new(describe(&origin, &code))),
            Some(Err(())) | None => {
                return Err(failed("the host lost the response".to_owned()));
            }
        };
        // A request refused or failed above says why; only with an answer in hand does a
        // failure to send the body become the error.
        written.map_err(|failure| failure.into_error(&origin, &deadline))?;
        read_response(incoming, &deadline).map_err(|failure| failure.into_error(&origin, &deadline))
    }

    /// The transport timeouts for the host: each phase gets the whole timeout (the host caps
    /// them by the event's deadline). The total is enforced here by [`Deadline`].
    fn options(request: &Request) -> Option<RequestOptions> {
        let timeout = request.timeout?;
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let options = RequestOptions::new();
        // An `Err` means the host does not support that timeout; the deadline still applies.
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        Some(options)
    }

    fn wasi_method(method: Method) -> WasiMethod {
        match method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
        }
    }

    fn header_error(name: &str, error: HeaderError) -> String {
        match error {
            HeaderError::InvalidSyntax => {
                format!("header `{name}` has an invalid name or value")
            }
            HeaderError::Forbidden => {
                format!("header `{name}` is the host's to set and cannot be sent")
            }
            HeaderError::Immutable => format!("header `{name}` could not be set"),
        }
    }

    /// What went wrong after the request was handed to the host.
    enum Failure {
        /// The deadline passed first.
        TimedOut,
        /// The host or the network said why.
        Code(ErrorCode),
        /// Anything else, described.
        Other(String),
    }

    impl Failure {
        fn into_error(self, origin: &str, deadline: &Deadline) -> Error {
            match self {
                Failure::TimedOut => deadline.timed_out(origin),
                Failure::Code(code) => Error::new(describe(origin, &code)),
                Failure::Other(why) => Error::new(format!("request to {origin} failed: {why}")),
            }
        }
    }

    /// A stream error: its `wasi:http` cause when the host gave one.
    fn stream_failure(error: StreamError, what: &str) -> Failure {
        match error {
            StreamError::LastOperationFailed(error) => {
                match wasi::http::types::http_error_code(&error) {
                    Some(code) => Failure::Code(code),
                    None => Failure::Other(format!("{what}: {}", error.to_debug_string())),
                }
            }
            StreamError::Closed => Failure::Other(format!("{what}: the connection was closed")),
        }
    }

    /// Writes the body in chunks no larger than the stream accepts, then finishes it.
    fn write_body(body: OutgoingBody, bytes: &[u8], deadline: &Deadline) -> Result<(), Failure> {
        let stream = body
            .write()
            .map_err(|()| Failure::Other("could not write the request body".to_owned()))?;
        let sending = "sending the body";
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = stream
                .check_write()
                .map_err(|error| stream_failure(error, sending))?;
            if room == 0 {
                if !deadline.wait(&stream.subscribe()) {
                    return Err(Failure::TimedOut);
                }
                continue;
            }
            let size = rest
                .len()
                .min(CHUNK)
                .min(usize::try_from(room).unwrap_or(usize::MAX));
            stream
                .write(&rest[..size])
                .map_err(|error| stream_failure(error, sending))?;
            rest = &rest[size..];
        }
        // Every byte has been accepted. A stream that is closed now was closed by the receiving
        // side once it had the `content-length` it expected (wasmtime's does exactly that), so
        // only an operation that failed is an error; a lost body would fail the response too.
        let flushed = match stream.flush() {
            Ok(()) if !deadline.wait(&stream.subscribe()) => return Err(Failure::TimedOut),
            Ok(()) => stream.check_write().map(|_| ()),
            Err(error) => Err(error),
        };
        match flushed {
            Ok(()) | Err(StreamError::Closed) => {}
            Err(error) => return Err(stream_failure(error, sending)),
        }
        // The stream is the body's child: it must go before the body is finished.
        drop(stream);
        OutgoingBody::finish(body, None).map_err(Failure::Code)
    }

    /// Reads status, headers and the whole body, refusing bodies over the cap.
    fn read_response(incoming: IncomingResponse, deadline: &Deadline) -> Result<Response, Failure> {
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let body = incoming
            .consume()
            .map_err(|()| Failure::Other("could not read the response body".to_owned()))?;
        let stream = body
            .stream()
            .map_err(|()| Failure::Other("could not read the response body".to_owned()))?;
        let reading = "reading the response body";
        let mut bytes = Vec::new();
        loop {
            // One byte more than the cap allows, so an oversized body is noticed.
            let room = MAX_RESPONSE_BYTES + 1 - bytes.len();
            let chunk = match stream.read(room.min(CHUNK) as u64) {
                Ok(chunk) => chunk,
                Err(StreamError::Closed) => break,
                Err(error) => return Err(stream_failure(error, reading)),
            };
            if chunk.is_empty() {
                if !deadline.wait(&stream.subscribe()) {
                    return Err(Failure::TimedOut);
                }
                continue;
            }
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::Other(format!(
                    "the response body is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
        }
        // The stream is the body's child: it must go before the body is finished.
        drop(stream);
        drop(IncomingBody::finish(body));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }

    /// When the author's timeout runs out, on the monotonic clock; `None` without a timeout
    /// (the host's event deadline still applies).
    struct Deadline {
        at: Option<monotonic_clock::Instant>,
        timeout: Option<std::time::Duration>,
    }

    impl Deadline {
        fn after(timeout: Option<std::time::Duration>) -> Deadline {
            let at = timeout.map(|timeout| {
                let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
                monotonic_clock::now().saturating_add(nanos)
            });
            Deadline { at, timeout }
        }

        /// Blocks until `pollable` is ready; `false` when the deadline came first.
        fn wait(&self, pollable: &Pollable) -> bool {
            match self.at {
                None => {
                    pollable.block();
                    true
                }
                Some(at) => {
                    let timer = monotonic_clock::subscribe_instant(at);
                    poll(&[pollable, &timer]).contains(&0)
                }
            }
        }

        fn timed_out(&self, origin: &str) -> Error {
            let after = self
                .timeout
                .map(|timeout| format!(" after {} ms", timeout.as_millis()))
                .unwrap_or_default();
            Error::new(format!("request to {origin} timed out{after}"))
        }
    }

    /// One sentence for a `wasi:http` error code. The host's own refusals say which rule of
    /// the handler's capabilities refused the request, so the operator knows what to change.
    fn describe(origin: &str, code: &ErrorCode) -> String {
        let refused = |why: &str| format!("request to {origin} refused by the host: {why}");
        let failed = |why: String| format!("request to {origin} failed: {why}");
        match code {
            ErrorCode::HttpRequestDenied => refused("not granted in capabilities.allowedHosts"),
            ErrorCode::DestinationIpProhibited => refused(
                "destination IP prohibited (the name resolves to an internal address; \
                 list that address in capabilities.allowedHosts to allow it)",
            ),
            ErrorCode::DnsTimeout => failed("name lookup timed out".to_owned()),
            ErrorCode::DnsError(payload) => failed(match &payload.rcode {
                Some(rcode) => format!("name lookup failed ({rcode})"),
                None => "name lookup failed".to_owned(),
            }),
            ErrorCode::DestinationNotFound => failed("host name not found".to_owned()),
            ErrorCode::DestinationUnavailable => failed("destination unavailable".to_owned()),
            ErrorCode::DestinationIpUnroutable => failed("destination IP unroutable".to_owned()),
            ErrorCode::ConnectionRefused => failed("connection refused".to_owned()),
            ErrorCode::ConnectionTerminated => {
                failed("the connection was closed before the response was complete".to_owned())
            }
            ErrorCode::ConnectionTimeout => {
                failed("timed out connecting (the event's deadline caps every request)".to_owned())
            }
            ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => failed(
                "timed out waiting for the response (the event's deadline caps every request)"
                    .to_owned(),
            ),
            ErrorCode::ConnectionWriteTimeout => failed("timed out sending the request".to_owned()),
            ErrorCode::TlsProtocolError => failed("TLS handshake failed".to_owned()),
            ErrorCode::TlsCertificateError => {
                failed("the server's TLS certificate is not valid for this host".to_owned())
            }
            ErrorCode::TlsAlertReceived(payload) => failed(match &payload.alert_message {
                Some(message) => format!("TLS alert from the server: {message}"),
                None => "TLS alert from the server".to_owned(),
            }),
            ErrorCode::HttpRequestUriInvalid => failed("the host found the URL invalid".to_owned()),
            ErrorCode::HttpResponseBodySize(_) => failed(format!(
                "the response body is larger than the host's limit of {MAX_RESPONSE_BYTES} bytes"
            )),
            ErrorCode::HttpResponseIncomplete => failed("the response was incomplete".to_owned()),
            ErrorCode::HttpProtocolError => failed("HTTP protocol error".to_owned()),
            ErrorCode::InternalError(Some(message)) => failed(message.clone()),
            other => failed(format!("{other:?}")),
        }
    }
}

/// Outside WebAssembly there is no host: a live [`crate::testing::TestHost`] answers, else
/// sending fails with a message that says so.
#[cfg(not(target_os = "wasi"))]
mod transport {
    use super::{Request, Response, Target};
    use crate::{Error, Result};

    pub(super) fn send(request: &Request, target: &Target) -> Result<Response> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(host) = crate::testing::current() {
            return host.http.send(request, &target.origin());
        }
        let _ = request;
        Err(Error::new(format!(
            "request to {} not sent: hookwasm_sdk::http sends through the host's wasi:http, \
             which only exists inside the component (run it with `hookwasm call`, or mock it \
             with hookwasm_sdk::testing::TestHost)",
            target.origin()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    fn error(url: &str) -> String {
        Target::parse(url).unwrap_err().into_message()
    }

    #[test]
    fn splits_urls_into_what_wasi_http_asks_for() {
        assert_eq!(
            target("https://hooks.example.com/a/b?c=d#frag"),
            Target {
                https: true,
                authority: "hooks.example.com".into(),
                path_with_query: "/a/b?c=d".into(),
            }
        );
        assert_eq!(
            target("http://127.0.0.1:8080"),
            Target {
                https: false,
                authority: "127.0.0.1:8080".into(),
                path_with_query: "/".into(),
            }
        );
        assert_eq!(target("HTTPS://x.test?q=1").path_with_query, "/?q=1");
        assert_eq!(target("http://[::1]:9000/hook").authority, "[::1]:9000");
        assert_eq!(target("http://[::1]/").authority, "[::1]");
    }

    #[test]
    fn refuses_what_it_cannot_send_and_never_echoes_the_path() {
        assert_eq!(
            error("hooks.example.com/secret-token"),
            "invalid URL: it must be absolute, starting with http:// or https://"
        );
        assert_eq!(
            error("ftp://example.com/secret-token"),
            "invalid URL: scheme `ftp` is not supported; use http:// or https://"
        );
        assert_eq!(
            error("https://user:pw@example.com/secret-token"),
            "invalid URL: it carries credentials (user:password@) for https://; \
             send them in a header (e.g. authorization) instead"
        );
        assert_eq!(
            error("https:///secret-token"),
            "invalid URL: no host after https://"
        );
        assert_eq!(
            error("https://example.com/secret token"),
            "invalid URL: it contains spaces or control characters (percent-encode them)"
        );
        assert_eq!(
            error("http://example.com:http/x"),
            "invalid URL: port `http` in `example.com:http` is not a number from 1 to 65535"
        );
        assert_eq!(
            error("http://example.com:0"),
            "invalid URL: port `0` in `example.com:0` is not a number from 1 to 65535"
        );
        assert_eq!(
            error("http://:8080/"),
            "invalid URL: no host before the port in `:8080`"
        );
    }

    #[test]
    fn origin_is_what_allowed_hosts_lists() {
        assert_eq!(
            origin("https://hooks.example.com/a?b").unwrap(),
            "https://hooks.example.com"
        );
        assert_eq!(
            origin("Http://127.0.0.1:8080/hook").unwrap(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn content_length_is_added_for_bodies() {
        let names = |request: &Request| -> Vec<(String, String)> {
            request
                .headers_to_send()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.into_owned()))
                .collect()
        };
        let post = Request::post("http://x.test/").header("content-type", "application/json");
        assert_eq!(
            names(&post.clone().body("{}")),
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("content-length".to_owned(), "2".to_owned()),
            ]
        );
        assert_eq!(
            names(&Request::post("http://x.test/")),
            [("content-length".to_owned(), "0".to_owned())]
        );
        assert!(names(&Request::get("http://x.test/")).is_empty());
        let explicit = Request::put("http://x.test/")
            .header("Content-Length", "3")
            .body("abc");
        assert_eq!(
            names(&explicit),
            [("Content-Length".to_owned(), "3".to_owned())]
        );
    }

    #[test]
    fn json_sets_body_and_content_type() {
        let request = Request::patch("http://x.test/")
            .json(&serde_json::json!({"a": 1}))
            .unwrap();
        assert_eq!(request.body, br#"{"a":1}"#);
        assert_eq!(
            request.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(request.method(), Method::Patch);
    }

    #[test]
    fn debug_hides_paths_header_values_and_bodies() {
        let request = Request::post("https://hooks.example.com/services/T0/B0/secret")
            .header("authorization", "Bearer secret")
            .body("secret body")
            .timeout(Duration::from_secs(2));
        let text = format!("{request:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("https://hooks.example.com"), "{text}");
        assert!(text.contains("authorization"), "{text}");
        assert!(text.contains("body_bytes: 11"), "{text}");
    }

    #[test]
    fn response_helpers() {
        let response = Response {
            status: 204,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"ok \xff".to_vec(),
        };
        assert!(response.is_success());
        assert_eq!(response.text(), "ok \u{fffd}");
        assert_eq!(response.header("Content-Type"), Some("text/plain"));
        assert_eq!(response.header("missing"), None);
        for (status, success) in [(199, false), (200, true), (299, true), (300, false)] {
            let response = Response {
                status,
                headers: Vec::new(),
                body: Vec::new(),
            };
            assert_eq!(response.is_success(), success, "{status}");
        }
    }

    #[cfg(not(target_os = "wasi"))]
    #[test]
    fn natively_nothing_is_sent() {
        let error = get("https://hooks.example.com/x").unwrap_err();
        assert_eq!(
            error.message(),
            "request to https://hooks.example.com not sent: hookwasm_sdk::http sends through \
             the host's wasi:http, which only exists inside the component (run it with \
             `hookwasm call`, or mock it with hookwasm_sdk::testing::TestHost)"
        );
        assert!(
            get("nope")
                .unwrap_err()
                .message()
                .starts_with("invalid URL")
        );
    }
}
