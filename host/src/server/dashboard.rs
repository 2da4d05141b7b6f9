//! The operator dashboard at `/`: one page of plain HTML, CSS and JavaScript, compiled into the
//! binary (no build step, no CDN: it works with no internet). It reads the same API as everyone
//! else (`/v1/handlers`, `/v1/events`, `/v1/stream`, `/v1/deliveries`, `/v1/dead-letters`) and
//! signs in with a token, which becomes an HTTP-only session cookie; its buttons send the
//! session's CSRF token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::json;

use super::access::{SESSION_COOKIE, cookie};
use super::{Console, error};
use crate::auth::Scope;

const INDEX: &str = include_str!("dashboard/index.html");
const LOGIN: &str = include_str!("dashboard/login.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// What every page answer carries: no caching of live data, no framing, scripts only from here.
fn page(html: String) -> Response {
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    response
}

/// `GET /`: the dashboard (the access check has already sent strangers to `/login`).
pub async fn index() -> Response {
    page(INDEX.to_owned())
}

/// `GET /assets/{file}`: the page's script and style.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, format!("no asset {file:?}")),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /login`: the sign-in form; without tokens there is nothing to sign in to.
pub async fn login_page(State(console): State<Arc<Console>>) -> Response {
    if !console.auth.enabled() {
        return Redirect::to("/").into_response();
    }
    page(LOGIN.replace("{{message}}", ""))
}

/// `POST /login` with `token=…` (a form): a session cookie and the dashboard, or the form again
/// with why not.
pub async fn login(State(console): State<Arc<Console>>, body: Bytes) -> Response {
    let token = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    match console.auth.sign_in(&token) {
        Ok((id, session)) => {
            let max_age = console.auth.config().map_or(0, |c| c.session_ttl.as_secs());
            tracing::info!(token = %session.name, "signed in to the dashboard");
            let cookie = format!(
                "{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}"
            );
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(denied) => {
            let message = format!(r#"<p class="error">{}</p>"#, escape(&denied.to_string()));
            let mut response = page(LOGIN.replace("{{message}}", &message));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

/// `POST /logout`: ends the session and forgets the cookie.
pub async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        console.auth.sign_out(id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "hookwasm_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// `GET /v1/session`: who the caller is, what it may do, and the CSRF token its changes carry.
pub async fn session(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let all = [Scope::Ingest, Scope::Read, Scope::Admin];
    if !console.auth.enabled() {
        return axum::Json(json!({
            "auth": false, "name": null, "scopes": all, "csrf": null,
        }))
        .into_response();
    }
    let session = cookie(&headers, SESSION_COOKIE).and_then(|id| console.auth.find_session(id));
    match session {
        Some(session) => axum::Json(json!({
            "auth": true, "name": session.name, "scopes": session.scopes, "csrf": session.csrf,
        }))
        .into_response(),
        // A bearer token got here (the access check let it in): no session, no CSRF.
        None => axum::Json(json!({ "auth": true, "name": null, "scopes": [], "csrf": null }))
            .into_response(),
    }
}

/// Text safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
