//! Who may do what: API tokens with scopes, and the dashboard's sessions.
//!
//! Tokens come from the config's `auth` object or, for a config shared with GitProxy (which
//! refuses unknown top-level keys) and to keep secrets out of it, from the JSON file named by
//! `HOOKWASM_AUTH_FILE`. Each token has a name (what logs and answers show: the token itself is
//! never logged) and scopes: `ingest` (post events), `read` (handlers, events, stream, metrics,
//! the dashboard) and `admin` (retry, discard, reload). Presented tokens are hashed and compared
//! with every configured digest in constant time.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable naming a JSON file that holds the `auth` object.
pub const AUTH_FILE_ENV: &str = "HOOKWASM_AUTH_FILE";

/// How long a dashboard session lasts unless `auth.sessionSeconds` says otherwise: 12 hours.
const DEFAULT_SESSION_SECS: u64 = 12 * 3600;

/// The most sessions kept at once; the oldest is dropped beyond it, so a flood of sign-ins
/// cannot grow the host's memory.
const MAX_SESSIONS: usize = 10_000;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// Reading: handlers, events, the stream, deliveries, dead letters, metrics, the dashboard.
    Read,
    /// Changing: retrying and discarding dead letters, reloading the config.
    Admin,
}

impl Scope {
    /// The scope's name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may scrape `/metrics` without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    /// Only a token with the `read` scope.
    #[default]
    Token,
    /// Also any client connecting from a loopback address (a local Prometheus agent).
    Loopback,
}

/// The `auth` object as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AuthEntry {
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    metrics: MetricsAccess,
    session_seconds: Option<u64>,
}

/// One token as written: exactly one of `token`, `tokenEnv` and `sha256`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenEntry {
    name: String,
    scopes: Vec<Scope>,
    token: Option<String>,
    token_env: Option<String>,
    sha256: Option<String>,
    expires: Option<jiff::Timestamp>,
}

/// A configuration mistake in `auth`, one sentence naming the field or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The `auth` object is wrong; the message names the field and what to write.
    #[error("{0}")]
    Invalid(String),
    /// The file `HOOKWASM_AUTH_FILE` names could not be read.
    #[error("{origin}: cannot read it: {source}")]
    Read {
        /// The file, and that the variable named it.
        origin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// That file is not JSON.
    #[error("{origin}: not valid JSON: {source}")]
    Json {
        /// The file, and that the variable named it.
        origin: String,
        /// The parser's error, with its line and column.
        source: serde_json::Error,
    },
}

impl AuthError {
    /// An error with this message.
    pub fn new(message: String) -> AuthError {
        AuthError::Invalid(message)
    }
}

/// A configured token: its digest, never the token.
#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    expires: Option<jiff::Timestamp>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The validated `auth` settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    tokens: Vec<Token>,
    /// Who may scrape `/metrics` without a token.
    pub metrics: MetricsAccess,
    /// How long a dashboard session lasts.
    pub session_ttl: Duration,
}

