//! Outbound HTTP (`wasi:http`), granted per handler by `capabilities.allowedHosts`.
//!
//! Only a handler with `allowedHosts` is linked with this (a handler without gets the interface
//! in `http_refused.rs`, which holds nothing); every request it makes passes through
//! [`HttpPolicy::send_request`], which refuses it unless:
//! - its scheme, host and port match an `allowedHosts` entry (redirects are new requests and are
//!   checked the same way, so they cannot lead elsewhere);
//! - every address the host resolves to is public, or is itself listed in `allowedHosts` (a name
//!   that resolves to a loopback, private, link-local or metadata address is refused);
//! - it completes within the event's deadline, with a response body of at most
//!   [`MAX_RESPONSE_BYTES`].
//!
//! When the event has a trace context, every request carries the invocation's as `traceparent`
//! (and `tracestate`), replacing any the guest set, so the receiver's spans join the producer's
//! trace.
//!
//! Plain-HTTP requests are sent to the address that was checked, so a second DNS answer cannot
//! redirect them. HTTPS requests are resolved again by the TLS client; the certificate must
//! still be valid for the allowed name.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::address::AllowedHost;

/// Largest response body a handler may read.
pub const MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Largest response header section (names and values) a handler is given.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 << 10;
/// Largest write to an outgoing body, which the host buffers until the request is sent: with
/// one buffered chunk per body, the resource table's bound also bounds what bodies hold.
const BODY_CHUNK_BYTES: usize = 16 << 10;
/// Longest a name lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// The outbound rules of one invocation.
#[derive(Clone)]
pub struct HttpPolicy {
    handler: Arc<str>,
    allowed: Arc<[AllowedHost]>,
    deadline: Instant,
    trace: Option<crate::trace::TraceParent>,
}

impl HttpPolicy {
    /// Rules for one invocation of `handler`, which must be done by `deadline`.
    pub fn new(handler: Arc<str>, allowed: Arc<[AllowedHost]>, deadline: Instant) -> HttpPolicy {
        HttpPolicy {
            handler,
            allowed,
            deadline,
            trace: None,
        }
    }

    /// The same rules, with the trace context outgoing requests carry.
    pub fn with_trace(mut self, trace: Option<crate::trace::TraceParent>) -> HttpPolicy {
        self.trace = trace;
        self
    }

    /// Puts the invocation's trace context on an outgoing request.
    fn propagate(&self, request: &mut http::Request<WasiBody>) {
        let Some(trace) = &self.trace else { return };
        let headers = request.headers_mut();
        headers.remove("traceparent");
        headers.remove("tracestate");
        if let Ok(value) = http::HeaderValue::from_str(&trace.to_string()) {
            headers.insert("traceparent", value);
        }
        if let Some(Ok(value)) = trace.state().map(http::HeaderValue::from_str) {
            headers.insert("tracestate", value);
        }
    }

    /// Checks a request's target; returns the vetted address to connect to.
    async fn vet(&self, uri: &http::Uri) -> Result<SocketAddr, Error> {
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.allowed.iter().any(|a| a.allows(scheme, host, port)) {
            return Err(self.deny(
                Error::HttpRequestDenied,
                format!("{scheme}://{host}:{port} is not in capabilities.allowedHosts"),
            ));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| Error::DnsTimeout)?
                .map_err(|_| Error::DestinationNotFound)?
                .collect(),
        };
        for address in &addresses {
            let ip = address.ip();
            let listed = self
                .allowed
                .iter()
                .any(|a| a.allows(scheme, &ip.to_string(), port));
            if is_internal(ip) && !listed {
                return Err(self.deny(
                    Error::DestinationIpProhibited,
                    format!("{host} resolves to {ip}, an internal address; list {scheme}://{address} in allowedHosts to allow it"),
                ));
            }
        }
        addresses.first().copied().ok_or(Error::DestinationNotFound)
    }

    fn deny(&self, error: Error, why: String) -> Error {
        tracing::warn!(handler = %self.handler, "outbound request refused: {why}");
        error
    }

    /// Request timeouts, each capped by what is left of the event's deadline.
    fn options(&self, asked: Option<RequestOptions>) -> Result<RequestOptions, Error> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::ConnectionTimeout);
        }
        let cap = |d: Option<Duration>| Some(d.map_or(left, |d| d.min(left)));
        let asked = asked.unwrap_or_default();
        Ok(RequestOptions {
            connect_timeout: cap(asked.connect_timeout),
            first_byte_timeout: cap(asked.first_byte_timeout),
            between_bytes_timeout: cap(asked.between_bytes_timeout),
        })
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let policy = self.clone();
        Box::new(async move {
            let address = policy.vet(request.uri()).await?;
            let options = policy.options(options)?;
            policy.propagate(&mut request);
            if request.uri().scheme_str() == Some("http") {
                // Connect to the address just checked; the Host header keeps the name.
                let mut parts = request.uri().clone().into_parts();
                parts.authority = Some(
                    address
                        .to_string()
                        .parse()
                        .map_err(|_| Error::HttpRequestUriInvalid)?,
                );
                *request.uri_mut() =
                    http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
            }
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let header_bytes: usize = response
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum();
            if header_bytes > MAX_RESPONSE_HEADER_BYTES {
                return Err(Error::HttpResponseHeaderSectionSize(
                    u32::try_from(header_bytes).ok(),
                ));
            }
            let response = response.map(|body| {
                CappedBody {
                    inner: body.boxed_unsync(),
                    left: MAX_RESPONSE_BYTES,
                }
                .boxed_unsync()
            });
            Ok((response, Box::new(io) as IoFuture))
        })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_BYTES
    }
}

/// Whether an address is one a handler must not reach unless it is listed explicitly: loopback,
/// private, carrier-grade NAT, link-local (cloud metadata lives there), unspecified, broadcast,
/// multicast, IPv6 unique-local, and IPv4-mapped forms of these.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A response body that fails once more than its cap has been read.
struct CappedBody {
    inner: WasiBody,
    left: u64,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let size = data.len() as u64;
            if size > self.left {
                self.left = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                    MAX_RESPONSE_BYTES,
                )))));
            }
            self.left -= size;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().expect("ip")), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn only_allowed_hosts_and_listed_internal_addresses_pass() {
        let allowed: Arc<[AllowedHost]> = [
            "https://hooks.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:9000",
        ]
        .iter()
        .map(|h| AllowedHost::parse(h).expect("valid"))
        .collect();
        let policy = HttpPolicy::new("t".into(), allowed, Instant::now() + Duration::from_secs(5));
        let uri = |s: &str| s.parse::<http::Uri>().expect("uri");
        let ok = policy
            .vet(&uri("http://127.0.0.1:8080/hook"))
            .await
            .expect("listed loopback address");
        assert_eq!(ok, "127.0.0.1:8080".parse().expect("addr"));
        assert!(matches!(
            policy.vet(&uri("https://other.example.com/")).await,
            Err(Error::HttpRequestDenied)
        ));
        assert!(matches!(
            policy.vet(&uri("http://127.0.0.1:8081/")).await,
            Err(Error::HttpRequestDenied)
        ));
        // Allowed by name, but the name resolves to loopback, which is not itself listed.
        assert!(matches!(
            policy.vet(&uri("http://localhost:9000/")).await,
            Err(Error::DestinationIpProhibited)
        ));
    }
}
