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
    use hookwasm_sdk::testing::{TestHost, events};
    use serde_json::{Value, json};

    use super::*;

    /// The gate, loaded as the host loads it (`init` included).
    fn gate(config: Value) -> BranchProtection {
        TestHost::new().load(config).unwrap()
    }

    /// The gate's answer to a `event_type` of `ref_name`.
    fn judge(gate: &BranchProtection, event_type: &str, ref_name: &str) -> Outcome {
        let event = events::ref_update(event_type).ref_name(ref_name).build();
        gate.on_event(&event).unwrap()
    }

    #[test]
    fn force_push_to_a_protected_branch_is_denied() {
        let gate = gate(json!({"protected": ["refs/heads/main", "release/*"]}));
        let outcome = judge(&gate, "git.branch.force-pushed", "refs/heads/main");
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "force-push to protected branch refs/heads/main is not allowed \
                 (branch-protection rule \"refs/heads/main\")"
            )
        );
        assert_eq!(outcome.annotation("rule"), Some("refs/heads/main"));
        assert_eq!(outcome.annotation("ref"), Some("refs/heads/main"));
        assert_eq!(outcome.annotation("change"), Some("force-pushed"));

        let outcome = judge(&gate, "git.branch.force-pushed", "refs/heads/release/2.0");
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
        let outcome = judge(
            &gate(json!({"protected": ["main"]})),
            "git.branch.deleted",
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
        let gate = gate(json!({"protected": ["main"]}));
        for event_type in ["git.branch.created", "git.branch.updated"] {
            let outcome = judge(&gate, event_type, "refs/heads/main");
            assert_eq!(outcome, Outcome::allow(), "{event_type}");
        }
    }

    #[test]
    fn unprotected_refs_are_allowed() {
        let gate = gate(json!({"protected": ["main", "release/*"]}));
        for ref_name in [
            "refs/heads/dev",
            "refs/heads/release/1/hotfix",
            "refs/heads/mainline",
        ] {
            let outcome = judge(&gate, "git.branch.force-pushed", ref_name);
            assert_eq!(outcome, Outcome::allow(), "{ref_name}");
        }
    }

    #[test]
    fn tags_are_protected_only_when_named() {
        let all_branches = gate(json!({"protected": ["**"]}));
        let outcome = judge(&all_branches, "git.tag.deleted", "refs/tags/v1");
        assert_eq!(outcome, Outcome::allow());

        let tags = gate(json!({"protected": ["refs/tags/v*"]}));
        let rule = "(branch-protection rule \"refs/tags/v*\")";
        let outcome = judge(&tags, "git.tag.deleted", "refs/tags/v1");
        assert_eq!(
            outcome.deny_reason(),
            Some(format!("deleting protected tag refs/tags/v1 is not allowed {rule}").as_str())
        );
        let outcome = judge(&tags, "git.tag.updated", "refs/tags/v1");
        assert_eq!(
            outcome.deny_reason(),
            Some(format!("moving protected tag refs/tags/v1 is not allowed {rule}").as_str())
        );
        assert_eq!(
            judge(&tags, "git.tag.created", "refs/tags/v1"),
            Outcome::allow()
        );
    }

    #[test]
    fn other_refs_count_any_move_as_a_rewrite() {
        let gate = gate(json!({"protected": ["refs/notes/**"]}));
        let outcome = judge(&gate, "git.ref.updated", "refs/notes/commits");
        assert_eq!(
            outcome.deny_reason(),
            Some(
                "moving protected ref refs/notes/commits is not allowed (branch-protection rule \"refs/notes/**\")"
            )
        );
    }

    #[test]
    fn allow_flags_let_one_kind_through() {
        let force = gate(json!({"protected": ["main"], "allowForcePush": true}));
        let main = "refs/heads/main";
        assert_eq!(
            judge(&force, "git.branch.force-pushed", main),
            Outcome::allow()
        );
        assert!(judge(&force, "git.branch.deleted", main).is_denied());

        let delete = gate(json!({"protected": ["main"], "allowDeletion": true}));
        assert_eq!(judge(&delete, "git.branch.deleted", main), Outcome::allow());
        assert!(judge(&delete, "git.branch.force-pushed", main).is_denied());
    }

    #[test]
    fn proxy_actions_are_allowed() {
        let gate = gate(json!({"protected": ["main"]}));
        let event = events::proxy_action("push.started").build();
        assert_eq!(gate.on_event(&event).unwrap(), Outcome::allow());
    }

    #[test]
    fn bad_configs_are_refused_as_the_host_would() {
        let refused = |config: Value| {
            TestHost::new()
                .load::<BranchProtection>(config)
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            refused(json!({"protected": []})),
            "`protected` is empty: list the branches to protect, e.g. [\"main\", \"release/*\"]"
        );
        assert!(
            refused(json!({"protected": ["main"], "allowForcePush": true, "allowDeletion": true}))
                .contains("would refuse nothing")
        );
        assert!(refused(Value::Null).starts_with(
            "invalid handler config: missing field `protected` (no config was given)"
        ));
        assert!(
            refused(json!({"protected": ["main"], "allowForcepush": true}))
                .starts_with("invalid handler config: unknown field `allowForcepush`")
        );
        assert!(refused(json!({"protected": ["release**"]})).starts_with(
            "invalid handler config: pattern \"release**\" uses `**` inside a segment"
        ));
        assert!(
            refused(json!({"protected": "main"}))
                .starts_with("invalid handler config: invalid type: string")
        );
    }
}