impl AuthConfig {
    /// Validates an `auth` object; `origin` names where it came from in error messages.
    pub fn parse(value: serde_json::Value, origin: &str) -> Result<AuthConfig, AuthError> {
        let fail = |message: String| AuthError::Invalid(format!("{origin}: {message}"));
        let entry: AuthEntry = serde_json::from_value(value).map_err(|e| {
            fail(format!(
                "{e}; write {{\"tokens\": [{{\"name\": \"…\", \"scopes\": [\"read\"], \"tokenEnv\": \"…\"}}]}}"
            ))
        })?;
        if entry.tokens.is_empty() {
            return Err(fail(
                "`tokens` is empty; list at least one token, or remove `auth` to run without"
                    .into(),
            ));
        }
        let mut tokens: Vec<Token> = Vec::new();
        for (i, token) in entry.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}] ({})", token.name);
            let fail = |message: &str| fail(format!("{at}: {message}"));
            if token.name.trim().is_empty() {
                return Err(fail(
                    "`name` is empty; name each token (logs show the name)",
                ));
            }
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(fail("another token has the same `name`"));
            }
            if token.scopes.is_empty() {
                return Err(fail(
                    "`scopes` is empty; give one or more of \"ingest\", \"read\", \"admin\"",
                ));
            }
            let digest = match (&token.token, &token.token_env, &token.sha256) {
                (Some(secret), None, None) => digest_of(secret, &fail)?,
                (None, Some(var), None) => {
                    let secret = std::env::var(var).map_err(|_| {
                        fail(&format!(
                            "the environment variable {var} named by `tokenEnv` is not set"
                        ))
                    })?;
                    digest_of(&secret, &fail)?
                }
                (None, None, Some(hex_digest)) => {
                    let hex_digest = hex_digest.trim().to_ascii_lowercase();
                    let hex_digest = hex_digest.strip_prefix("sha256:").unwrap_or(&hex_digest);
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| {
                        fail("`sha256` must be 64 hex digits: `printf %s \"$TOKEN\" | sha256sum`")
                    })?;
                    digest
                }
                _ => {
                    return Err(fail(
                        "give exactly one of `token`, `tokenEnv` (the variable holding it) and \
                         `sha256` (its digest)",
                    ));
                }
            };
            tokens.push(Token {
                name: token.name,
                digest,
                scopes: token.scopes,
                expires: token.expires,
            });
        }
        let session_secs = entry.session_seconds.unwrap_or(DEFAULT_SESSION_SECS);
        if session_secs == 0 {
            return Err(fail("`sessionSeconds` must be at least 1".into()));
        }
        Ok(AuthConfig {
            tokens,
            metrics: entry.metrics,
            session_ttl: Duration::from_secs(session_secs),
        })
    }

    /// Reads the `auth` object from the file `HOOKWASM_AUTH_FILE` names.
    pub fn from_file(path: &Path) -> Result<AuthConfig, AuthError> {
        let origin = format!("{} (from {AUTH_FILE_ENV})", path.display());
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            origin: origin.clone(),
            source,
        })?;
        let value = serde_json::from_str(&text).map_err(|source| AuthError::Json {
            origin: origin.clone(),
            source,
        })?;
        AuthConfig::parse(value, &origin)
    }

    /// The token's name and scopes, if `presented` is a configured token that has not expired.
    fn verify(&self, presented: &str) -> Result<&Token, Denied> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compared with every digest, whatever matched, so timing says nothing about which.
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        let token = found.ok_or(Denied::BadToken)?;
        match token.expires {
            Some(expires) if expires <= jiff::Timestamp::now() => Err(Denied::Expired {
                token: token.name.clone(),
                at: expires,
            }),
            _ => Ok(token),
        }
    }
}

fn digest_of(secret: &str, fail: &dyn Fn(&str) -> AuthError) -> Result<[u8; 32], AuthError> {
    if secret.len() < 16 {
        return Err(fail(
            "the token is shorter than 16 characters; use a long random one (`openssl rand -hex 32`)",
        ));
    }
    Ok(Sha256::digest(secret.as_bytes()).into())
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials at all: 401.
    Missing,
    /// A bearer token that no configured token matches: 401.
    BadToken,
    /// A token past its `expires`: 401.
    Expired {
        /// The token's name.
        token: String,
        /// When it expired.
        at: jiff::Timestamp,
    },
    /// A session cookie that is unknown or expired: 401.
    SessionExpired,
    /// A cookie-authenticated change without the session's CSRF token: 403.
    Csrf,
    /// Known credentials without the scope: 403.
    Scope {
        /// Who asked.
        who: String,
        /// What it needed.
        needed: Scope,
    },
}

