//! Helpers for reading events: the generated types are plain data, these answer the questions
//! handlers keep asking (which ref? which repository? who?).

use std::fmt;

use serde::de::DeserializeOwned;

use crate::{
    Error, Event, Operation, Payload, Phase, RefChange, RefKind, Repository, Result, User,
};

impl Event {
    /// Deserialises a custom event's `data` (any type outside the built-in taxonomy, e.g.
    /// `user.created`). Built-in types have typed payloads: match on `event.payload` instead.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.payload {
            Payload::Custom(data) => serde_json::from_str(data).map_err(|error| {
                Error::new(format!(
                    "cannot read the data of event {} ({}): {error}",
                    self.id, self.type_
                ))
            }),
            other => Err(Error::new(format!(
                "event {} ({}) has a typed {} payload, not JSON data",
                self.id,
                self.type_,
                other.kind()
            ))),
        }
    }

    /// The full ref name the event is about: a ref update's ref, or a proxy action's branch.
    /// `None` for rejected pushes (they may cover several refs: see `PushRejected::refs`),
    /// custom events, and proxy actions without a branch.
    pub fn ref_name(&self) -> Option<&str> {
        match &self.payload {
            Payload::ProxyAction(action) => action.branch.as_deref(),
            Payload::RefUpdate(update) => Some(&update.ref_name),
            Payload::PushRejected(_) | Payload::Custom(_) => None,
        }
    }

    /// The repository the event is about, for every built-in payload.
    pub fn repository(&self) -> Option<&Repository> {
        match &self.payload {
            Payload::ProxyAction(action) => Some(&action.repository),
            Payload::RefUpdate(update) => Some(&update.repository),
            Payload::PushRejected(rejected) => Some(&rejected.repository),
            Payload::Custom(_) => None,
        }
    }

    /// Who is behind the event: a proxy action's user or a push's pusher.
    pub fn user(&self) -> Option<&User> {
        match &self.payload {
            Payload::ProxyAction(action) => action.user.as_ref(),
            Payload::RefUpdate(update) => Some(&update.pusher),
            Payload::PushRejected(rejected) => Some(&rejected.pusher),
            Payload::Custom(_) => None,
        }
    }
}

impl Payload {
    /// The payload's WIT case name: `proxy-action`, `ref-update`, `push-rejected` or `custom`.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::ProxyAction(_) => "proxy-action",
            Payload::RefUpdate(_) => "ref-update",
            Payload::PushRejected(_) => "push-rejected",
            Payload::Custom(_) => "custom",
        }
    }
}

