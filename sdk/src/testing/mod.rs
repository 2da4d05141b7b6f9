//! Unit-testing a handler natively, without the host: events built as the host builds them, the
//! config read as the host reads it (`init` included), log lines captured, outbound HTTP mocked.
//!
//! Only outside WebAssembly (`cargo test` on your machine): inside the component the host is
//! real.
//!
//! ```
//! use hookwasm_sdk::testing::{TestHost, events};
//! use hookwasm_sdk::{Event, Handler, Outcome, RefChange, RefUpdate, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct NoForcePush {
//!     #[serde(default)]
//!     branches: Vec<String>,
//! }
//!
//! impl Handler for NoForcePush {
//!     fn init(&self) -> Result<()> {
//!         if self.branches.is_empty() {
//!             return Err("name at least one branch".into());
//!         }
//!         Ok(())
//!     }
//!
//!     fn on_ref_update(&self, _: &Event, update: &RefUpdate) -> Result<Outcome> {
//!         let protected = self.branches.iter().any(|b| update.ref_name == format!("refs/heads/{b}"));
//!         if protected && update.change == RefChange::ForcePushed {
//!             hookwasm_sdk::info!("refusing {}", update.ref_name);
//!             return Ok(Outcome::deny("no force-push"));
//!         }
//!         Ok(Outcome::allow())
//!     }
//! }
//!
//! let host = TestHost::new();
//! // `null` config: `init` runs and refuses, as the host would.
//! let refused = host.load::<NoForcePush>(serde_json::Value::Null).err().unwrap();
//! assert_eq!(refused.to_string(), "name at least one branch");
//!
//! let gate: NoForcePush = host.load(serde_json::json!({"branches": ["main"]})).unwrap();
//! let event = events::ref_update("git.branch.force-pushed").ref_name("refs/heads/main").build();
//! assert!(gate.on_event(&event).unwrap().is_denied());
//! assert_eq!(host.logs()[0].message, "refusing refs/heads/main");
//! ```

mod attributes;
pub mod events;
mod from_json;
mod http;

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;

use crate::{Error, Event, Handler, Outcome, Result};

pub use crate::bindings::hookwasm::handler::host::Level;
pub use events::EventBuilder;
pub use http::{MockResponse, SentRequest};

/// One line the handler logged (with [`info!`](crate::info) and friends, or
/// [`crate::log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// What a [`TestHost`] holds for the thread it was made on.
#[derive(Debug, Default)]
pub(crate) struct State {
    config: RefCell<String>,
    logs: RefCell<Vec<LogLine>>,
    pub(crate) http: http::Mock,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<State>>> = const { RefCell::new(None) };
}

/// The test host of this thread, if one is alive.
pub(crate) fn current() -> Option<Rc<State>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Stands in for the hookwasm host on the current thread while it lives: it hands the handler
/// its config ([`crate::raw_config`]), keeps what it logs, and answers its HTTP requests from
/// the expectations you give it. Dropping it checks that every expected request was made.
///
/// Each `#[test]` runs on its own thread, so tests do not see each other's hosts.
#[derive(Debug)]
pub struct TestHost {
    state: Rc<State>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A host with no config, no log lines, no granted hosts and no expected requests.
    pub fn new() -> TestHost {
        let state = Rc::new(State {
            config: RefCell::new("null".to_owned()),
            ..State::default()
        });
        CURRENT.with(|current| *current.borrow_mut() = Some(state.clone()));
        TestHost { state }
    }

    /// Loads a handler the way the host does: the config (a `proxy.config.json` entry's
    /// `config`, `Value::Null` for none) becomes the handler's type, `null` and `{}` being the
    /// same, and `init` runs. An `Err` is what the host would refuse the load with.
    pub fn load<H: Handler>(&self, config: Value) -> Result<H> {
        let text = config.to_string();
        self.state.config.replace(text.clone());
        let handler: H = crate::config::parse(&text)?;
        handler.init()?;
        Ok(handler)
    }

