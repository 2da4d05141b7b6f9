//! The [`TestHost`](super::TestHost)'s stand-in for outbound HTTP: the grants a handler's entry
//! would have, the requests a test expects, and what each is answered with.

use std::cell::RefCell;

use crate::http::{Method, Request, Response};
use crate::{Error, Result};

/// What a mocked request is answered with: a response, or a failure of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockResponse(Result<Response, String>);

impl MockResponse {
    /// An answer with this status and no body.
    pub fn status(status: u16) -> MockResponse {
        MockResponse(Ok(Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }))
    }

    /// Adds a header to the answer (names are kept in lower case, as the host gives them).
    pub fn header(mut self, name: &str, value: &str) -> MockResponse {
        if let Ok(response) = &mut self.0 {
            response
                .headers
                .push((name.to_ascii_lowercase(), value.to_owned()));
        }
        self
    }

    /// Sets the answer's body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> MockResponse {
        if let Ok(response) = &mut self.0 {
            response.body = body.into();
        }
        self
    }

    /// No answer: the request fails as a network failure does, e.g. `"connection refused"`.
    /// The handler sees `request to <origin> failed: <why>`.
    pub fn fail(why: &str) -> MockResponse {
        MockResponse(Err(why.to_owned()))
    }
}

/// A request the handler sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// Its method.
    pub method: Method,
    /// Its URL, as the handler gave it.
    pub url: String,
    /// Its headers, as the handler set them.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl SentRequest {
    /// The first value of a header, whatever the case of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug)]
struct Expected {
    method: Method,
    url: String,
    response: MockResponse,
    used: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Mock {
    granted: RefCell<Vec<String>>,
    expected: RefCell<Vec<Expected>>,
    sent: RefCell<Vec<SentRequest>>,
    unexpected: RefCell<Vec<String>>,
}

impl Mock {
    pub(super) fn grant(&self, origin: &str) {
        self.granted
            .borrow_mut()
            .push(origin.trim_end_matches('/').to_ascii_lowercase());
    }

    pub(super) fn expect(&self, method: Method, url: &str, response: MockResponse) {
        self.expected.borrow_mut().push(Expected {
            method,
            url: url.to_owned(),
            response,
            used: false,
        });
    }

    pub(super) fn sent(&self) -> Vec<SentRequest> {
        self.sent.borrow().clone()
    }

    /// Unmet expectations and unexpected requests, as one message.
    pub(super) fn problems(&self) -> Option<String> {
        let mut problems: Vec<String> = self
            .expected
            .borrow()
            .iter()
            .filter(|e| !e.used)
            .map(|e| format!("expected {} {} was not sent", e.method, e.url))
            .collect();
        problems.extend(
            self.unexpected
                .borrow()
                .iter()
                .map(|r| format!("{r} was sent but not expected")),
        );
        (!problems.is_empty()).then(|| format!("TestHost: {}", problems.join("; ")))
    }

    /// Whether `origin` (`scheme://host[:port]`, lower case) is granted, as `allowedHosts`
    /// matches it: exactly, or by a `scheme://*.domain` entry.
    fn granted(&self, origin: &str) -> bool {
        self.granted.borrow().iter().any(|grant| {
            grant == origin
                || grant.split_once("://*.").is_some_and(|(scheme, domain)| {
                    origin
                        .strip_prefix(scheme)
                        .and_then(|rest| rest.strip_prefix("://"))
                        .is_some_and(|host| host.ends_with(&format!(".{domain}")))
                })
        })
    }

    /// Answers a request as the host would, from the test's expectations.
    pub(crate) fn send(&self, request: &Request, origin: &str) -> Result<Response> {
        self.sent.borrow_mut().push(SentRequest {
            method: request.method(),
            url: request.url().to_owned(),
            headers: request.headers().to_vec(),
            body: request.body_bytes().to_vec(),
        });
        if !self.granted(&origin.to_ascii_lowercase()) {
            return Err(Error::new(format!(
                "request to {origin} refused by the host: not granted in capabilities.allowedHosts \
                 (in a test: TestHost::grant(\"{origin}\"))"
            )));
        }
        let mut expected = self.expected.borrow_mut();
        let Some(found) = expected
            .iter_mut()
            .find(|e| !e.used && e.method == request.method() && e.url == request.url())
        else {
            let what = format!("{} {}", request.method(), request.url());
            self.unexpected.borrow_mut().push(what.clone());
            return Err(Error::new(format!(
                "request to {origin} failed: the test expected no {what}"
            )));
        };
        found.used = true;
        found
            .response
            .0
            .clone()
            .map_err(|why| Error::new(format!("request to {origin} failed: {why}")))
    }
}
