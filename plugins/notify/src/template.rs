//! Operator-written templates with `{{placeholder}}`s, rendered for one target format.
//!
//! The syntax is deliberately small: `{{name}}` inserts a fact about the push, `{{{{` is a
//! literal `{{`, and nothing else is special (no expressions, loops or includes), so a template
//! can only arrange facts, never run anything. Each fact is escaped for the format it lands in
//! (see [`Format`]); the template's own text is the operator's and is kept as written, except in
//! HTML, where it is escaped too, and in a subject line, where line breaks become spaces.

use std::fmt;

/// The facts a template may use, and what each one is.
pub const PLACEHOLDERS: [(&str, &str); 12] = [
    ("repository", "project/name, e.g. acme/widgets"),
    ("repositoryUrl", "the repository's clone URL"),
    ("branch", "the branch's short name, e.g. main"),
    ("ref", "the full ref name, e.g. refs/heads/main"),
    ("pusher", "the user who pushed"),
    ("link", "the push in GitProxy's UI"),
    (
        "commits",
        "one line per commit: short id, first line of the message, author",
    ),
    ("commitCount", "how many commits the push carries"),
    ("status", "what happened, e.g. is waiting for review"),
    ("type", "the event type, e.g. push.pending-review"),
    ("actionId", "GitProxy's id of the push"),
    (
        "error",
        "why the push failed or was refused (empty otherwise)",
    ),
];

/// Where rendered text goes, which decides how facts are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text (an e-mail's text body): nothing is escaped.
    Plain,
    /// One header line (an e-mail subject): every control character becomes a space.
    Subject,
    /// Slack `mrkdwn`: `&`, `<` and `>` become entities, as Slack asks, so a fact cannot
    /// become a link or a mention (`<!channel>`).
    Slack,
    /// Adaptive Card markdown (Teams): the characters that start emphasis, code, links, HTML or
    /// headings are backslash-escaped, so a fact cannot become formatting or a link.
    Teams,
    /// HTML (an e-mail's HTML body): `&`, `<`, `>`, `"` and `'` become entities.
    Html,
}

impl Format {
    /// `text` escaped for this format.
    pub fn escape(self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match (self, c) {
                (Format::Subject, c) if c.is_control() => out.push(' '),
                (Format::Slack, '&') => out.push_str("&amp;"),
                (Format::Slack, '<') => out.push_str("&lt;"),
                (Format::Slack, '>') => out.push_str("&gt;"),
                (Format::Teams, c) if "\\`*_[]<>#~".contains(c) => {
                    out.push('\\');
                    out.push(c);
                }
                (Format::Html, '&') => out.push_str("&amp;"),
                (Format::Html, '<') => out.push_str("&lt;"),
                (Format::Html, '>') => out.push_str("&gt;"),
                (Format::Html, '"') => out.push_str("&quot;"),
                (Format::Html, '\'') => out.push_str("&#39;"),
                (_, c) => out.push(c),
            }
        }
        out
    }

    /// The template's own text in this format: kept as the operator wrote it, except in HTML
    /// (escaped, since templates are text) and subjects (one line).
    fn literal(self, text: &str) -> String {
        match self {
            Format::Html | Format::Subject => self.escape(text),
            _ => text.to_owned(),
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Fact(&'static str),
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Template {
    /// Parses `text`; unknown placeholders and unclosed `{{` are errors.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            if let Some(tail) = after.strip_prefix("{{") {
                literal.push_str("{{");
                rest = tail;
                continue;
            }
            let end = after.find("}}").ok_or_else(|| {
                TemplateError(
                    "a `{{` is never closed; write `{{name}}` or `{{{{` for a literal `{{`".into(),
                )
            })?;
            let name = after[..end].trim();
            let known = PLACEHOLDERS
                .iter()
                .find(|(known, _)| *known == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = PLACEHOLDERS.iter().map(|(n, _)| *n).collect();
                    TemplateError(format!(
                        "unknown placeholder {{{{{name}}}}}; use one of {}",
                        names.join(", ")
                    ))
                })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Fact(known.0));
            rest = &after[end + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Renders the template for `format`, asking `fact` for each placeholder's text already in
    /// that format.
    pub fn render(&self, format: Format, fact: impl Fn(&str, Format) -> String) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => format.literal(text),
                Part::Fact(name) => fact(name, format),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts(name: &str, format: Format) -> String {
        match name {
            "repository" => format.escape("acme/<widgets>"),
            "branch" => format.escape("main"),
            other => format!("[{other}]"),
        }
    }

    #[test]
    fn placeholders_are_replaced_and_escaped_for_the_format() {
        let t = Template::parse("Push to {{ repository }} ({{branch}}) {{{{x}}").unwrap();
        assert_eq!(
            t.render(Format::Plain, facts),
            "Push to acme/<widgets> (main) {{x}}"
        );
        assert_eq!(
            t.render(Format::Slack, facts),
            "Push to acme/&lt;widgets&gt; (main) {{x}}"
        );
        assert_eq!(
            t.render(Format::Html, facts),
            "Push to acme/&lt;widgets&gt; (main) {{x}}"
        );
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_refused() {
        let error = Template::parse("{{repo}}").unwrap_err().to_string();
        assert!(
            error.starts_with("unknown placeholder {{repo}}; use one of repository, "),
            "{error}"
        );
        let error = Template::parse("hi {{branch").unwrap_err().to_string();
        assert!(error.starts_with("a `{{` is never closed"), "{error}");
    }

    #[test]
    fn each_format_escapes_what_would_change_its_meaning() {
        let hostile = "a&b <!channel> *bold* [x](http://evil) \"q\" 'q'\r\nBcc: x@evil.org";
        assert_eq!(
            Format::Slack.escape(hostile),
            "a&amp;b &lt;!channel&gt; *bold* [x](http://evil) \"q\" 'q'\r\nBcc: x@evil.org"
        );
        assert_eq!(
            Format::Teams.escape("*bold* [x](http://evil) <b>"),
            "\\*bold\\* \\[x\\](http://evil) \\<b\\>"
        );
        assert_eq!(
            Format::Html.escape(hostile),
            "a&amp;b &lt;!channel&gt; *bold* [x](http://evil) &quot;q&quot; &#39;q&#39;\r\nBcc: x@evil.org"
        );
        let subject = Format::Subject.escape(hostile);
        assert!(!subject.contains(['\r', '\n']), "{subject}");
        assert!(subject.ends_with("  Bcc: x@evil.org"), "{subject}");
    }
}
