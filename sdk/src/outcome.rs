//! Builders for what a handler answers.

use crate::{Outcome, Verdict};

impl Outcome {
    /// Let the action go ahead (what observers and most events answer).
    pub fn allow() -> Self {
        Self {
            verdict: Verdict::Allow,
            annotations: Vec::new(),
        }
    }

    /// Refuse the action; `reason` is shown to whoever it is refused to. Only enforced for
    /// handlers the operator runs as gates.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Deny(reason.into()),
            annotations: Vec::new(),
        }
    }

    /// Attaches a key/value pair to the event's result, e.g. `.annotate("risk", 7)`.
    pub fn annotate(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.annotations.push((key.into(), value.to_string()));
        self
    }

    /// Whether the verdict is `deny`.
    pub fn is_denied(&self) -> bool {
        matches!(self.verdict, Verdict::Deny(_))
    }

    /// The deny reason, if the verdict is `deny`.
    pub fn deny_reason(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Deny(reason) => Some(reason),
            Verdict::Allow => None,
        }
    }

    /// The value of the first annotation with this key.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }
}

impl Default for Outcome {
    /// [`Outcome::allow`] with no annotations.
    fn default() -> Self {
        Self::allow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_has_no_reason_or_annotations() {
        let outcome = Outcome::allow();
        assert_eq!(outcome.verdict, Verdict::Allow);
        assert!(!outcome.is_denied());
        assert_eq!(outcome.deny_reason(), None);
        assert!(outcome.annotations.is_empty());
        assert_eq!(Outcome::default(), outcome);
    }

    #[test]
    fn deny_carries_its_reason() {
        let outcome = Outcome::deny("force-push to main");
        assert_eq!(outcome.verdict, Verdict::Deny("force-push to main".into()));
        assert!(outcome.is_denied());
        assert_eq!(outcome.deny_reason(), Some("force-push to main"));
    }

    #[test]
    fn annotations_keep_their_order() {
        let outcome = Outcome::deny("no")
            .annotate("rule", "protected")
            .annotate("score", 7)
            .annotate("rule", "again");
        assert_eq!(
            outcome.annotations,
            [
                ("rule".to_owned(), "protected".to_owned()),
                ("score".to_owned(), "7".to_owned()),
                ("rule".to_owned(), "again".to_owned()),
            ]
        );
        assert_eq!(outcome.annotation("rule"), Some("protected"));
        assert_eq!(outcome.annotation("missing"), None);
    }
}
