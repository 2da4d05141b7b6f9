//! Network addresses as an operator writes them (`scheme://host[:port]`): one parser, built on
//! the `url` crate, for `allowedHosts` entries and the SMTP relay, and the one place a request's
//! host is matched against `allowedHosts`.
//!
//! The config reads these and the sandbox enforces them; both depend on this module, neither on
//! the other.

use std::net::IpAddr;

use url::{Host, ParseError, Url};

/// An origin: a scheme, a lower-case host and the port if one was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme, lower case.
    pub scheme: String,
    /// A lower-case host name, or an IP literal without brackets.
    pub host: String,
    /// The port, when written and not the scheme's well-known default.
    pub port: Option<u16>,
}

/// What is wrong with an address; each caller words it for its own field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `scheme://` in front.
    #[error("has no scheme")]
    NoScheme,
    /// A path, query, fragment or user name beside the host and port, or no host at all.
    #[error("must be only a scheme, a host and an optional port")]
    NotAnOrigin,
    /// The port is not a number from 1 to 65535.
    #[error("has an invalid port")]
    InvalidPort,
    /// The host is not a valid host name or IP address.
    #[error("has an invalid host")]
    InvalidHost,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed). Special schemes (`http`,
    /// `https`) get the WHATWG host rules: lower case, IDNA, IPv4 normalised; for others the
    /// host is taken as written and lower-cased.
    pub fn parse(text: &str) -> Result<Origin, AddressError> {
        match Origin::parse_with_path(text)? {
            (origin, path) if path.is_empty() => Ok(origin),
            _ => Err(AddressError::NotAnOrigin),
        }
    }

    /// Parses `scheme://host[:port][/path]`: an origin and a base path under it (without its
    /// trailing `/`; empty for none), as for a server reached under a prefix.
    pub fn parse_with_path(text: &str) -> Result<(Origin, String), AddressError> {
        if !text.contains("://") {
            return Err(AddressError::NoScheme);
        }
        let url = Url::parse(text).map_err(|e| match e {
            ParseError::InvalidPort => AddressError::InvalidPort,
            ParseError::EmptyHost => AddressError::NotAnOrigin,
            ParseError::IdnaError
            | ParseError::InvalidIpv4Address
            | ParseError::InvalidIpv6Address
            | ParseError::InvalidDomainCharacter => AddressError::InvalidHost,
            _ => AddressError::NotAnOrigin,
        })?;
        let only_origin_and_path = url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none();
        if !only_origin_and_path {
            return Err(AddressError::NotAnOrigin);
        }
        let host = match url.host() {
            Some(Host::Domain(name)) if !name.is_empty() => name.to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(AddressError::NotAnOrigin),
        };
        let origin = Origin {
            scheme: url.scheme().to_owned(),
            host,
            port: url.port(),
        };
        Ok((origin, url.path().trim_end_matches('/').to_owned()))
    }

    /// `host[:port]` as written in a URL: an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }
}

/// One `allowedHosts` entry: `scheme://host[:port]`, where the host may start with `*.` to allow
/// every subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host name or IP literal (without brackets), or `*.suffix`.
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
}