/// `as_str` (the WIT case name, as it appears in event types) and `Display` for a generated enum.
macro_rules! wit_names {
    ($ty:ident { $($case:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The case's WIT name, as it appears in event types (e.g. `git.branch.force-pushed`).
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($ty::$case => $name,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wit_names!(Operation { Push => "push", Pull => "pull" });
wit_names!(Phase {
    Started => "started",
    Completed => "completed",
    Error => "error",
    PermissionDenied => "permission-denied",
    PendingReview => "pending-review",
});
wit_names!(RefKind { Branch => "branch", Tag => "tag", Other => "other" });
wit_names!(RefChange {
    Created => "created",
    Updated => "updated",
    ForcePushed => "force-pushed",
    Deleted => "deleted",
});

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::{ProxyAction, PushRejected, RefUpdate};

    fn repository() -> Repository {
        Repository {
            url: "https://git.example.com/acme/widgets.git".into(),
            project: "acme".into(),
            name: "widgets".into(),
        }
    }

    fn user(name: &str) -> User {
        User {
            username: name.into(),
            email: None,
        }
    }

    fn event(r#type: &str, payload: Payload) -> Event {
        Event {
            id: "evt-1".into(),
            source: "test".into(),
            type_: r#type.into(),
            time: "2025-01-01T00:00:00Z".into(),
            subject: None,
            payload,
            json: String::new(),
        }
    }

    fn ref_update() -> Payload {
        Payload::RefUpdate(RefUpdate {
            kind: RefKind::Branch,
            change: RefChange::ForcePushed,
            push_id: "push-1".into(),
            repository: repository(),
            pusher: user("alice"),
            ref_name: "refs/heads/main".into(),
            before: "a".repeat(40),
            after: "b".repeat(40),
            push_options: Vec::new(),
        })
    }

    fn proxy_action(branch: Option<&str>, user: Option<User>) -> Payload {
        Payload::ProxyAction(ProxyAction {
            operation: Operation::Push,
            phase: Phase::PermissionDenied,
            action_id: "action-1".into(),
            repository: repository(),
            user,
            branch: branch.map(Into::into),
            commit_from: None,
            commit_to: None,
            error: None,
            steps: Vec::new(),
        })
    }

    #[test]
    fn ref_update_accessors() {
        let event = event("git.branch.force-pushed", ref_update());
        assert_eq!(event.ref_name(), Some("refs/heads/main"));
        assert_eq!(event.repository().map(|r| r.name.as_str()), Some("widgets"));
        assert_eq!(event.user().map(|u| u.username.as_str()), Some("alice"));
        assert_eq!(event.payload.kind(), "ref-update");
    }

    #[test]
    fn proxy_action_accessors() {
        let event = event(
            "push.permission-denied",
            proxy_action(Some("refs/heads/dev"), Some(user("bob"))),
        );
        assert_eq!(event.ref_name(), Some("refs/heads/dev"));
        assert_eq!(event.user().map(|u| u.username.as_str()), Some("bob"));
        let event = event_without_branch();
        assert_eq!(event.ref_name(), None);
        assert_eq!(event.user(), None);
    }

    fn event_without_branch() -> Event {
        event("pull.started", proxy_action(None, None))
    }

    #[test]
    fn push_rejected_has_no_single_ref() {
        let event = event(
            "git.push.rejected",
            Payload::PushRejected(PushRejected {
                push_id: "push-1".into(),
                repository: repository(),
                pusher: user("carol"),
                refs: vec!["refs/heads/main".into(), "refs/heads/dev".into()],
                reason: "denied".into(),
            }),
        );
        assert_eq!(event.ref_name(), None);
        assert_eq!(event.user().map(|u| u.username.as_str()), Some("carol"));
        assert_eq!(event.payload.kind(), "push-rejected");
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct UserCreated {
        login: String,
    }

    #[test]
    fn custom_data_deserialises() {
        let event = event(
            "user.created",
            Payload::Custom(r#"{"login": "dave"}"#.into()),
        );
        assert_eq!(
            event.data::<UserCreated>().unwrap(),
            UserCreated {
                login: "dave".into()
            }
        );
        assert_eq!(event.repository(), None);
        assert_eq!(event.ref_name(), None);
        let error = event.data::<Vec<u8>>().unwrap_err();
        assert_eq!(
            error.message(),
            "cannot read the data of event evt-1 (user.created): invalid type: map, expected a sequence at line 1 column 0"
        );
    }

    #[test]
    fn typed_payloads_have_no_json_data() {
        let error = event("git.branch.force-pushed", ref_update())
            .data::<serde_json::Value>()
            .unwrap_err();
        assert_eq!(
            error.message(),
            "event evt-1 (git.branch.force-pushed) has a typed ref-update payload, not JSON data"
        );
    }

    #[test]
    fn enum_names_match_the_wit() {
        assert_eq!(RefChange::ForcePushed.to_string(), "force-pushed");
        assert_eq!(Phase::PermissionDenied.as_str(), "permission-denied");
        assert_eq!(Phase::PendingReview.as_str(), "pending-review");
        assert_eq!(RefKind::Other.as_str(), "other");
        assert_eq!(Operation::Pull.to_string(), "pull");
    }
}
