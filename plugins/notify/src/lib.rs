//! An observer that tells reviewers about pushes: when a `push.pending-review` event (or another
//! proxy-action type its config lists) arrives, it posts a card to chat incoming webhooks (Slack
//! Block Kit, Microsoft Teams Adaptive Card) and sends an e-mail through the SMTP relay the
//! operator granted, each with the repository, branch, pusher, commits and a link to the push in
//! GitProxy's UI.
//!
//! Reading order: [`Notify`] (the config and what `init` checks), `push.rs` (the facts taken
//! from the event), `template.rs` (placeholders and escaping), `messages.rs` (the three message
//! formats).
//!
//! Every channel is tried; if any fails, the invocation fails naming each failure, so the host
//! records it and retries the event: channels that had succeeded then get the message again
//! (at least once, never lost).

pub mod messages;
pub mod push;
pub mod template;

use hookwasm_sdk::{Error, Event, Handler, Outcome, ProxyAction, Result, http, mail};
use serde::Deserialize;

use crate::messages::Templates;
use crate::push::Push;
use crate::template::Template;

/// The title used when the config gives none.
pub const DEFAULT_TITLE: &str = "{{repository}}: push to {{branch}} {{status}}";
/// The paragraph used when the config gives none.
pub const DEFAULT_TEXT: &str =
    "{{pusher}} pushed {{commitCount}} commit(s) to {{branch}} of {{repository}}.";

/// The config, e.g.
/// `{"uiUrl": "https://git-proxy.example.com", "chat": [{"format": "slack", "url": "https://hooks.slack.com/…"}],
/// "email": {"to": ["reviewers@example.com"]}}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// GitProxy's UI root; a push's link is `<uiUrl>/dashboard/push/<actionId>`.
    ui_url: String,
    /// Event types to notify about: `push.<phase>` or `pull.<phase>`. Default:
    /// `["push.pending-review"]`.
    #[serde(default = "default_events")]
    events: Vec<String>,
    /// Chat incoming webhooks; each URL's origin must be in `capabilities.allowedHosts`.
    #[serde(default)]
    chat: Vec<Chat>,
    /// E-mail; needs `capabilities.smtp`.
    #[serde(default)]
    email: Option<Email>,
    /// The title and paragraph templates.
    #[serde(default)]
    templates: TemplateTexts,
}

/// One chat incoming webhook.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chat {
    /// `slack` or `teams`.
    format: ChatFormat,
    /// The webhook URL (a secret: it is never logged, only its origin).
    url: String,
}

/// Which card a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatFormat {
    /// Slack Block Kit.
    Slack,
    /// Microsoft Teams Adaptive Card.
    Teams,
}

/// Who gets the e-mail.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Email {
    /// Recipients; each must match the grant's `allowedRecipients`.
    to: Vec<String>,
    /// The sender; default: the grant's first `from` address.
    from: Option<String>,
    /// The relay this config expects (`smtp://host[:port]`); the host refuses the mail unless it
    /// is the granted one. Default: whatever relay is granted.
    relay: Option<String>,
}

/// The templates as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TemplateTexts {
    /// The heading of each message and the e-mail's subject.
    title: String,
    /// The paragraph under it.
    text: String,
}

impl Default for TemplateTexts {
    fn default() -> TemplateTexts {
        TemplateTexts {
            title: DEFAULT_TITLE.into(),
            text: DEFAULT_TEXT.into(),
        }
    }
}

fn default_events() -> Vec<String> {
    vec!["push.pending-review".into()]
}

/// The phases a proxy action has (GitProxy's), for checking `events`.
const PHASES: [&str; 5] = [
    "started",
    "completed",
    "error",
    "permission-denied",
    "pending-review",
];

impl Notify {
    /// The parsed templates; `Err` names the template and the problem.
    pub fn templates(&self) -> Result<Templates> {
        let parse = |name: &str, text: &str| {
            Template::parse(text).map_err(|e| Error::new(format!("`templates.{name}`: {e}")))
        };
        if self.templates.title.contains(['\r', '\n']) {
            return Err(
                "`templates.title` must be one line: it is also the e-mail's subject".into(),
            );
        }
        Ok(Templates {
            title: parse("title", &self.templates.title)?,
            text: parse("text", &self.templates.text)?,
        })
    }
}

impl Handler for Notify {
    /// Checks everything that does not depend on an event, so a bad config refuses the load.
    fn init(&self) -> Result<()> {
        if !(self.ui_url.starts_with("https://") || self.ui_url.starts_with("http://")) {
            return Err(format!(
                "`uiUrl` {:?} must be GitProxy's UI address, starting with http:// or https://",
                self.ui_url
            )
            .into());
        }
        http::origin(&self.ui_url).map_err(|e| format!("`uiUrl`: {}", e.message()))?;
        if self.events.is_empty() {
            return Err("`events` is empty; list e.g. \"push.pending-review\"".into());
        }
        for event in &self.events {
            let known = event.split_once('.').is_some_and(|(op, phase)| {
                matches!(op, "push" | "pull") && PHASES.contains(&phase)
            });
            if !known {
                return Err(format!(
                    "`events` entry {event:?} is not a proxy action type; use push.<phase> or pull.<phase> with a phase of {}",
                    PHASES.join(", ")
                )
                .into());
            }
        }
        if self.chat.is_empty() && self.email.is_none() {
            return Err("nothing to notify: add `chat` webhooks, `email`, or both".into());
        }
        for (i, chat) in self.chat.iter().enumerate() {
            http::origin(&chat.url).map_err(|e| format!("`chat[{i}].url`: {}", e.message()))?;
        }
        if let Some(email) = &self.email {
            if email.to.is_empty() {
                return Err("`email.to` is empty; list the reviewers' addresses".into());
            }
            if let Some(bad) = email
                .to
                .iter()
                .find(|a| !a.contains('@') || a.contains(char::is_whitespace))
            {
                return Err(format!("`email.to` entry {bad:?} is not an e-mail address").into());
            }
        }
        self.templates()?;
        Ok(())
    }

