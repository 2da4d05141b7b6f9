//! The lock on every request: which scope an endpoint needs, and whether the caller has it
//! (a bearer token, or the dashboard's session cookie with its CSRF token on changes).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::{Console, error};
use crate::auth::{Denied, MetricsAccess, Scope};

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "hookwasm_session";

/// What `method path` needs; `None` for what anyone may call.
pub fn needed(method: &Method, path: &str) -> Option<Scope> {
    let open = ["/healthz", "/readyz", "/login", "/logout"];
    if open.contains(&path) || path.starts_with("/assets/") {
        return None;
    }
    let changing = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    Some(match (changing, path) {
        (true, "/v1/events") => Scope::Ingest,
        (true, _) => Scope::Admin,
        (false, _) => Scope::Read,
    })
}

/// The middleware: lets the request through, or answers 401/403 (a browser asking for a page
/// without a session is sent to `/login`).
pub async fn check(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let auth = &console.auth;
    let Some(needed) = needed(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    if !auth.enabled() {
        return next.run(request).await;
    }
    if request.uri().path() == "/metrics"
        && auth
            .config()
            .is_some_and(|c| c.metrics == MetricsAccess::Loopback)
        && peer(&request).is_some_and(|p| p.ip().is_loopback())
    {
        return next.run(request).await;
    }
    let changing = needed != Scope::Read;
    let verdict = match bearer(request.headers()) {
        Some(token) => auth.bearer(token, needed),
        None => match cookie(request.headers(), SESSION_COOKIE) {
            Some(id) => {
                let csrf = request
                    .headers()
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok());
                auth.session(id, needed, changing, csrf)
            }
            None => Err(Denied::Missing),
        },
    };
    match verdict {
        Ok(_) => next.run(request).await,
        Err(denied) if denied.unauthenticated() && wants_page(&request) => {
            Redirect::to("/login").into_response()
        }
        Err(denied) if denied.unauthenticated() => {
            let mut response = error(StatusCode::UNAUTHORIZED, denied.to_string());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"hookwasm\""),
            );
            response
        }
        Err(denied) => error(StatusCode::FORBIDDEN, denied.to_string()),
    }
}

fn peer(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// A browser navigating to the dashboard (not a script calling the API).
fn wants_page(request: &Request) -> bool {
    request.method() == Method::GET
        && !request.uri().path().starts_with("/v1/")
        && request.uri().path() != "/metrics"
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_needs_its_scope() {
        let table = [
            (Method::POST, "/v1/events", Some(Scope::Ingest)),
            (Method::GET, "/v1/events", Some(Scope::Read)),
            (Method::GET, "/v1/events/e1", Some(Scope::Read)),
            (Method::GET, "/v1/stream", Some(Scope::Read)),
            (Method::GET, "/v1/handlers", Some(Scope::Read)),
            (Method::GET, "/v1/dead-letters", Some(Scope::Read)),
            (Method::POST, "/v1/dead-letters/3/retry", Some(Scope::Admin)),
            (Method::DELETE, "/v1/dead-letters/3", Some(Scope::Admin)),
            (Method::POST, "/v1/reload", Some(Scope::Admin)),
            (Method::GET, "/metrics", Some(Scope::Read)),
            (Method::GET, "/", Some(Scope::Read)),
            (Method::GET, "/healthz", None),
            (Method::GET, "/readyz", None),
            (Method::GET, "/login", None),
            (Method::POST, "/login", None),
            (Method::GET, "/assets/app.js", None),
        ];
        for (method, path, scope) in table {
            assert_eq!(needed(&method, path), scope, "{method} {path}");
        }
    }

    #[test]
    fn bearer_and_cookie_are_read_from_their_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer  abc ".parse().expect("value"),
        );
        headers.insert(
            header::COOKIE,
            "a=1; hookwasm_session=xyz; b=2".parse().expect("value"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&headers), None);
    }
}