    /// Runs one event the way the host does: the config is read again into a fresh handler
    /// (each event runs in a new instance), then `on_event`.
    pub fn on_event<H: Handler>(&self, config: Value, event: &Event) -> Result<Outcome> {
        let text = config.to_string();
        self.state.config.replace(text.clone());
        let handler: H = crate::config::parse(&text)?;
        handler.on_event(event)
    }

    /// Every line logged since this host was made, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.logs.borrow().clone()
    }

    /// Lets the handler send requests to `origin` (`scheme://host[:port]`, or `*.domain` after
    /// the scheme), as `capabilities.allowedHosts` does. Without it the host refuses them.
    pub fn grant(&self, origin: &str) -> &TestHost {
        self.state.http.grant(origin);
        self
    }

    /// Expects one request with this method to exactly this URL, and answers it with
    /// `response`. Expectations are met in any order; each answers once.
    pub fn expect_request(
        &self,
        method: crate::http::Method,
        url: &str,
        response: MockResponse,
    ) -> &TestHost {
        self.state.http.expect(method, url, response);
        self
    }

    /// Every request the handler sent (answered or not), in order.
    pub fn requests(&self) -> Vec<SentRequest> {
        self.state.http.sent()
    }

    /// Fails the test if an expected request was not made, or one that was not expected was.
    /// Dropping the host does the same.
    pub fn verify(&self) {
        if let Some(problems) = self.state.http.problems() {
            panic!("{problems}");
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            if current
                .as_ref()
                .is_some_and(|state| Rc::ptr_eq(state, &self.state))
            {
                *current = None;
            }
        });
        if !std::thread::panicking()
            && let Some(problems) = self.state.http.problems()
        {
            panic!("{problems}");
        }
    }
}

/// The config a live [`TestHost`] holds (what `raw_config()` answers natively).
pub(crate) fn config() -> Option<String> {
    current().map(|state| state.config.borrow().clone())
}

/// Keeps a log line when a [`TestHost`] is alive; says whether it did.
pub(crate) fn capture_log(level: Level, message: &str) -> bool {
    match current() {
        Some(state) => {
            state.logs.borrow_mut().push(LogLine {
                level,
                message: message.to_owned(),
            });
            true
        }
        None => false,
    }
}

