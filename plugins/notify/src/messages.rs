//! The three messages: a Slack Block Kit message, a Microsoft Teams Adaptive Card and an e-mail.
//! Pure functions of the push and the templates, so each is unit-tested natively.

use serde_json::{Value, json};

use crate::push::Push;
use crate::template::{Format, Template};

/// Slack's limit on a header block's text.
const SLACK_HEADER_CHARS: usize = 150;
/// Slack's limit on a section's text.
const SLACK_SECTION_CHARS: usize = 3000;
/// The button's and link's label.
const REVIEW_LABEL: &str = "Open in GitProxy";

/// The operator's templates: `title` heads every message (and is the e-mail's subject), `text`
/// is the paragraph under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    /// The heading / subject.
    pub title: Template,
    /// The paragraph.
    pub text: Template,
}

/// A message for a Slack incoming webhook: Block Kit blocks, with `text` as the notification's
/// fallback.
pub fn slack(push: &Push, templates: &Templates) -> Value {
    let fact = |name: &str, format: Format| push.fact(name, format);
    // The header is plain text: nothing in it is formatted, so nothing is escaped but JSON.
    let title = truncate(
        &templates.title.render(Format::Plain, fact),
        SLACK_HEADER_CHARS,
    );
    let text = templates.text.render(Format::Slack, fact);
    let field = |label: &str, name: &str| json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", push.fact(name, Format::Slack)) });
    json!({
        "text": title,
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": title, "emoji": true } },
            { "type": "section", "text": { "type": "mrkdwn", "text": truncate(&text, SLACK_SECTION_CHARS) } },
            { "type": "section", "fields": [
                field("Repository", "repository"),
                field("Branch", "branch"),
                field("Pusher", "pusher"),
                field("Commits", "commitCount"),
            ] },
            { "type": "section", "text": { "type": "mrkdwn", "text": truncate(
                &format!("*Commits*\n{}", push.commit_list(Format::Slack)),
                SLACK_SECTION_CHARS,
            ) } },
            { "type": "actions", "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": REVIEW_LABEL },
                "url": push.link,
                "style": "primary",
            }] },
        ],
    })
}

/// A message for a Microsoft Teams incoming webhook or Workflows "post to a channel when a
/// webhook request is received": one Adaptive Card (schema 1.4) as an attachment.
pub fn teams(push: &Push, templates: &Templates) -> Value {
    let fact = |name: &str, format: Format| push.fact(name, format);
    let plain_fact = |title: &str, name: &str| {
        // FactSet values are shown as markdown too.
        json!({ "title": title, "value": push.fact(name, Format::Teams) })
    };
    let card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": templates.title.render(Format::Teams, fact),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": true,
            },
            { "type": "TextBlock", "text": templates.text.render(Format::Teams, fact), "wrap": true },
            { "type": "FactSet", "facts": [
                plain_fact("Repository", "repository"),
                plain_fact("Branch", "branch"),
                plain_fact("Pusher", "pusher"),
                plain_fact("Commits", "commitCount"),
            ] },
            { "type": "TextBlock", "text": push.commit_list(Format::Teams), "wrap": true },
        ],
        "actions": [{ "type": "Action.OpenUrl", "title": REVIEW_LABEL, "url": push.link }],
    });
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// An e-mail: a one-line subject, a text body and its HTML alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The title, on one line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// The e-mail about a push.
pub fn mail(push: &Push, templates: &Templates) -> Mail {
    let fact = |name: &str, format: Format| push.fact(name, format);
    let text = format!(
        "{}\n\nCommits:\n{}\n\n{REVIEW_LABEL}: {}\n",
        templates.text.render(Format::Plain, fact),
        push.commit_list(Format::Plain),
        push.link,
    );
    let html = format!(
        "<!DOCTYPE html><html><body><h2>{}</h2><p>{}</p>{}<p><a href=\"{}\">{REVIEW_LABEL}</a></p></body></html>",
        templates.title.render(Format::Html, fact),
        templates.text.render(Format::Html, fact),
        push.commit_list(Format::Html),
        Format::Html.escape(&push.link),
    );
    Mail {
        subject: templates.title.render(Format::Subject, fact),
        text,
        html,
    }
}

/// `text` cut to at most `max` characters, ending with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text[cut..].chars().nth(1).is_some() => format!("{}…", &text[..cut]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::push::Commit;

    fn push() -> Push {
        Push {
            event_type: "push.pending-review".into(),
            status: "is waiting for review",
            repository: "acme/widgets".into(),
            repository_url: "https://github.com/acme/widgets.git".into(),
            ref_name: "refs/heads/feature".into(),
            branch: "feature".into(),
            pusher: "grace <!channel>".into(),
            action_id: "a1".into(),
            link: "https://proxy.example.com/dashboard/push/a1".into(),
            commits: vec![Commit {
                id: "0123456789abcdef".into(),
                message: "Fix *all* the <bugs>\n\nlong body".into(),
                author: "Ada".into(),
            }],
            error: String::new(),
        }
    }

    fn templates(title: &str, text: &str) -> Templates {
        Templates {
            title: Template::parse(title).unwrap(),
            text: Template::parse(text).unwrap(),
        }
    }

    #[test]
    fn slack_gets_block_kit_with_escaped_facts_and_a_review_button() {
        let message = slack(
            &push(),
            &templates(
                "{{repository}} {{status}}",
                "{{pusher}} pushed to {{branch}}",
            ),
        );
        assert_eq!(message["text"], "acme/widgets is waiting for review");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        assert_eq!(
            blocks[1]["text"]["text"],
            "grace &lt;!channel&gt; pushed to feature"
        );
        assert_eq!(
            blocks[3]["text"]["text"],
            "*Commits*\n• `0123456` Fix *all* the &lt;bugs&gt; — Ada"
        );
        assert_eq!(blocks[4]["elements"][0]["url"], push().link);
    }

    #[test]
    fn teams_gets_an_adaptive_card_attachment() {
        let message = teams(&push(), &templates("{{repository}}", "by {{pusher}}"));
        assert_eq!(message["type"], "message");
        let attachment = &message["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(card["body"][1]["text"], "by grace \\<!channel\\>");
        assert_eq!(
            card["body"][3]["text"],
            "- `0123456` Fix \\*all\\* the \\<bugs\\> — Ada"
        );
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(card["actions"][0]["url"], push().link);
    }

    #[test]
    fn the_mail_subject_is_one_line_and_the_html_is_escaped() {
        let mut hostile = push();
        hostile.branch = "x\r\nBcc: victim@example.com".into();
        let m = mail(&hostile, &templates("Push to {{branch}}", "{{pusher}}"));
        assert_eq!(m.subject, "Push to x  Bcc: victim@example.com");
        assert!(
            m.text.starts_with(
                "grace <!channel>\n\nCommits:\n- 0123456 Fix *all* the <bugs> (Ada)\n"
            ),
            "{}",
            m.text
        );
        assert!(
            m.text
                .ends_with("Open in GitProxy: https://proxy.example.com/dashboard/push/a1\n")
        );
        assert!(
            m.html.contains("<p>grace &lt;!channel&gt;</p>"),
            "{}",
            m.html
        );
        assert!(
            m.html
                .contains("<li><code>0123456</code> Fix *all* the &lt;bugs&gt; — Ada</li>")
        );
    }

    #[test]
    fn long_texts_are_cut_to_slack_limits() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        let mut long = push();
        long.repository = "r".repeat(400);
        let message = slack(&long, &templates("{{repository}}", "x"));
        assert_eq!(
            message["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            150
        );
    }
}