    fn on_proxy_action(&self, event: &Event, action: &ProxyAction) -> Result<Outcome> {
        if !self.events.contains(&event.type_) {
            return Ok(Outcome::allow());
        }
        let templates = self.templates()?;
        let push = Push::new(event, action, &self.ui_url);
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for (i, chat) in self.chat.iter().enumerate() {
            let (name, body) = match chat.format {
                ChatFormat::Slack => ("slack", messages::slack(&push, &templates)),
                ChatFormat::Teams => ("teams", messages::teams(&push, &templates)),
            };
            match post(&chat.url, &body) {
                Ok(()) => sent.push(format!("{name}:{i}")),
                Err(why) => failed.push(format!("chat[{i}] ({name}): {}", why.message())),
            }
        }
        if let Some(email) = &self.email {
            let m = messages::mail(&push, &templates);
            let mut message = mail::Message::to(&email.to)
                .subject(m.subject)
                .text(m.text)
                .html(m.html);
            if let Some(from) = &email.from {
                message = message.from(from);
            }
            if let Some(relay) = &email.relay {
                message = message.relay(relay);
            }
            match message.send() {
                Ok(()) => sent.push("email".to_owned()),
                Err(why) => failed.push(format!("email: {}", why.message())),
            }
        }
        if !failed.is_empty() {
            return Err(Error::new(format!(
                "push {} not notified everywhere: {}",
                push.action_id,
                failed.join("; ")
            )));
        }
        Ok(Outcome::allow()
            .annotate("notified", sent.join(","))
            .annotate("link", push.link))
    }
}

hookwasm_sdk::export_handler!(Notify);

/// POSTs one card; any non-2xx answer is an error quoting the status (never the URL's path,
/// which holds the webhook's secret).
fn post(url: &str, body: &serde_json::Value) -> Result<()> {
    let response = http::Request::post(url).json(body)?.send()?;
    if !response.is_success() {
        return Err(Error::new(format!(
            "{} answered {}",
            http::origin(url)?,
            response.status
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Notify {
        serde_json::from_value(json).unwrap()
    }

    fn init_error(json: serde_json::Value) -> String {
        config(json).init().unwrap_err().message().to_owned()
    }

    #[test]
    fn a_complete_config_loads_with_default_templates() {
        let notify = config(serde_json::json!({
            "uiUrl": "https://proxy.example.com",
            "chat": [{"format": "slack", "url": "https://hooks.slack.com/services/x"}],
            "email": {"to": ["reviewers@example.com"]},
        }));
        notify.init().unwrap();
        assert_eq!(notify.events, ["push.pending-review"]);
    }

    #[test]
    fn config_mistakes_are_named() {
        let base = serde_json::json!({
            "uiUrl": "https://proxy.example.com",
            "email": {"to": ["r@example.com"]},
        });
        let with = |key: &str, value: serde_json::Value| {
            let mut c = base.clone();
            c[key] = value;
            c
        };
        assert!(init_error(with("uiUrl", "proxy".into())).starts_with("`uiUrl` \"proxy\" must be"));
        assert!(
            init_error(with("events", serde_json::json!(["push.merged"])))
                .starts_with("`events` entry \"push.merged\" is not a proxy action type")
        );
        assert!(
            init_error(with(
                "chat",
                serde_json::json!([{"format": "teams", "url": "ftp://x"}])
            ))
            .starts_with("`chat[0].url`:")
        );
        assert_eq!(
            init_error(with("email", serde_json::json!({"to": []}))),
            "`email.to` is empty; list the reviewers' addresses"
        );
        assert!(
            init_error(with("templates", serde_json::json!({"title": "{{nope}}"})))
                .starts_with("`templates.title`: unknown placeholder {{nope}}")
        );
        assert_eq!(
            init_error(with("templates", serde_json::json!({"title": "a\nb"}))),
            "`templates.title` must be one line: it is also the e-mail's subject"
        );
        assert_eq!(
            init_error(serde_json::json!({"uiUrl": "https://p.example.com"})),
            "nothing to notify: add `chat` webhooks, `email`, or both"
        );
        let unknown = serde_json::from_value::<Notify>(with("slack", "x".into()));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `slack`")
        );
    }

    #[test]
    fn links_point_at_gitproxy_push_details() {
        assert_eq!(
            push::link("https://proxy.example.com/", "a b/c"),
            "https://proxy.example.com/dashboard/push/a%20b%2Fc"
        );
    }
}
