//! A gate that refuses force-pushes to, and deletions of, protected refs.
//!
//! It judges `git.*` ref-update events (from the git hooks), which say exactly what a push did
//! to each ref. Everything else is allowed: GitProxy's `push.*` actions do not say whether a
//! push rewrites history, so there is nothing to judge there. Creating a protected ref and
//! fast-forwarding a protected branch are allowed too.
//!
//! Tags and other non-branch refs are protected only by patterns that name them explicitly
//! (`refs/tags/v*`): a short pattern like `main` means `refs/heads/main`. Git has no
//! fast-forward for them, so any move of a protected tag counts as a force-push.

mod pattern;

use hookwasm_sdk::{Event, Handler, Outcome, RefChange, RefKind, RefUpdate, Result};
use serde::Deserialize;

pub use crate::pattern::Pattern;

/// The gate's config, e.g.
/// `{"protected": ["main", "release/*", "refs/tags/v*"], "allowDeletion": false}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BranchProtection {
    /// The refs to protect; see [`Pattern`] for the syntax.
    protected: Vec<Pattern>,
    /// Let force-pushes (and moves of protected tags) through; only deletions are refused.
    #[serde(default)]
    allow_force_push: bool,
    /// Let deletions through; only force-pushes are refused.
    #[serde(default)]
    allow_deletion: bool,
}

impl Handler for BranchProtection {
    fn init(&self) -> Result<()> {
        if self.protected.is_empty() {
            return Err(
                "`protected` is empty: list the branches to protect, e.g. [\"main\", \"release/*\"]"
                    .into(),
            );
        }
        if self.allow_force_push && self.allow_deletion {
            return Err(
                "`allowForcePush` and `allowDeletion` are both true, so this gate \
                 would refuse nothing: set one of them to false"
                    .into(),
            );
        }
        Ok(())
    }

    fn on_ref_update(&self, _event: &Event, update: &RefUpdate) -> Result<Outcome> {
        let Some(what) = self.refused_change(update) else {
            return Ok(Outcome::allow());
        };
        let Some(rule) = self.rule_for(&update.ref_name) else {
            return Ok(Outcome::allow());
        };
        let reason = format!(
            "{what} {} is not allowed (branch-protection rule \"{rule}\")",
            update.ref_name
        );
        Ok(Outcome::deny(reason)
            .annotate("rule", rule)
            .annotate("ref", &update.ref_name)
            .annotate("change", update.change))
    }
}

impl BranchProtection {
    /// The first pattern protecting this ref.
    pub fn rule_for(&self, ref_name: &str) -> Option<&Pattern> {
        self.protected
            .iter()
            .find(|pattern| pattern.matches(ref_name))
    }

    /// How a deny reason names the change, when this config refuses it on a protected ref.
    fn refused_change(&self, update: &RefUpdate) -> Option<String> {
        let noun = match update.kind {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Other => "ref",
        };
        // Git has no fast-forward for tags and other refs: any move of one rewrites it.
        let rewrite = update.change == RefChange::ForcePushed
            || (update.change == RefChange::Updated && update.kind != RefKind::Branch);
        if update.change == RefChange::Deleted && !self.allow_deletion {
            Some(format!("deleting protected {noun}"))
        } else if rewrite && !self.allow_force_push {
            Some(match update.kind {
                RefKind::Branch => "force-push to protected branch".to_owned(),
                _ => format!("moving protected {noun}"),
            })
        } else {
            None
        }
    }
}

