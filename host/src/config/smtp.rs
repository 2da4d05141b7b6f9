//! `capabilities.smtp`: the one SMTP relay a handler may send e-mail through, and what it may
//! send there (from which addresses, to which recipients). The sandbox enforces it
//! (`sandbox/smtp.rs`); this module only parses and validates what the operator wrote.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::address::{AddressError, Origin};

/// `capabilities.smtp` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SmtpEntry {
    relay: String,
    #[serde(default)]
    tls: SmtpTls,
    from: Vec<String>,
    allowed_recipients: Vec<String>,
    username: Option<String>,
    password_env: Option<String>,
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: for a relay on loopback or a trusted network only. Default port 25.
    None,
    /// Plain connection upgraded with STARTTLS, which must succeed. Default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS). Default port 465.
    Tls,
}

/// What one handler may do over SMTP: the relay, the senders and the recipients it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpGrant {
    /// The relay's host name or IP address (no brackets).
    pub host: String,
    /// The relay's port, explicit or the TLS mode's default.
    pub port: u16,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// Sender addresses the handler may use, lower-case; the first is the default.
    pub from: Vec<String>,
    /// Who the handler may send to.
    pub allowed_recipients: Vec<RecipientPattern>,
    /// Login, when the relay wants one.
    pub credentials: Option<SmtpCredentials>,
}

impl SmtpGrant {
    /// The relay as `smtp://host:port`, the form messages and errors use.
    pub fn relay(&self) -> String {
        if self.host.contains(':') {
            format!("smtp://[{}]:{}", self.host, self.port)
        } else {
            format!("smtp://{}:{}", self.host, self.port)
        }
    }

    /// Whether `relay` (`smtp://host[:port]`, as a handler names it) is this grant's relay.
    pub fn is_relay(&self, relay: &str) -> bool {
        parse_relay(relay, self.tls)
            .is_ok_and(|(host, port)| host == self.host && port == self.port)
    }

    /// Whether the handler may send from `address`.
    pub fn allows_sender(&self, address: &str) -> bool {
        self.from.iter().any(|f| f.eq_ignore_ascii_case(address))
    }

    /// Whether the handler may send to `address`.
    pub fn allows_recipient(&self, address: &str) -> bool {
        self.allowed_recipients.iter().any(|p| p.matches(address))
    }
}

/// A user name and the password read from the environment when the config was loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    /// The login name.
    pub username: String,
    /// The password; never printed.
    pub password: String,
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One `allowedRecipients` entry: an exact address, `*@domain` for every address at one domain,
/// or `*` for anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientPattern {
    /// Any address.
    Anyone,
    /// Every address at this lower-case domain.
    Domain(String),
    /// This lower-case address.
    Address(String),
}

impl RecipientPattern {
    fn parse(text: &str) -> Result<RecipientPattern, SmtpError> {
        let text = text.trim().to_ascii_lowercase();
        if text == "*" {
            return Ok(RecipientPattern::Anyone);
        }
        if let Some(domain) = text.strip_prefix("*@") {
            if is_domain(domain) {
                return Ok(RecipientPattern::Domain(domain.to_owned()));
            }
        } else if is_address(&text) {
            return Ok(RecipientPattern::Address(text));
        }
        Err(SmtpError::from(format!(
            "`capabilities.smtp.allowedRecipients` entry {text:?} is neither an address, `*@domain` nor `*`"
        )))
    }

    /// Whether `address` is one this pattern allows (case-insensitive).
    pub fn matches(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        match self {
            RecipientPattern::Anyone => is_address(&address),
            RecipientPattern::Domain(domain) => address
                .rsplit_once('@')
                .is_some_and(|(local, d)| !local.is_empty() && d == domain),
            RecipientPattern::Address(exact) => *exact == address,
        }
    }
}

/// Why `capabilities.smtp` cannot be used: one sentence naming the field, and the error behind it
/// where there is one (a bad relay address, an unset variable).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SmtpError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl From<String> for SmtpError {
    fn from(message: String) -> SmtpError {
        SmtpError {
            message,
            source: None,
        }
    }
}

impl From<&str> for SmtpError {
    fn from(message: &str) -> SmtpError {
        SmtpError::from(message.to_owned())
    }
}