impl Denied {
    /// Whether the answer is 401 (who are you?) rather than 403 (you may not).
    pub fn unauthenticated(&self) -> bool {
        matches!(
            self,
            Denied::Missing | Denied::BadToken | Denied::Expired { .. } | Denied::SessionExpired
        )
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Missing => f.write_str(
                "authentication required: send `Authorization: Bearer <token>`, or sign in at /login",
            ),
            Denied::BadToken => f.write_str("the bearer token is not valid; check the token"),
            Denied::Expired { token, at } => {
                write!(f, "token {token:?} expired at {at}; ask for a new one")
            }
            Denied::SessionExpired => {
                f.write_str("your session has expired or is unknown; sign in again at /login")
            }
            Denied::Csrf => f.write_str(
                "missing or wrong X-CSRF-Token header: a signed-in change must carry the session's CSRF token",
            ),
            Denied::Scope { who, needed } => {
                write!(f, "{who} lacks the `{needed}` scope this request needs")
            }
        }
    }
}

/// A signed-in dashboard user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name.
    pub name: String,
    /// The token's scopes.
    pub scopes: Vec<Scope>,
    /// What `X-CSRF-Token` must carry on the session's changes.
    pub csrf: String,
    expires: Instant,
    created: Instant,
}

/// Whoever a request turned out to be.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Tokens and sessions: what the server consults on every request.
#[derive(Debug)]
pub struct Auth {
    config: Option<AuthConfig>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Auth {
    /// No tokens: every request is allowed (the server then listens on loopback only).
    pub fn disabled() -> Auth {
        Auth::new(None)
    }

    /// Tokens from `config`, or none.
    pub fn new(config: Option<AuthConfig>) -> Auth {
        Auth {
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether tokens are configured.
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The settings, when enabled.
    pub fn config(&self) -> Option<&AuthConfig> {
        self.config.as_ref()
    }

    /// Checks a bearer token for `needed`.
    pub fn bearer(&self, presented: &str, needed: Scope) -> Result<Caller, Denied> {
        let Some(config) = &self.config else {
            return Ok(everyone());
        };
        let token = config.verify(presented)?;
        allow(&token.name, &token.scopes, needed)
    }

    /// Checks a session cookie for `needed`; `csrf` is the request's `X-CSRF-Token`, required
    /// when `changing`.
    pub fn session(
        &self,
        id: &str,
        needed: Scope,
        changing: bool,
        csrf: Option<&str>,
    ) -> Result<Caller, Denied> {
        let session = self.find_session(id).ok_or(Denied::SessionExpired)?;
        if changing {
            let matches =
                csrf.is_some_and(|c| bool::from(c.as_bytes().ct_eq(session.csrf.as_bytes())));
            if !matches {
                return Err(Denied::Csrf);
            }
        }
        allow(&session.name, &session.scopes, needed)
    }

    /// A live session by id.
    pub fn find_session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match sessions.get(id) {
            Some(session) if session.expires > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Signs in with a token: returns the new session's id. Any valid token may sign in; what
    /// it may see is still decided by its scopes.
    pub fn sign_in(&self, presented: &str) -> Result<(String, Session), Denied> {
        let Some(config) = &self.config else {
            return Err(Denied::Missing);
        };
        let token = config.verify(presented)?;
        let now = Instant::now();
        let session = Session {
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            csrf: random_id(),
            expires: now + config.session_ttl,
            created: now,
        };
        let id = random_id();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// Ends a session.
    pub fn sign_out(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The caller when no tokens are configured: allowed everything.
fn everyone() -> Caller {
    Caller {
        name: "anyone (no tokens configured)".into(),
        scopes: vec![Scope::Ingest, Scope::Read, Scope::Admin],
    }
}

fn allow(name: &str, scopes: &[Scope], needed: Scope) -> Result<Caller, Denied> {
    if scopes.contains(&needed) {
        Ok(Caller {
            name: name.to_owned(),
            scopes: scopes.to_vec(),
        })
    } else {
        Err(Denied::Scope {
            who: format!("token {name:?}"),
            needed,
        })
    }
}

/// 256 random bits as hex: session ids and CSRF tokens.
fn random_id() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokens: serde_json::Value) -> Result<AuthConfig, AuthError> {
        AuthConfig::parse(serde_json::json!({ "tokens": tokens }), "auth")
    }

    #[test]
    fn an_auth_file_that_cannot_be_read_or_parsed_keeps_its_cause() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = AuthConfig::from_file(&dir.path().join("missing.json")).expect_err("missing");
        let io = missing
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(missing.to_string().contains("cannot read it"), "{missing}");

        let broken = dir.path().join("auth.json");
        std::fs::write(&broken, "{").expect("write");
        let error = AuthConfig::from_file(&broken).expect_err("not JSON");
        let json = error
            .source()
            .and_then(|s| s.downcast_ref::<serde_json::Error>());
        assert!(json.is_some_and(serde_json::Error::is_eof), "{error}");
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    #[test]
    fn tokens_are_checked_by_digest_and_scope() {
        let digest = hex::encode(Sha256::digest(b"reader-token-0123456789"));
        let auth = Auth::new(Some(
            config(serde_json::json!([
                {"name": "ingest", "token": "ingest-token-0123456789", "scopes": ["ingest"]},
                {"name": "reader", "sha256": digest, "scopes": ["read"]},
                {"name": "old", "token": "old-token-0123456789ab", "scopes": ["admin"],
                 "expires": "2000-01-01T00:00:00Z"},
            ]))
            .expect("valid"),
        ));
        assert_eq!(
            auth.bearer("ingest-token-0123456789", Scope::Ingest)
                .map(|c| c.name),
            Ok("ingest".into())
        );
        assert!(auth.bearer("reader-token-0123456789", Scope::Read).is_ok());
        let denied = auth
            .bearer("reader-token-0123456789", Scope::Admin)
            .expect_err("no admin scope");
        assert!(!denied.unauthenticated());
        assert_eq!(
            auth.bearer("nope", Scope::Read).expect_err("unknown"),
            Denied::BadToken
        );
        assert!(matches!(
            auth.bearer("old-token-0123456789ab", Scope::Admin),
            Err(Denied::Expired { .. })
        ));
    }

    #[test]
    fn sessions_carry_the_tokens_scopes_and_demand_csrf_on_changes() {
        let auth = Auth::new(Some(
            config(serde_json::json!([
                {"name": "ops", "token": "ops-token-0123456789ab", "scopes": ["read", "admin"]},
            ]))
            .expect("valid"),
        ));
        let (id, session) = auth.sign_in("ops-token-0123456789ab").expect("signed in");
        assert!(auth.session(&id, Scope::Read, false, None).is_ok());
        assert_eq!(
            auth.session(&id, Scope::Admin, true, Some("forged"))
                .expect_err("forged"),
            Denied::Csrf
        );
        assert!(
            auth.session(&id, Scope::Admin, true, Some(&session.csrf))
                .is_ok()
        );
        auth.sign_out(&id);
        assert_eq!(
            auth.session(&id, Scope::Read, false, None)
                .expect_err("signed out"),
            Denied::SessionExpired
        );
        assert!(auth.sign_in("wrong").is_err());
    }

    #[test]
    fn mistakes_name_the_token_and_the_fix() {
        let cases = [
            (serde_json::json!([]), "`tokens` is empty"),
            (
                serde_json::json!([{"name": "a", "scopes": ["read"]}]),
                "give exactly one of `token`, `tokenEnv`",
            ),
            (
                serde_json::json!([{"name": "a", "scopes": [], "token": "0123456789abcdefgh"}]),
                "`scopes` is empty",
            ),
            (
                serde_json::json!([{"name": "a", "scopes": ["write"], "token": "0123456789abcdefgh"}]),
                "unknown variant `write`",
            ),
            (
                serde_json::json!([{"name": "a", "scopes": ["read"], "token": "short"}]),
                "shorter than 16",
            ),
            (
                serde_json::json!([{"name": "a", "scopes": ["read"], "tokenEnv": "HOOKWASM_TEST_UNSET_VAR"}]),
                "HOOKWASM_TEST_UNSET_VAR named by `tokenEnv` is not set",
            ),
            (
                serde_json::json!([{"name": "a", "scopes": ["read"], "sha256": "xyz"}]),
                "64 hex digits",
            ),
        ];
        for (tokens, expected) in cases {
            let error = config(tokens.clone()).expect_err("refused").to_string();
            assert!(error.contains(expected), "{tokens}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
