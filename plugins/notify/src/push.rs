//! The facts about one push that messages show, read from the event.

use hookwasm_sdk::{Event, Phase, ProxyAction};
use serde::Deserialize;

use crate::template::Format;

/// Commits listed one by one; the rest are counted.
pub const MAX_LISTED_COMMITS: usize = 10;
/// Characters of a commit message's first line that are shown.
const SUBJECT_CHARS: usize = 100;

/// What a message says about a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `push.pending-review` and the like.
    pub event_type: String,
    /// What happened, in words.
    pub status: &'static str,
    /// `project/name`.
    pub repository: String,
    /// The clone URL.
    pub repository_url: String,
    /// The full ref, e.g. `refs/heads/main`; empty when the action names none.
    pub ref_name: String,
    /// The branch's short name.
    pub branch: String,
    /// Who pushed; `unknown` when the producer did not say.
    pub pusher: String,
    /// GitProxy's action id.
    pub action_id: String,
    /// The push in GitProxy's UI.
    pub link: String,
    /// The commits, oldest first, as the producer listed them.
    pub commits: Vec<Commit>,
    /// Why the push failed or was refused; empty otherwise.
    pub error: String,
}

/// One commit of the push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Commit {
    /// The commit id.
    pub id: String,
    /// The whole message.
    pub message: String,
    /// The author's name.
    pub author: String,
}

/// The part of the CloudEvent's `data` the typed payload does not carry.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Extra {
    commits: Vec<Commit>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope {
    data: Extra,
}

impl Push {
    /// The facts of a proxy action; `ui_url` is GitProxy's UI root. Commits come from the
    /// event's `data.commits` (an absent or unreadable list is empty, never an error: the
    /// message is still worth sending).
    pub fn new(event: &Event, action: &ProxyAction, ui_url: &str) -> Push {
        let commits = serde_json::from_str::<Envelope>(&event.json)
            .map(|e| e.data.commits)
            .unwrap_or_default();
        let ref_name = action.branch.clone().unwrap_or_default();
        let branch = ref_name
            .strip_prefix("refs/heads/")
            .unwrap_or(&ref_name)
            .to_owned();
        let repository = match (&action.repository.project, &action.repository.name) {
            (project, name) if !project.is_empty() && !name.is_empty() => {
                format!("{project}/{name}")
            }
            (_, name) if !name.is_empty() => name.clone(),
            _ => action.repository.url.clone(),
        };
        Push {
            event_type: event.type_.clone(),
            status: status(action.phase),
            repository,
            repository_url: action.repository.url.clone(),
            ref_name,
            branch,
            pusher: action
                .user
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |u| u.username.clone()),
            action_id: action.action_id.clone(),
            link: link(ui_url, &action.action_id),
            commits,
            error: action.error.clone().unwrap_or_default(),
        }
    }

    /// One fact by placeholder name, escaped for `format`.
    pub fn fact(&self, name: &str, format: Format) -> String {
        match name {
            "commits" => self.commit_list(format),
            "commitCount" => self.commits.len().to_string(),
            other => format.escape(match other {
                "repository" => &self.repository,
                "repositoryUrl" => &self.repository_url,
                "branch" => &self.branch,
                "ref" => &self.ref_name,
                "pusher" => &self.pusher,
                "link" => &self.link,
                "status" => self.status,
                "type" => &self.event_type,
                "actionId" => &self.action_id,
                "error" => &self.error,
                _ => "",
            }),
        }
    }

    /// The commits, one line each (`abc1234 message (author)`), in `format`'s list style,
    /// ending with how many more there are.
    pub fn commit_list(&self, format: Format) -> String {
        if self.commits.is_empty() {
            return match format {
                Format::Slack | Format::Teams => "_no commits listed_".to_owned(),
                Format::Html => "<p>No commits listed.</p>".to_owned(),
                Format::Plain | Format::Subject => "(no commits listed)".to_owned(),
            };
        }
        let mut lines: Vec<String> = self
            .commits
            .iter()
            .take(MAX_LISTED_COMMITS)
            .map(|c| {
                let id = format.escape(short_id(&c.id));
                let subject = format.escape(&first_line(&c.message));
                let author = format.escape(&c.author);
                match format {
                    Format::Slack => format!("• `{id}` {subject} — {author}"),
                    Format::Teams => format!("- `{id}` {subject} — {author}"),
                    Format::Html => format!("<li><code>{id}</code> {subject} — {author}</li>"),
                    Format::Plain => format!("- {id} {subject} ({author})"),
                    Format::Subject => format!("{id} {subject}"),
                }
            })
            .collect();
        let more = self.commits.len().saturating_sub(MAX_LISTED_COMMITS);
        if more > 0 {
            lines.push(match format {
                Format::Html => format!("<li>and {more} more</li>"),
                Format::Slack => format!("• and {more} more"),
                _ => format!("- and {more} more"),
            });
        }
        match format {
            Format::Html => format!("<ul>{}</ul>", lines.concat()),
            Format::Subject => lines.join("; "),
            _ => lines.join("\n"),
        }
    }
}

/// What a phase means, for people.
fn status(phase: Phase) -> &'static str {
    match phase {
        Phase::Started => "has started",
        Phase::Completed => "went through",
        Phase::Error => "failed",
        Phase::PermissionDenied => "was refused",
        Phase::PendingReview => "is waiting for review",
    }
}

/// The push's page in GitProxy's UI: `<uiUrl>/dashboard/push/<actionId>` (GitProxy's
/// `PushDetails` route), with the id percent-encoded as one path segment.
pub fn link(ui_url: &str, action_id: &str) -> String {
    let mut link = format!("{}/dashboard/push/", ui_url.trim_end_matches('/'));
    for byte in action_id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            link.push(char::from(byte));
        } else {
            link.push_str(&format!("%{byte:02X}"));
        }
    }
    link
}

fn short_id(id: &str) -> &str {
    id.get(..7).unwrap_or(id)
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(SUBJECT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}
