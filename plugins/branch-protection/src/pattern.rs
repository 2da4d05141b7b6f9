//! Ref-name patterns: a small glob written for ref names, so no regex engine ships in the guest.

use std::fmt;

use serde::Deserialize;

/// A validated pattern over full ref names.
///
/// - A pattern without the `refs/` prefix is a branch: `main` means `refs/heads/main`.
/// - `*` matches any run of characters within one path segment (never a `/`).
/// - `**` is a whole segment and matches any number of segments, including none:
///   `release/**` matches `refs/heads/release/1.0` and `refs/heads/release/1.0/hotfix`,
///   `refs/**/main` matches `refs/heads/main`.
/// - Everything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern {
    /// As the operator wrote it; shown in deny reasons so they recognise their own rule.
    written: String,
    /// The full ref-name pattern, `refs/` included.
    full: String,
}

impl Pattern {
    /// Parses and checks a pattern.
    pub fn new(written: &str) -> Result<Self, String> {
        let full = if written.starts_with("refs/") {
            written.to_owned()
        } else {
            format!("refs/heads/{written}")
        };
        check(written, &full)?;
        Ok(Self {
            written: written.to_owned(),
            full,
        })
    }

    /// The pattern as the operator wrote it.
    pub fn written(&self) -> &str {
        &self.written
    }

    /// Whether a full ref name (e.g. `refs/heads/main`) matches.
    pub fn matches(&self, ref_name: &str) -> bool {
        glob(self.full.as_bytes(), ref_name.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(written: String) -> Result<Self, Self::Error> {
        Self::new(&written)
    }
}

/// Characters git forbids in ref names (`git check-ref-format`): a pattern holding one could
/// never match, so it is a mistake worth reporting rather than a rule that silently protects
/// nothing. `*` is absent: here it is the wildcard.
const FORBIDDEN: &[char] = &['?', '[', '\\', '^', '~', ':', ' ', '\t'];

fn check(written: &str, full: &str) -> Result<(), String> {
    let problem = |why: &str| Err(format!("pattern {written:?} {why}"));
    if written.trim().is_empty() {
        return problem("is empty; name a branch, e.g. \"main\"");
    }
    if let Some(c) = written
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_control())
    {
        return problem(&format!(
            "contains {c:?}, which no ref name can hold (the only wildcards are `*` and `**`)"
        ));
    }
    if written.starts_with('/') || written.ends_with('/') || written.contains("//") {
        return problem("has an empty path segment (a leading, trailing or doubled `/`)");
    }
    for segment in full.split('/') {
        if segment.contains("**") && segment != "**" {
            return problem(
                "uses `**` inside a segment; `**` must be a whole segment, e.g. \"release/**\"",
            );
        }
    }
    Ok(())
}

/// Matches `text` against a checked pattern, backtracking on wildcards. Ref names and patterns
/// are short, so the simple recursion is fast enough.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        // `**/`: no segment at all, or any run of whole segments (up to and including a `/`).
        [b'*', b'*', b'/', rest @ ..] => {
            glob(rest, text)
                || text
                    .iter()
                    .enumerate()
                    .any(|(i, &c)| c == b'/' && glob(rest, &text[i + 1..]))
        }
        // A final `**`: whatever is left, `/`s included.
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        // `*`: any run without a `/`.
        [b'*', rest @ ..] => {
            let segment_end = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=segment_end).any(|i| glob(rest, &text[i..]))
        }
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn matches(pattern: &str, ref_name: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(ref_name)
    }

    #[test]
    fn short_names_are_branches() {
        assert!(matches("main", "refs/heads/main"));
        assert!(!matches("main", "refs/tags/main"));
        assert!(!matches("main", "refs/heads/main2"));
        assert!(!matches("main", "refs/heads/x/main"));
        assert_eq!(Pattern::new("main").unwrap().full, "refs/heads/main");
    }

    #[test]
    fn full_names_are_taken_as_written() {
        assert!(matches("refs/heads/main", "refs/heads/main"));
        assert!(matches("refs/tags/v1.0", "refs/tags/v1.0"));
        assert!(!matches("refs/tags/v1.0", "refs/heads/v1.0"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(matches("release/*", "refs/heads/release/1.0"));
        assert!(!matches("release/*", "refs/heads/release/1.0/hotfix"));
        assert!(!matches("release/*", "refs/heads/release"));
        assert!(matches("feature-*", "refs/heads/feature-login"));
        assert!(matches("*-stable", "refs/heads/2.x-stable"));
        assert!(!matches("*-stable", "refs/heads/old/2.x-stable"));
        assert!(matches("refs/tags/v*", "refs/tags/v2.1.0"));
        assert!(matches("refs/*/main", "refs/remotes/main"));
        assert!(matches("r*e*e", "refs/heads/release"));
        assert!(!matches("r*e*x", "refs/heads/release"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(matches("release/**", "refs/heads/release/1.0"));
        assert!(matches("release/**", "refs/heads/release/1.0/hotfix"));
        assert!(!matches("release/**", "refs/heads/releases/1.0"));
        assert!(matches("**", "refs/heads/anything/at/all"));
        assert!(!matches("**", "refs/tags/v1"));
        assert!(matches("refs/**", "refs/tags/v1"));
    }

    #[test]
    fn double_star_can_match_no_segment() {
        assert!(matches("refs/**/main", "refs/main"));
        assert!(matches("refs/**/main", "refs/heads/main"));
        assert!(matches("refs/**/main", "refs/remotes/origin/main"));
        assert!(!matches("refs/**/main", "refs/heads/domain"));
        assert!(matches("**/hotfix", "refs/heads/hotfix"));
        assert!(matches("**/hotfix", "refs/heads/team/a/hotfix"));
    }

    #[test]
    fn mistakes_are_refused_with_the_pattern_named() {
        let error = |pattern: &str| Pattern::new(pattern).unwrap_err();
        assert_eq!(
            error(""),
            r#"pattern "" is empty; name a branch, e.g. "main""#
        );
        assert_eq!(
            error("  "),
            r#"pattern "  " is empty; name a branch, e.g. "main""#
        );
        assert_eq!(
            error("release/v?"),
            r#"pattern "release/v?" contains '?', which no ref name can hold (the only wildcards are `*` and `**`)"#
        );
        assert!(error("[ab]").contains("contains '['"));
        assert!(error("release/").contains("empty path segment"));
        assert!(error("/main").contains("empty path segment"));
        assert!(error("refs//main").contains("empty path segment"));
        assert_eq!(
            error("release**"),
            r#"pattern "release**" uses `**` inside a segment; `**` must be a whole segment, e.g. "release/**""#
        );
        assert!(error("***").contains("whole segment"));
    }
}
