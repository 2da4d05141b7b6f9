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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hookwasm_sdk::{Operation, Payload, Repository, User};

    use super::*;

    fn event(data_commits: serde_json::Value) -> (Event, ProxyAction) {
        let action = ProxyAction {
            operation: Operation::Push,
            phase: Phase::PendingReview,
            action_id: "1700000000000".into(),
            repository: Repository {
                url: "https://github.com/acme/widgets.git".into(),
                project: "acme".into(),
                name: "widgets".into(),
            },
            user: Some(User {
                username: "grace".into(),
                email: None,
            }),
            branch: Some("refs/heads/release/1.2".into()),
            commit_from: None,
            commit_to: None,
            error: None,
            steps: Vec::new(),
        };
        let json = serde_json::json!({
            "id": "e1",
            "type": "push.pending-review",
            "data": { "commits": data_commits },
        });
        let event = Event {
            id: "e1".into(),
            source: "https://proxy.example.com".into(),
            type_: "push.pending-review".into(),
            time: "2026-01-01T00:00:00Z".into(),
            subject: None,
            payload: Payload::ProxyAction(action.clone()),
            json: json.to_string(),
        };
        (event, action)
    }

    #[test]
    fn facts_come_from_the_typed_payload_and_commits_from_the_json() {
        let commits: Vec<serde_json::Value> = (0..12)
            .map(|i| {
                serde_json::json!({
                    "id": format!("{i:040}"),
                    "message": format!("Commit {i}\n\nbody"),
                    "author": "Ada",
                    "authorEmail": "ada@example.com",
                    "committer": "ignored",
                })
            })
            .collect();
        let (event, action) = event(serde_json::json!(commits));
        let push = Push::new(&event, &action, "https://ui.example.com/");
        assert_eq!(push.repository, "acme/widgets");
        assert_eq!(push.branch, "release/1.2");
        assert_eq!(push.pusher, "grace");
        assert_eq!(push.status, "is waiting for review");
        assert_eq!(
            push.link,
            "https://ui.example.com/dashboard/push/1700000000000"
        );
        assert_eq!(push.commits.len(), 12);
        assert_eq!(push.fact("commitCount", Format::Plain), "12");
        let list = push.commit_list(Format::Plain);
        assert!(list.starts_with("- 0000000 Commit 0 (Ada)\n"), "{list}");
        assert!(
            list.ends_with("- 0000000 Commit 9 (Ada)\n- and 2 more"),
            "{list}"
        );
    }

    #[test]
    fn missing_or_malformed_commits_are_an_empty_list() {
        for commits in [serde_json::json!(null), serde_json::json!("nope")] {
            let (event, action) = event(commits);
            let push = Push::new(&event, &action, "https://ui.example.com");
            assert!(push.commits.is_empty());
            assert_eq!(push.commit_list(Format::Plain), "(no commits listed)");
        }
    }
}