impl Event {
    /// Turns a CloudEvent (structured JSON) into the [`Event`] a handler receives, with exactly
    /// the host's rules: the same required attributes, the same typed payloads, the same error
    /// messages, `time` filled in when missing. Natively only.
    pub fn from_json(value: Value) -> Result<Event> {
        from_json::event(value).map_err(Error::new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::http::{self, Method};
    use crate::{Payload, RefChange, RefKind};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Notify {
        #[serde(default)]
        url: String,
    }

    impl Handler for Notify {
        fn init(&self) -> Result<()> {
            http::origin(&self.url)?;
            Ok(())
        }

        fn on_event(&self, event: &Event) -> Result<Outcome> {
            crate::info!("config is {}", crate::raw_config());
            let response = http::Request::post(&self.url)
                .body(event.id.as_str())
                .send()?;
            Ok(Outcome::allow().annotate("status", response.status))
        }
    }

    #[test]
    fn load_reads_the_config_as_the_host_does_and_runs_init() {
        let host = TestHost::new();
        // `null` stands for `{}`: the missing url reaches `init`, which refuses it.
        let error = host.load::<Notify>(Value::Null).unwrap_err();
        assert!(error.to_string().starts_with("invalid URL"), "{error}");
        let error = host.load::<Notify>(json!({"url": 1})).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid handler config: invalid type: integer `1`"),
            "{error}"
        );
        host.load::<Notify>(json!({"url": "https://hooks.example.com/x"}))
            .unwrap();
        assert_eq!(
            crate::raw_config(),
            r#"{"url":"https://hooks.example.com/x"}"#
        );
    }

    #[test]
    fn requests_are_answered_from_expectations_and_recorded() {
        let host = TestHost::new();
        host.grant("https://hooks.example.com").expect_request(
            Method::Post,
            "https://hooks.example.com/x",
            MockResponse::status(202).body("queued"),
        );
        let config = json!({"url": "https://hooks.example.com/x"});
        let event = events::custom("user.created", json!({})).id("u-1").build();
        let outcome = host.on_event::<Notify>(config, &event).unwrap();
        assert_eq!(outcome.annotation("status"), Some("202"));
        let sent = host.requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].text(), "u-1");
        assert_eq!(
            sent[0].header("content-length"),
            None,
            "as the handler set them"
        );
        assert_eq!(
            host.logs(),
            [LogLine {
                level: Level::Info,
                message: r#"config is {"url":"https://hooks.example.com/x"}"#.to_owned()
            }]
        );
        host.verify();
    }

    #[test]
    fn ungranted_and_unexpected_requests_fail_as_the_host_would() {
        let host = TestHost::new();
        let error = http::get("https://elsewhere.example.com/").unwrap_err();
        assert_eq!(
            error.to_string(),
            "request to https://elsewhere.example.com refused by the host: not granted in \
             capabilities.allowedHosts (in a test: TestHost::grant(\"https://elsewhere.example.com\"))"
        );
        host.grant("https://*.example.com");
        let error = http::get("https://a.example.com/y").unwrap_err();
        assert_eq!(
            error.to_string(),
            "request to https://a.example.com failed: the test expected no GET https://a.example.com/y"
        );
        host.expect_request(
            Method::Get,
            "https://b.example.com/",
            MockResponse::fail("connection refused"),
        );
        let error = http::get("https://b.example.com/").unwrap_err();
        assert_eq!(
            error.to_string(),
            "request to https://b.example.com failed: connection refused"
        );
        let unmet = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.verify()));
        let message = *unmet.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(
            message,
            "TestHost: GET https://a.example.com/y was sent but not expected"
        );
        // (Dropping `host` would panic the same way: forget it instead.)
        std::mem::forget(host);
        CURRENT.with(|current| current.borrow_mut().take());
    }

    #[test]
    fn an_expected_request_never_sent_fails_the_test_when_the_host_is_dropped() {
        let dropped = std::panic::catch_unwind(|| {
            let host = TestHost::new();
            host.expect_request(Method::Get, "https://x.test/", MockResponse::status(200));
        });
        let message = *dropped.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(
            message,
            "TestHost: expected GET https://x.test/ was not sent"
        );
    }

    #[test]
    fn builders_make_what_the_host_makes() {
        let event = events::ref_update("git.tag.deleted").build();
        let Payload::RefUpdate(update) = &event.payload else {
            panic!("a ref update")
        };
        assert_eq!(
            (update.kind, update.change),
            (RefKind::Tag, RefChange::Deleted)
        );
        assert_eq!(update.after, "0".repeat(40));
        let json: Value = serde_json::from_str(&event.json).unwrap();
        assert_eq!(json["data"]["ref"], "refs/tags/v1.0.0");

        let action = events::proxy_action("pull.error")
            .error("boom")
            .step("checkRepo", false, Some("no such repo"))
            .build();
        let Payload::ProxyAction(action) = &action.payload else {
            panic!("a proxy action")
        };
        assert_eq!(action.error.as_deref(), Some("boom"));
        assert_eq!(action.steps[0].message.as_deref(), Some("no such repo"));

        let rejected = events::push_rejected()
            .rejected(&["refs/heads/x"], "no")
            .build();
        assert!(
            matches!(&rejected.payload, Payload::PushRejected(r) if r.refs == ["refs/heads/x"])
        );
    }

    #[test]
    fn from_json_refuses_what_the_host_refuses() {
        let error = Event::from_json(json!({"specversion": "1.0", "id": "x", "source": "s", "type": "git.branch.renamed", "data": {}}))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown event type \"git.branch.renamed\""),
            "{error}"
        );
        let event = Event::from_json(
            json!({"specversion": "1.0", "id": "x", "source": "s", "type": "user.created"}),
        )
        .unwrap();
        assert_eq!(event.payload, Payload::Custom("null".into()));
        assert!(
            event.time.parse::<jiff::Timestamp>().is_ok(),
            "time filled in"
        );
        assert!(event.json.contains(&event.time));
    }

    #[test]
    #[should_panic(expected = "create a hookwasm_sdk::testing::TestHost first")]
    fn raw_config_without_a_test_host_says_what_to_do() {
        crate::raw_config();
    }
}
