//! Events for tests, one builder per payload kind. Each builds the CloudEvent JSON a producer
//! would send, with plausible defaults, and turns it into an [`Event`] with the host's own
//! rules ([`Event::from_json`]), so `event.json` and the typed payload agree as in the host.
//!
//! ```
//! use hookwasm_sdk::testing::events;
//! use hookwasm_sdk::{Payload, RefChange};
//!
//! let event = events::ref_update("git.branch.force-pushed")
//!     .ref_name("refs/heads/main")
//!     .pusher("mallory")
//!     .build();
//! let Payload::RefUpdate(update) = &event.payload else { unreachable!() };
//! assert_eq!(update.change, RefChange::ForcePushed);
//! assert_eq!(update.pusher.username, "mallory");
//! ```

use serde_json::{Value, json};

use crate::Event;

/// A CloudEvent under construction; [`build`](EventBuilder::build) makes it an [`Event`].
#[derive(Debug, Clone)]
pub struct EventBuilder {
    json: Value,
}

/// A `git.branch.*`, `git.tag.*` or `git.ref.*` event: `pushId`, `repository`, `pusher`, `ref`,
/// `before` and `after` are filled in (a branch update of `refs/heads/main` by `alice`).
pub fn ref_update(event_type: &str) -> EventBuilder {
    let ref_name = if event_type.starts_with("git.tag.") {
        "refs/tags/v1.0.0"
    } else if event_type.starts_with("git.ref.") {
        "refs/notes/commits"
    } else {
        "refs/heads/main"
    };
    let zeros = "0".repeat(40);
    let (before, after) = if event_type.ends_with(".created") {
        (zeros, "2".repeat(40))
    } else if event_type.ends_with(".deleted") {
        ("1".repeat(40), zeros)
    } else {
        ("1".repeat(40), "2".repeat(40))
    };
    EventBuilder::new(
        event_type,
        json!({
            "pushId": "push-1",
            "repository": repository(),
            "pusher": {"username": "alice", "email": "alice@example.com"},
            "ref": ref_name,
            "before": before,
            "after": after,
        }),
    )
}

/// A `push.*` or `pull.*` event (a git proxy's action): `actionId`, `repository`, `user` and
/// `branch` are filled in.
pub fn proxy_action(event_type: &str) -> EventBuilder {
    EventBuilder::new(
        event_type,
        json!({
            "actionId": "action-1",
            "repository": repository(),
            "user": {"username": "alice", "email": "alice@example.com"},
            "branch": "refs/heads/main",
            "commitFrom": "1".repeat(40),
            "commitTo": "2".repeat(40),
        }),
    )
}

/// A `git.push.rejected` event: a push of `refs/heads/main` refused by a gate.
pub fn push_rejected() -> EventBuilder {
    EventBuilder::new(
        "git.push.rejected",
        json!({
            "pushId": "push-1",
            "repository": repository(),
            "pusher": {"username": "alice"},
            "refs": ["refs/heads/main"],
            "reason": "protect-main: force-push to refs/heads/main is not allowed",
        }),
    )
}

/// A custom event (any type outside `push.`, `pull.` and `git.`) carrying `data`.
pub fn custom(event_type: &str, data: Value) -> EventBuilder {
    EventBuilder::new(event_type, data)
}

fn repository() -> Value {
    json!({"url": "https://git.example.com/acme/widgets.git", "project": "acme", "name": "widgets"})
}

impl EventBuilder {
    fn new(event_type: &str, data: Value) -> EventBuilder {
        EventBuilder {
            json: json!({
                "specversion": "1.0",
                "id": "evt-1",
                "source": "test",
                "type": event_type,
                "time": "2026-01-01T00:00:00Z",
                "data": data,
            }),
        }
    }

    fn attribute(mut self, name: &str, value: Value) -> EventBuilder {
        self.json[name] = value;
        self
    }

    /// Sets a field of `data` (any JSON), e.g. `.data("pushOptions", json!(["ci.skip"]))`.
    pub fn data(mut self, field: &str, value: impl Into<Value>) -> EventBuilder {
        self.json["data"][field] = value.into();
        self
    }

    /// The CloudEvents `id`.
    pub fn id(self, id: &str) -> EventBuilder {
        self.attribute("id", id.into())
    }

    /// The CloudEvents `source`.
    pub fn source(self, source: &str) -> EventBuilder {
        self.attribute("source", source.into())
    }

    /// The CloudEvents `time` (RFC 3339).
    pub fn time(self, time: &str) -> EventBuilder {
        self.attribute("time", time.into())
    }

    /// The CloudEvents `subject`.
    pub fn subject(self, subject: &str) -> EventBuilder {
        self.attribute("subject", subject.into())
    }

    /// The repository's `url`, `project` and `name`.
    pub fn repository(self, url: &str, project: &str, name: &str) -> EventBuilder {
        self.data(
            "repository",
            json!({"url": url, "project": project, "name": name}),
        )
    }

    /// A ref update's `ref` (full name, e.g. `refs/heads/main`).
    pub fn ref_name(self, ref_name: &str) -> EventBuilder {
        self.data("ref", ref_name)
    }

    /// A ref update's or rejected push's `pusher` (no e-mail).
    pub fn pusher(self, username: &str) -> EventBuilder {
        self.data("pusher", json!({"username": username}))
    }

    /// A ref update's `before` and `after` object ids.
    pub fn commits(self, before: &str, after: &str) -> EventBuilder {
        self.data("before", before).data("after", after)
    }

    /// A ref update's `pushOptions` (`git push -o`).
    pub fn push_options(self, options: &[&str]) -> EventBuilder {
        self.data("pushOptions", json!(options))
    }

    /// A proxy action's `branch` (full ref name).
    pub fn branch(self, branch: &str) -> EventBuilder {
        self.data("branch", branch)
    }

    /// A proxy action's `user` (no e-mail).
    pub fn user(self, username: &str) -> EventBuilder {
        self.data("user", json!({"username": username}))
    }

    /// A proxy action's `error`.
    pub fn error(self, error: &str) -> EventBuilder {
        self.data("error", error)
    }

    /// Adds a step to a proxy action's `steps`.
    pub fn step(mut self, name: &str, passed: bool, message: Option<&str>) -> EventBuilder {
        let step = json!({"name": name, "passed": passed, "message": message});
        match self.json["data"]["steps"].as_array_mut() {
            Some(steps) => steps.push(step),
            None => self.json["data"]["steps"] = json!([step]),
        }
        self
    }

    /// A rejected push's `refs` and `reason`.
    pub fn rejected(self, refs: &[&str], reason: &str) -> EventBuilder {
        self.data("refs", json!(refs)).data("reason", reason)
    }

    /// The CloudEvent as JSON, as a producer would send it (e.g. to write an `event.json`).
    pub fn json(&self) -> Value {
        self.json.clone()
    }

    /// The event a handler receives.
    ///
    /// # Panics
    ///
    /// When the host would refuse the event (say, a `data` field set to the wrong type), with
    /// the host's message.
    pub fn build(self) -> Event {
        match Event::from_json(self.json) {
            Ok(event) => event,
            Err(e) => panic!("the host would refuse this event: {e}"),
        }
    }
}