/// Parses and checks `capabilities.smtp`; `Err` is one sentence naming the field.
pub(super) fn parse(entry: SmtpEntry) -> Result<SmtpGrant, SmtpError> {
    let (host, port) = parse_relay(&entry.relay, entry.tls)?;
    if entry.from.is_empty() {
        return Err(SmtpError::from(
            "`capabilities.smtp.from` lists no sender; add the address(es) the handler may send from",
        ));
    }
    let mut from = Vec::new();
    for address in &entry.from {
        let address = address.trim().to_ascii_lowercase();
        if !is_address(&address) {
            return Err(SmtpError::from(format!(
                "`capabilities.smtp.from` entry {address:?} is not an e-mail address"
            )));
        }
        from.push(address);
    }
    if entry.allowed_recipients.is_empty() {
        return Err(SmtpError::from(
            "`capabilities.smtp.allowedRecipients` is empty; list the addresses (or `*@domain`) the handler may send to",
        ));
    }
    let allowed_recipients = entry
        .allowed_recipients
        .iter()
        .map(|r| RecipientPattern::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    // The clear-text check comes first: it is a mistake in the file, whatever the environment.
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let credentials = match (entry.username, entry.password_env) {
        (None, None) => None,
        (Some(_), Some(_)) if entry.tls == SmtpTls::None && !loopback => {
            return Err(SmtpError::from(
                "`capabilities.smtp` has a `username` with `\"tls\": \"none\"`, which would send the password in clear text; use `starttls` or `tls`",
            ));
        }
        (Some(username), Some(variable)) => {
            let password = std::env::var(&variable).map_err(|e| SmtpError {
                message: format!("`capabilities.smtp.passwordEnv` names {variable}, which is not set in hookwasm's environment; set it or fix the name"),
                source: Some(Box::new(e)),
            })?;
            Some(SmtpCredentials { username, password })
        }
        _ => {
            return Err(SmtpError::from(
                "`capabilities.smtp` needs both `username` and `passwordEnv`, or neither",
            ));
        }
    };
    Ok(SmtpGrant {
        host,
        port,
        tls: entry.tls,
        from,
        allowed_recipients,
        credentials,
    })
}

/// Parses `smtp://host[:port]` into a lower-case host (no brackets) and a port.
fn parse_relay(text: &str, tls: SmtpTls) -> Result<(String, u16), SmtpError> {
    let bad = |why: &str| {
        format!(
            "`capabilities.smtp.relay` {text:?} {why}; write it as smtp://host[:port], e.g. smtp://mail.example.com:587"
        )
    };
    if !text.starts_with("smtp://") {
        return Err(SmtpError::from(bad("does not start with smtp://")));
    }
    let origin = Origin::parse(text).map_err(|e| SmtpError {
        message: bad(match e {
            AddressError::InvalidPort => "has an invalid port",
            AddressError::InvalidHost => "has an invalid host",
            _ => "must be only a host and an optional port",
        }),
        source: Some(Box::new(e)),
    })?;
    let default_port = match tls {
        SmtpTls::None => 25,
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
    };
    let port = match origin.port {
        Some(0) => return Err(SmtpError::from(bad("has an invalid port"))),
        Some(port) => port,
        None => default_port,
    };
    let host = origin.host;
    if !(host.parse::<IpAddr>().is_ok() || is_domain(&host)) {
        return Err(SmtpError::from(bad("has an invalid host")));
    }
    Ok((host, port))
}

/// A plausible address `local@domain`: what a grant may name and a message may use. The sandbox
/// parses addresses fully (with the mail crate) before sending.
fn is_address(text: &str) -> bool {
    text.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && local.len() <= 64
            && local
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"@<>()[],;:\\\"".contains(&b))
            && is_domain(domain)
    })
}

/// A host name: dot-separated labels of letters, digits and `-`.
fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: serde_json::Value) -> Result<SmtpGrant, String> {
        parse(serde_json::from_value(json).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    #[test]
    fn a_grant_names_one_relay_its_senders_and_recipients() {
        let grant = entry(serde_json::json!({
            "relay": "smtp://127.0.0.1:2525",
            "tls": "none",
            "from": ["Notify@Example.com"],
            "allowedRecipients": ["*@example.com", "oncall@other.org"],
        }))
        .expect("valid");
        assert_eq!(grant.relay(), "smtp://127.0.0.1:2525");
        assert!(grant.is_relay("smtp://127.0.0.1:2525"));
        assert!(!grant.is_relay("smtp://127.0.0.1:2526"));
        assert!(!grant.is_relay("smtp://localhost:2525"));
        assert!(grant.allows_sender("notify@example.com"));
        assert!(!grant.allows_sender("ceo@example.com"));
        assert!(grant.allows_recipient("Reviewers@example.com"));
        assert!(grant.allows_recipient("oncall@other.org"));
        assert!(!grant.allows_recipient("someone@other.org"));
        assert!(!grant.allows_recipient("x@sub.example.com"));
        assert!(!grant.allows_recipient("@example.com"));
    }

    #[test]
    fn default_ports_follow_the_tls_mode() {
        let relay = |tls: &str| {
            entry(serde_json::json!({
                "relay": "smtp://mail.example.com", "tls": tls,
                "from": ["a@example.com"], "allowedRecipients": ["*"],
            }))
            .expect("valid")
            .port
        };
        assert_eq!(relay("none"), 25);
        assert_eq!(relay("starttls"), 587);
        assert_eq!(relay("tls"), 465);
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            (
                serde_json::json!({"relay": "http://x", "from": ["a@b.c"], "allowedRecipients": ["*"]}),
                "`capabilities.smtp.relay` \"http://x\" does not start with smtp://",
            ),
            (
                serde_json::json!({"relay": "smtp://x:0", "from": ["a@b.c"], "allowedRecipients": ["*"]}),
                "has an invalid port",
            ),
            (
                serde_json::json!({"relay": "smtp://x", "from": [], "allowedRecipients": ["*"]}),
                "`capabilities.smtp.from` lists no sender",
            ),
            (
                serde_json::json!({"relay": "smtp://x", "from": ["not an address"], "allowedRecipients": ["*"]}),
                "`capabilities.smtp.from` entry \"not an address\" is not an e-mail address",
            ),
            (
                serde_json::json!({"relay": "smtp://x", "from": ["a@b.c"], "allowedRecipients": ["*@"]}),
                "`capabilities.smtp.allowedRecipients` entry \"*@\"",
            ),
            (
                serde_json::json!({"relay": "smtp://x", "from": ["a@b.c"], "allowedRecipients": []}),
                "`capabilities.smtp.allowedRecipients` is empty",
            ),
            (
                serde_json::json!({"relay": "smtp://x", "from": ["a@b.c"], "allowedRecipients": ["*"], "username": "u"}),
                "needs both `username` and `passwordEnv`",
            ),
            (
                serde_json::json!({"relay": "smtp://x", "from": ["a@b.c"], "allowedRecipients": ["*"], "username": "u", "passwordEnv": "HOOKWASM_TEST_SURELY_UNSET"}),
                "`capabilities.smtp.passwordEnv` names HOOKWASM_TEST_SURELY_UNSET, which is not set",
            ),
        ];
        for (json, expected) in cases {
            let error = entry(json.clone()).expect_err("invalid");
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