/// Why an `allowedHosts` entry was refused: the entry as written and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`allowedHosts` entry {text:?} {why}; write it as scheme://host[:port], e.g. https://hooks.example.com"
)]
pub struct AllowedHostError {
    /// The entry as written.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl AllowedHost {
    /// Parses `scheme://host[:port]` with `http` or `https`.
    pub fn parse(text: &str) -> Result<AllowedHost, AllowedHostError> {
        let bad = |why: &'static str| AllowedHostError {
            text: text.to_owned(),
            why,
        };
        let origin = Origin::parse(text).map_err(|e| {
            bad(match e {
                AddressError::NoScheme => "has no scheme",
                AddressError::NotAnOrigin => "must be only a scheme, a host and an optional port",
                AddressError::InvalidPort => "has an invalid port",
                AddressError::InvalidHost => "has an invalid host",
            })
        })?;
        let default_port = match origin.scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("has a scheme other than http or https")),
        };
        let bare = origin.host.strip_prefix("*.").unwrap_or(&origin.host);
        if bare.is_empty() || bare.contains('*') {
            return Err(bad("may use `*` only as a leading `*.`"));
        }
        Ok(AllowedHost {
            port: origin.port.unwrap_or(default_port),
            scheme: origin.scheme,
            host: origin.host,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry. `host` is as an
    /// `http::Uri` gives it: any case, IPv6 literals in brackets.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            }
            // IP literals compare as addresses, so `::1` and `0:0::1` are one host.
            None => match (self.host.parse::<IpAddr>(), host.parse::<IpAddr>()) {
                (Ok(listed), Ok(asked)) => listed == asked,
                _ => self.host == host,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_parsed_once_for_every_scheme() {
        let origin = Origin::parse("HTTPS://Hooks.Example.com:8443/").expect("valid");
        assert_eq!(
            origin,
            Origin {
                scheme: "https".into(),
                host: "hooks.example.com".into(),
                port: Some(8443)
            }
        );
        let relay = Origin::parse("smtp://[::1]:2525").expect("valid");
        assert_eq!((relay.host.as_str(), relay.port), ("::1", Some(2525)));
        let relay = Origin::parse("smtp://Mail.Example.com").expect("valid");
        assert_eq!(
            (relay.host.as_str(), relay.port),
            ("mail.example.com", None)
        );
        assert_eq!(Origin::parse("https://a:443").expect("valid").port, None);
        for (text, error) in [
            ("hooks.example.com", AddressError::NoScheme),
            ("https://a/b", AddressError::NotAnOrigin),
            ("https://a?b", AddressError::NotAnOrigin),
            ("https://a#b", AddressError::NotAnOrigin),
            ("https://user@a", AddressError::NotAnOrigin),
            ("https://", AddressError::NotAnOrigin),
            ("smtp://", AddressError::NotAnOrigin),
            ("https://x:99999", AddressError::InvalidPort),
            ("smtp://x:port", AddressError::InvalidPort),
            ("https://exa mple.com", AddressError::InvalidHost),
            ("http://[::1", AddressError::InvalidHost),
        ] {
            assert_eq!(Origin::parse(text), Err(error), "{text}");
        }
    }

    #[test]
    fn allowed_hosts_match_scheme_host_and_port_exactly() {
        let exact = AllowedHost::parse("https://Hooks.Example.com").expect("valid");
        assert!(exact.allows("https", "hooks.example.com", 443));
        assert!(exact.allows("https", "HOOKS.example.com", 443));
        assert!(!exact.allows("http", "hooks.example.com", 443));
        assert!(!exact.allows("https", "hooks.example.com", 8443));
        assert!(!exact.allows("https", "evil-hooks.example.com", 443));
        let wildcard = AllowedHost::parse("https://*.example.com").expect("valid");
        assert!(wildcard.allows("https", "a.b.example.com", 443));
        assert!(!wildcard.allows("https", "example.com", 443));
        assert!(!wildcard.allows("https", "notexample.com", 443));
        let loopback = AllowedHost::parse("http://127.0.0.1:8080").expect("valid");
        assert!(loopback.allows("http", "127.0.0.1", 8080));
        let v6 = AllowedHost::parse("http://[::1]:9000").expect("valid");
        assert!(v6.allows("http", "[::1]", 9000));
        assert!(v6.allows("http", "[0:0::1]", 9000));
    }

    #[test]
    fn refused_entries_say_what_is_wrong() {
        for (bad, why) in [
            ("hooks.example.com", "has no scheme"),
            ("ftp://x", "has a scheme other than http or https"),
            (
                "https://a/b",
                "must be only a scheme, a host and an optional port",
            ),
            ("https://x:99999", "has an invalid port"),
            ("https://a.*.com", "may use `*` only as a leading `*.`"),
            ("https://*", "may use `*` only as a leading `*.`"),
        ] {
            let error = AllowedHost::parse(bad).expect_err(bad);
            assert_eq!(error.why, why, "{bad}");
        }
        assert_eq!(
            AllowedHost::parse("ftp://x").expect_err("ftp").to_string(),
            "`allowedHosts` entry \"ftp://x\" has a scheme other than http or https; write it as \
             scheme://host[:port], e.g. https://hooks.example.com"
        );
    }
}