hookwasm_sdk::export_handler!(BranchProtection);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use hookwasm_sdk::{Operation, Payload, Phase, ProxyAction, Repository, User, Verdict};

    use super::*;

    fn gate(config: &str) -> BranchProtection {
        serde_json::from_str(config).unwrap()
    }

    fn repository() -> Repository {
        Repository {
            url: "https://git.example.com/acme/widgets.git".into(),
            project: "acme".into(),
            name: "widgets".into(),
        }
    }

    fn ref_event(kind: RefKind, change: RefChange, ref_name: &str) -> Event {
        let noun = match kind {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Other => "ref",
        };
        Event {
            id: "evt-1".into(),
            source: "test".into(),
            type_: format!("git.{noun}.{change}"),
            time: "2025-01-02T03:04:05Z".into(),
            subject: None,
            json: String::new(),
            payload: Payload::RefUpdate(RefUpdate {
                kind,
                change,
                push_id: "push-1".into(),
                repository: repository(),
                pusher: User {
                    username: "alice".into(),
                    email: None,
                },
                ref_name: ref_name.into(),
                before: "a".repeat(40),
                after: "b".repeat(40),
                push_options: Vec::new(),
            }),
        }
    }

    fn judge(gate: &BranchProtection, kind: RefKind, change: RefChange, ref_name: &str) -> Outcome {
        gate.on_event(&ref_event(kind, change, ref_name)).unwrap()
    }

    #[test]
    fn force_push_to_a_protected_branch_is_denied() {
        let gate = gate(r#"{"protected": ["refs/heads/main", "release/*"]}"#);
        let outcome = judge(
            &gate,
            RefKind::Branch,
            RefChange::ForcePushed,
            "refs/heads/main",
        );
        assert_eq!(
            outcome.verdict,
            Verdict::Deny(
                "force-push to protected branch refs/heads/main is not allowed \
                 (branch-protection rule \"refs/heads/main\")"
                    .into()
            )
        );
        assert_eq!(outcome.annotation("rule"), Some("refs/heads/main"));
        assert_eq!(outcome.annotation("ref"), Some("refs/heads/main"));
        assert_eq!(outcome.annotation("change"), Some("force-pushed"));

        let outcome = judge(
            &gate,
            RefKind::Branch,
            RefChange::ForcePushed,
            "refs/heads/release/2.0",
        );
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "force-push to protected branch refs/heads/release/2.0 is not allowed \
                 (branch-protection rule \"release/*\")"
            )
        );
    }

    #[test]
    fn deleting_a_protected_branch_is_denied() {
        let gate = gate(r#"{"protected": ["main"]}"#);
        let outcome = judge(
            &gate,
            RefKind::Branch,
            RefChange::Deleted,
            "refs/heads/main",
        );
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "deleting protected branch refs/heads/main is not allowed \
                 (branch-protection rule \"main\")"
            )
        );
        assert_eq!(outcome.annotation("change"), Some("deleted"));
    }

    #[test]
    fn creation_and_fast_forward_are_allowed() {
        let gate = gate(r#"{"protected": ["main"]}"#);
        for change in [RefChange::Created, RefChange::Updated] {
            let outcome = judge(&gate, RefKind::Branch, change, "refs/heads/main");
            assert_eq!(outcome, Outcome::allow(), "{change}");
        }
    }

    #[test]
    fn unprotected_refs_are_allowed() {
        let gate = gate(r#"{"protected": ["main", "release/*"]}"#);
        for ref_name in [
            "refs/heads/dev",
            "refs/heads/release/1/hotfix",
            "refs/heads/mainline",
        ] {
            let outcome = judge(&gate, RefKind::Branch, RefChange::ForcePushed, ref_name);
            assert_eq!(outcome, Outcome::allow(), "{ref_name}");
        }
    }

    #[test]
    fn tags_are_protected_only_when_named() {
        let gate_branches = gate(r#"{"protected": ["**"]}"#);
        let outcome = judge(
            &gate_branches,
            RefKind::Tag,
            RefChange::Deleted,
            "refs/tags/v1",
        );
        assert_eq!(outcome, Outcome::allow());

        let gate_tags = gate(r#"{"protected": ["refs/tags/v*"]}"#);
        let outcome = judge(&gate_tags, RefKind::Tag, RefChange::Deleted, "refs/tags/v1");
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "deleting protected tag refs/tags/v1 is not allowed (branch-protection rule \"refs/tags/v*\")"
            )
        );
        let outcome = judge(&gate_tags, RefKind::Tag, RefChange::Updated, "refs/tags/v1");
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "moving protected tag refs/tags/v1 is not allowed (branch-protection rule \"refs/tags/v*\")"
            )
        );
        let outcome = judge(&gate_tags, RefKind::Tag, RefChange::Created, "refs/tags/v1");
        assert_eq!(outcome, Outcome::allow());
    }

    #[test]
    fn other_refs_count_any_move_as_a_rewrite() {
        let gate = gate(r#"{"protected": ["refs/notes/**"]}"#);
        let outcome = judge(
            &gate,
            RefKind::Other,
            RefChange::Updated,
            "refs/notes/commits",
        );
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "moving protected ref refs/notes/commits is not allowed (branch-protection rule \"refs/notes/**\")"
            )
        );
    }

    #[test]
    fn allow_flags_let_one_kind_through() {
        let gate_force = gate(r#"{"protected": ["main"], "allowForcePush": true}"#);
        let outcome = judge(
            &gate_force,
            RefKind::Branch,
            RefChange::ForcePushed,
            "refs/heads/main",
        );
        assert_eq!(outcome, Outcome::allow());
        let outcome = judge(
            &gate_force,
            RefKind::Branch,
            RefChange::Deleted,
            "refs/heads/main",
        );
        assert!(outcome.is_denied());

        let gate_delete = gate(r#"{"protected": ["main"], "allowDeletion": true}"#);
        let outcome = judge(
            &gate_delete,
            RefKind::Branch,
            RefChange::Deleted,
            "refs/heads/main",
        );
        assert_eq!(outcome, Outcome::allow());
        let outcome = judge(
            &gate_delete,
            RefKind::Branch,
            RefChange::ForcePushed,
            "refs/heads/main",
        );
        assert!(outcome.is_denied());
    }

    #[test]
    fn proxy_actions_are_allowed() {
        let gate = gate(r#"{"protected": ["main"]}"#);
        let event = Event {
            id: "evt-2".into(),
            source: "test".into(),
            type_: "push.started".into(),
            time: "2025-01-02T03:04:05Z".into(),
            subject: None,
            json: String::new(),
            payload: Payload::ProxyAction(ProxyAction {
                operation: Operation::Push,
                phase: Phase::Started,
                action_id: "action-1".into(),
                repository: repository(),
                user: None,
                branch: Some("refs/heads/main".into()),
                commit_from: None,
                commit_to: None,
                error: None,
                steps: Vec::new(),
            }),
        };
        assert_eq!(gate.on_event(&event).unwrap(), Outcome::allow());
    }

    #[test]
    fn bad_configs_are_refused() {
        let init_error = |config: &str| gate(config).init().unwrap_err().into_message();
        assert_eq!(
            init_error(r#"{"protected": []}"#),
            "`protected` is empty: list the branches to protect, e.g. [\"main\", \"release/*\"]"
        );
        assert!(
            init_error(r#"{"protected": ["main"], "allowForcePush": true, "allowDeletion": true}"#)
                .contains("would refuse nothing")
        );

        let parse_error = |config: &str| {
            serde_json::from_str::<BranchProtection>(config)
                .unwrap_err()
                .to_string()
        };
        assert!(parse_error(r#"{}"#).starts_with("missing field `protected`"));
        assert!(
            parse_error(r#"{"protected": ["main"], "allowForcepush": true}"#)
                .starts_with("unknown field `allowForcepush`")
        );
        assert!(
            parse_error(r#"{"protected": ["release**"]}"#)
                .starts_with("pattern \"release**\" uses `**` inside a segment")
        );
        assert!(parse_error(r#"{"protected": "main"}"#).starts_with("invalid type: string"));
    }
}
