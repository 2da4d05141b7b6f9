//! Git server hooks: turn what git tells a `pre-receive` or `post-receive` hook into ref-update
//! events, ask the gates before refs move, tell the observers after.
//!
//! Reading order: [`parse_updates`] reads git's `<old> <new> <ref>` lines; [`classify`] says
//! what each update did (pure, given an ancestry answer); [`Push`] holds what every event of one
//! push shares and builds the CloudEvents; [`pre_receive`] and [`post_receive`] dispatch them to a
//! [`Target`]: the handlers loaded in this process, or a running `hookwasm serve`
//! ([`forward`]). [`Repo`] is the one place this module runs `git`; [`install`] writes the hook
//! scripts into a repository.

pub mod forward;
pub mod install;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::dispatch::{self, Backpressure, Dispatcher, Refused, Route, Verdict};
use crate::event::{Event, EventError, PushRejectedData, RefUpdateData, RepositoryData, UserData};
use crate::wit::{RefChange, RefKind};

pub use forward::{ForwardError, Forwarder};

/// How long `post-receive` (and a rejected `pre-receive`) waits for observers to finish before
/// it exits; git holds the pusher's connection open until then.
pub const OBSERVER_GRACE: Duration = Duration::from_secs(30);

/// Why a hook could not turn git's input into events or dispatch them. Each message says what
/// was wrong and, when it can, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// Standard input held no ref update at all.
    #[error(
        "standard input holds no ref update; git passes `<old-id> <new-id> <ref>` lines to pre-receive and post-receive hooks"
    )]
    NoUpdates,
    /// A line is not `<old> <new> <ref>`.
    #[error(
        "line {line} of standard input is {text:?}, not `<old-id> <new-id> <ref>` as git writes for pre-receive and post-receive hooks"
    )]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The line as read.
        text: String,
    },
    /// An object id is not 40 (SHA-1) or 64 (SHA-256) hex digits.
    #[error("line {line}: {id:?} is not an object id (40 or 64 hexadecimal digits)")]
    BadObjectId {
        /// 1-based line number.
        line: usize,
        /// The word that should have been an id.
        id: String,
    },
    /// The two ids of a line are of different hash algorithms.
    #[error("line {line}: the old and new ids have different lengths ({old} and {new} digits)")]
    MixedObjectIds {
        /// 1-based line number.
        line: usize,
        /// Digits of the old id.
        old: usize,
        /// Digits of the new id.
        new: usize,
    },
    /// The ref is not a full ref name.
    #[error("line {line}: {ref_name:?} is not a full ref name (refs/...)")]
    BadRefName {
        /// 1-based line number.
        line: usize,
        /// The ref as read.
        ref_name: String,
    },
    /// Both ids are zero: the line creates and deletes nothing.
    #[error("line {line}: both ids of {ref_name} are zero, so it is neither created nor deleted")]
    BothZero {
        /// 1-based line number.
        line: usize,
        /// The ref.
        ref_name: String,
    },
    /// `GIT_PUSH_OPTION_COUNT` or one of the options it announces is wrong.
    #[error("push options: {0}")]
    PushOptions(String),
    /// `git` could not be started.
    #[error("cannot run `git {args}`: {source}; is git installed and on PATH?")]
    Spawn {
        /// The arguments.
        args: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// `git` ran and failed.
    #[error("`git {args}` failed: {stderr}")]
    Git {
        /// The arguments.
        args: String,
        /// What git said, trimmed.
        stderr: String,
    },
    /// An event built from the push was refused by the event model (a bug, or an odd ref name).
    #[error("cannot build the event for {ref_name}: {source}")]
    Event {
        /// The ref (or refs) the event is about.
        ref_name: String,
        /// The event model's reason.
        source: EventError,
    },
    /// The in-process dispatcher refused the events (an observer's queue cannot take them).
    #[error("the observers cannot take the push's events: {0}")]
    Refused(#[from] Refused),
    /// Forwarding to `hookwasm serve` failed.
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

// ---------------------------------------------------------------------------------------------
// Git's input
// ---------------------------------------------------------------------------------------------

/// One line of a receive hook's input: what a push asks to do to one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Object id before the push; all zeros when the push creates the ref.
    pub before: String,
    /// Object id after the push; all zeros when the push deletes the ref.
    pub after: String,
    /// Full ref name, e.g. `refs/heads/main`.
    pub ref_name: String,
}

/// Parses git's hook input: one `<old-id> <new-id> <ref>` line per ref (blank lines are
/// skipped). Every line is checked, so a hook never acts on half of a garbled input.
pub fn parse_updates(input: &str) -> Result<Vec<RefUpdate>, GitError> {
    let mut updates = Vec::new();
    for (index, text) in input.lines().enumerate() {
        let line = index + 1;
        if text.trim().is_empty() {
            continue;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let [before, after, ref_name] = words[..] else {
            return Err(GitError::Malformed {
                line,
                text: text.to_owned(),
            });
        };
        for id in [before, after] {
            if !matches!(id.len(), 40 | 64) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(GitError::BadObjectId {
                    line,
                    id: id.to_owned(),
                });
            }
        }
        if before.len() != after.len() {
            return Err(GitError::MixedObjectIds {
                line,
                old: before.len(),
                new: after.len(),
            });
        }
        if !ref_name.starts_with("refs/") || ref_name.len() == "refs/".len() {
            return Err(GitError::BadRefName {
                line,
                ref_name: ref_name.to_owned(),
            });
        }
        if is_zero(before) && is_zero(after) {
            return Err(GitError::BothZero {
                line,
                ref_name: ref_name.to_owned(),
            });
        }
        updates.push(RefUpdate {
            before: before.to_ascii_lowercase(),
            after: after.to_ascii_lowercase(),
            ref_name: ref_name.to_owned(),
        });
    }
    if updates.is_empty() {
        return Err(GitError::NoUpdates);
    }
    Ok(updates)
}

/// Git's null object id (SHA-1 or SHA-256 length): the ref did not exist, or no longer does.
fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

/// Which namespace a ref lives in: `refs/heads/*`, `refs/tags/*`, or anything else.
pub fn ref_kind(ref_name: &str) -> RefKind {
    if ref_name.starts_with("refs/heads/") {
        RefKind::Branch
    } else if ref_name.starts_with("refs/tags/") {
        RefKind::Tag
    } else {
        RefKind::Other
    }
}

/// What an update did to its ref. Only a branch that moves needs history: it is a fast-forward
/// when the old commit is an ancestor of the new one, so `is_ancestor(old, new)` is asked then
/// and only then. Tags and other refs have no fast-forward: any move is `updated`.
pub fn classify(
    update: &RefUpdate,
    is_ancestor: impl FnOnce(&str, &str) -> Result<bool, GitError>,
) -> Result<RefChange, GitError> {
    Ok(if is_zero(&update.before) {
        RefChange::Created
    } else if is_zero(&update.after) {
        RefChange::Deleted
    } else if ref_kind(&update.ref_name) != RefKind::Branch
        || is_ancestor(&update.before, &update.after)?
    {
        RefChange::Updated
    } else {
        RefChange::ForcePushed
    })
}

/// A ref update and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The update as git gave it.
    pub update: RefUpdate,
    /// The ref's namespace.
    pub kind: RefKind,
    /// What happened to it.
    pub change: RefChange,
}

impl Classified {
    /// The CloudEvents `type` of this update, e.g. `git.branch.force-pushed`.
    pub fn event_type(&self) -> &'static str {
        crate::event::ref_event_type(self.kind, self.change)
    }
}

/// Classifies every update of a push, asking `repo` about history where a branch moved.
pub fn classify_all(repo: &Repo, updates: Vec<RefUpdate>) -> Result<Vec<Classified>, GitError> {
    updates
        .into_iter()
        .map(|update| {
            let change = classify(&update, |old, new| repo.is_ancestor(old, new))?;
            Ok(Classified {
                kind: ref_kind(&update.ref_name),
                change,
                update,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The push: what its events share
// ---------------------------------------------------------------------------------------------

/// What every event of one push shares: its id, the repository, the pusher, the push options.
#[derive(Debug, Clone)]
pub struct Push {
    /// A fresh UUID v4; event ids are `<push id>:<n>`.
    pub id: String,
    /// The CloudEvents `source`: `git://<repository path>`.
    pub source: String,
    /// Clone URL: `HOOKWASM_REPO_URL`, else the repository's path.
    pub url: String,
    /// The folder holding the repository (an owner or group on most servers).
    pub project: String,
    /// The repository's folder name without `.git`.
    pub name: String,
    /// Who pushed; see [`pusher`].
    pub pusher: String,
    /// The pusher's e-mail, from `GIT_PUSHER_EMAIL`.
    pub email: Option<String>,
    /// `git push -o` options, in order.
    pub options: Vec<String>,
    /// When the hook started: every event of the push carries it.
    pub time: jiff::Timestamp,
}

impl Push {
    /// A new push to the repository at `repo_path` (its work tree, or the bare repository's
    /// folder), described by the hook's environment `env`.
    pub fn new(repo_path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Push, GitError> {
        let env = |name: &str| env(name).filter(|value| !value.is_empty());
        let folder_name = |path: Option<&Path>| {
            path.and_then(Path::file_name)
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let dir_name = folder_name(Some(repo_path));
        let (username, email) = pusher(env);
        Ok(Push {
            id: uuid::Uuid::new_v4().to_string(),
            source: format!("git://{}", repo_path.display()),
            url: env("HOOKWASM_REPO_URL").unwrap_or_else(|| repo_path.display().to_string()),
            project: folder_name(repo_path.parent()),
            name: dir_name
                .strip_suffix(".git")
                .unwrap_or(&dir_name)
                .to_owned(),
            pusher: username,
            email,
            options: push_options(env)?,
            time: jiff::Timestamp::now(),
        })
    }

    fn repository(&self) -> RepositoryData {
        RepositoryData {
            url: self.url.clone(),
            project: self.project.clone(),
            name: self.name.clone(),
        }
    }

    fn user(&self) -> UserData {
        UserData {
            username: self.pusher.clone(),
            email: self.email.clone(),
        }
    }

    /// One event per update, in git's order; ids `<push id>:1`, `<push id>:2`, …
    pub fn ref_events(&self, updates: &[Classified]) -> Result<Vec<Event>, GitError> {
        updates
            .iter()
            .enumerate()
            .map(|(index, classified)| {
                let update = &classified.update;
                let data = RefUpdateData {
                    push_id: self.id.clone(),
                    repository: self.repository(),
                    pusher: self.user(),
                    ref_name: update.ref_name.clone(),
                    before: update.before.clone(),
                    after: update.after.clone(),
                    push_options: self.options.clone(),
                };
                self.event(
                    format!("{}:{}", self.id, index + 1),
                    classified.event_type(),
                    Some(&update.ref_name),
                    json!(data),
                )
                .map_err(|source| GitError::Event {
                    ref_name: update.ref_name.clone(),
                    source,
                })
            })
            .collect()
    }

    /// The `git.push.rejected` event for this push: every ref it tried to update, and why it
    /// was refused.
    pub fn rejected_event(&self, updates: &[Classified], reason: &str) -> Result<Event, GitError> {
        let refs: Vec<String> = updates.iter().map(|c| c.update.ref_name.clone()).collect();
        let data = PushRejectedData {
            push_id: self.id.clone(),
            repository: self.repository(),
            pusher: self.user(),
            refs: refs.clone(),
            reason: reason.to_owned(),
        };
        self.event(
            format!("{}:rejected", self.id),
            "git.push.rejected",
            None,
            json!(data),
        )
        .map_err(|source| GitError::Event {
            ref_name: refs.join(", "),
            source,
        })
    }

    fn event(
        &self,
        id: String,
        event_type: &str,
        subject: Option<&str>,
        data: serde_json::Value,
    ) -> Result<Event, EventError> {
        Event::from_json(json!({
            "specversion": "1.0",
            "id": id,
            "source": self.source,
            "type": event_type,
            "time": self.time.to_string(),
            "subject": subject,
            "data": data,
        }))
    }
}

/// Who pushed, as the server knows it: `GIT_PUSHER_NAME` (with `GIT_PUSHER_EMAIL`) when the
/// server sets them, else `REMOTE_USER` (git-http-backend behind an authenticating web server),
/// else `GL_USERNAME` (GitLab server hooks), else the system user running the hook (`USER`, the
/// ssh account), else `unknown`. The e-mail comes only from `GIT_PUSHER_EMAIL`.
pub fn pusher(env: impl Fn(&str) -> Option<String>) -> (String, Option<String>) {
    let username = ["GIT_PUSHER_NAME", "REMOTE_USER", "GL_USERNAME", "USER"]
        .into_iter()
        .find_map(&env)
        .unwrap_or_else(|| "unknown".to_owned());
    (username, env("GIT_PUSHER_EMAIL"))
}

/// `git push -o` options, which git passes as `GIT_PUSH_OPTION_COUNT` and
/// `GIT_PUSH_OPTION_<n>` (only when the repository sets `receive.advertisePushOptions`).
fn push_options(env: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, GitError> {
    let Some(count) = env("GIT_PUSH_OPTION_COUNT") else {
        return Ok(Vec::new());
    };
    let count: usize = count.parse().map_err(|_| {
        GitError::PushOptions(format!("GIT_PUSH_OPTION_COUNT is {count:?}, not a number"))
    })?;
    (0..count)
        .map(|n| {
            env(&format!("GIT_PUSH_OPTION_{n}")).ok_or_else(|| {
                GitError::PushOptions(format!(
                    "GIT_PUSH_OPTION_COUNT is {count} but GIT_PUSH_OPTION_{n} is not set"
                ))
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running git
// ---------------------------------------------------------------------------------------------

/// A repository, and the `git` commands hookwasm runs in it: the only place this module starts
/// git. Inside a hook, git passes its environment on: `GIT_DIR`, and during `pre-receive` the
/// quarantine (`GIT_QUARANTINE_PATH`, `GIT_OBJECT_DIRECTORY`, `GIT_ALTERNATE_OBJECT_DIRECTORIES`)
/// where the pushed objects wait until the hook accepts them. Commands inherit that
/// environment, so ancestry checks see the pushed commits.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Absolute path of the git directory (`.git` of a work tree, or the bare repository).
    git_dir: PathBuf,
    /// Where commands run: `None` inside a hook (git already set the environment up).
    dir: Option<PathBuf>,
}

impl Repo {
    /// The repository a hook runs in.
    pub fn from_hook() -> Result<Repo, GitError> {
        Repo::open(None)
    }

    /// The repository at `path` (a work tree, a folder inside it, or a bare repository).
    pub fn at(path: &Path) -> Result<Repo, GitError> {
        Repo::open(Some(path.to_owned()))
    }

    fn open(dir: Option<PathBuf>) -> Result<Repo, GitError> {
        let mut repo = Repo {
            git_dir: PathBuf::new(),
            dir,
        };
        repo.git_dir = PathBuf::from(repo.output(&["rev-parse", "--absolute-git-dir"])?);
        Ok(repo)
    }

    /// The repository as people name it: the work tree for a `.git` folder, else the bare
    /// repository's folder.
    pub fn path(&self) -> &Path {
        match self.git_dir.file_name() {
            Some(name) if name == ".git" => self.git_dir.parent().unwrap_or(&self.git_dir),
            _ => &self.git_dir,
        }
    }

    /// The folder git runs hooks from (`core.hooksPath` when set), absolute.
    pub fn hooks_dir(&self) -> Result<PathBuf, GitError> {
        let path = self.output(&["rev-parse", "--path-format=absolute", "--git-path", "hooks"])?;
        Ok(PathBuf::from(path))
    }

    /// Whether `old` is an ancestor of `new` (`new` contains `old`): `git merge-base
    /// --is-ancestor`, which answers with its exit code.
    pub fn is_ancestor(&self, old: &str, new: &str) -> Result<bool, GitError> {
        let args = ["merge-base", "--is-ancestor", old, new];
        let output = self.run(&args)?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(&args, &output)),
        }
    }

    /// Runs git and returns its trimmed stdout; a non-zero exit is an error with git's stderr.
    fn output(&self, args: &[&str]) -> Result<String, GitError> {
        let output = self.run(args)?;
        if !output.status.success() {
            return Err(failed(args, &output));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn run(&self, args: &[&str]) -> Result<std::process::Output, GitError> {
        let mut command = Command::new("git");
        if let Some(dir) = &self.dir {
            command.arg("-C").arg(dir);
        }
        command
            .args(args)
            .output()
            .map_err(|source| GitError::Spawn {
                args: args.join(" "),
                source,
            })
    }
}

fn failed(args: &[&str], output: &std::process::Output) -> GitError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    GitError::Git {
        args: args.join(" "),
        stderr: if stderr.is_empty() {
            format!("exit status {}", output.status)
        } else {
            stderr
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

/// Where a hook's events go.
#[derive(Debug)]
pub enum Target {
    /// Handlers loaded in this process: the standalone case.
    InProcess(std::sync::Arc<Dispatcher>),
    /// A running `hookwasm serve`, over `POST /v1/events`.
    Forward(Box<Forwarder>),
}

/// One gate's refusal of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The gate.
    pub handler: String,
    /// Why; shown to the pusher.
    pub reason: String,
}

impl Target {
    /// Runs the gates on `events` and returns every refusal (none: allowed).
    async fn gates(&self, events: &[Event]) -> Result<Vec<Denial>, GitError> {
        match self {
            Target::InProcess(dispatcher) => {
                let decisions = dispatcher
                    .submit_to(events, Route::Gates, Backpressure::Wait)
                    .await?;
                Ok(decisions
                    .into_iter()
                    .filter(|decision| decision.verdict == Verdict::Deny)
                    .flat_map(|decision| decision.reasons)
                    .map(|reason| Denial {
                        handler: reason.handler,
                        // Guest text, printed to the pusher and logged: one line, always.
                        reason: crate::escape::escape(&reason.value).into_owned(),
                    })
                    .collect())
            }
            Target::Forward(forwarder) => Ok(forwarder.gates(events).await?),
        }
    }

    /// Hands `events` to the observers and, in process, waits up to [`OBSERVER_GRACE`] for
    /// them to finish: the process exits right after.
    async fn observers(&self, events: &[Event]) -> Result<(), GitError> {
        match self {
            Target::InProcess(dispatcher) => {
                dispatcher.start_delivering();
                // In batches, so a push of more refs than an observer's queue holds waits for
                // room instead of being refused as too large.
                for batch in events.chunks(forward::BATCH) {
                    dispatcher
                        .submit_to(batch, Route::Observers, Backpressure::Wait)
                        .await?;
                }
                let drained = dispatcher.shutdown(OBSERVER_GRACE).await;
                match drained.left {
                    0 => {}
                    left if dispatcher.deliveries().durable() => tracing::warn!(
                        "{left} observer deliveries are still open after {} s; they stay in the outbox for `hookwasm serve` or the next push",
                        OBSERVER_GRACE.as_secs()
                    ),
                    left => tracing::warn!(
                        "{left} observer deliveries were not made within {} s and are lost: eventDelivery.store is \"memory\"",
                        OBSERVER_GRACE.as_secs()
                    ),
                }
                Ok(())
            }
            Target::Forward(forwarder) => Ok(forwarder.observers(events).await?),
        }
    }
}

/// What `pre-receive` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every gate allowed every update: git may move the refs.
    Allowed,
    /// At least one gate refused: git must reject the whole push.
    Rejected(Vec<Denial>),
}

/// `pre-receive`: asks the gates about every update of the push. Any refusal rejects the push
/// (git rejects all of its refs when the hook fails), and then the observers hear each update
/// marked denied (`hookwasmverdict`, `hookwasmdeniedby`) and a `git.push.rejected` event with
/// every ref and reason.
pub async fn pre_receive(
    target: &Target,
    push: &Push,
    updates: &[Classified],
) -> Result<Decision, GitError> {
    let events = push.ref_events(updates)?;
    log_events(&events);
    let denials = target.gates(&events).await?;
    if denials.is_empty() {
        return Ok(Decision::Allowed);
    }
    let reason = denials
        .iter()
        .map(|d| format!("{}: {}", d.handler, d.reason))
        .collect::<Vec<_>>()
        .join("; ");
    // Observers of a refused update hear it as any producer's observers would (see
    // `dispatch::gates`): marked denied, by every gate that refused the push, since git refuses
    // the push as a whole. Then the rejection itself.
    let mut deniers: Vec<&str> = Vec::new();
    for denial in &denials {
        if !deniers.contains(&denial.handler.as_str()) {
            deniers.push(&denial.handler);
        }
    }
    let mut told: Vec<Event> = events
        .iter()
        .map(|event| dispatch::denied_by(event, &deniers))
        .collect();
    told.push(push.rejected_event(updates, &reason)?);
    target.observers(&told).await?;
    Ok(Decision::Rejected(denials))
}

/// `post-receive`: the refs have moved; tells the observers, one event per update.
pub async fn post_receive(
    target: &Target,
    push: &Push,
    updates: &[Classified],
) -> Result<(), GitError> {
    let events = push.ref_events(updates)?;
    log_events(&events);
    target.observers(&events).await
}

/// One info line per event: what the hook made of the push, for whoever debugs a hook with
/// `RUST_LOG=info`.
fn log_events(events: &[Event]) {
    for event in events {
        let data = &event.json()["data"];
        tracing::info!(
            event = event.id(),
            r#type = event.event_type(),
            r#ref = data["ref"].as_str(),
            before = data["before"].as_str(),
            after = data["after"].as_str(),
            "dispatching"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::wit;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn update(before: &str, after: &str, ref_name: &str) -> RefUpdate {
        RefUpdate {
            before: before.into(),
            after: after.into(),
            ref_name: ref_name.into(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn parses_every_line_and_skips_blank_ones() {
        let sha256_zero = "0".repeat(64);
        let sha256 = "ab".repeat(32);
        let input = format!(
            "{A} {B} refs/heads/main\n\n{ZERO} {B} refs/tags/v1\n{sha256} {sha256_zero} refs/notes/commits\n"
        );
        let updates = parse_updates(&input).unwrap();
        assert_eq!(
            updates,
            [
                update(A, B, "refs/heads/main"),
                update(ZERO, B, "refs/tags/v1"),
                update(&sha256, &sha256_zero, "refs/notes/commits"),
            ]
        );
    }

    #[test]
    fn bad_input_names_the_line_and_what_is_wrong() {
        let error = |input: &str| parse_updates(input).unwrap_err().to_string();
        assert_eq!(
            error(""),
            "standard input holds no ref update; git passes `<old-id> <new-id> <ref>` lines to pre-receive and post-receive hooks"
        );
        assert_eq!(
            error(&format!("{A} {B} refs/heads/main\n{A} refs/heads/x\n")),
            format!(
                "line 2 of standard input is \"{A} refs/heads/x\", not `<old-id> <new-id> <ref>` as git writes for pre-receive and post-receive hooks"
            )
        );
        assert_eq!(
            error(&format!("{A} 12345 refs/heads/main")),
            "line 1: \"12345\" is not an object id (40 or 64 hexadecimal digits)"
        );
        let not_hex = "g".repeat(40);
        assert!(error(&format!("{not_hex} {B} refs/heads/main")).contains("is not an object id"));
        assert_eq!(
            error(&format!("{A} {} refs/heads/main", "2".repeat(64))),
            "line 1: the old and new ids have different lengths (40 and 64 digits)"
        );
        assert_eq!(
            error(&format!("{A} {B} main")),
            "line 1: \"main\" is not a full ref name (refs/...)"
        );
        assert_eq!(
            error(&format!("{ZERO} {ZERO} refs/heads/main")),
            "line 1: both ids of refs/heads/main are zero, so it is neither created nor deleted"
        );
    }

    #[test]
    fn branches_need_history_tags_and_other_refs_do_not() {
        let never = |_: &str, _: &str| -> Result<bool, GitError> { panic!("history not needed") };
        let ancestor = |_: &str, _: &str| Ok(true);
        let unrelated = |_: &str, _: &str| Ok(false);
        let change = |u: RefUpdate, answer: &dyn Fn(&str, &str) -> Result<bool, GitError>| {
            classify(&u, answer).unwrap()
        };
        let branch = "refs/heads/topic";
        assert_eq!(change(update(ZERO, B, branch), &never), RefChange::Created);
        assert_eq!(change(update(A, ZERO, branch), &never), RefChange::Deleted);
        assert_eq!(change(update(A, B, branch), &ancestor), RefChange::Updated);
        assert_eq!(
            change(update(A, B, branch), &unrelated),
            RefChange::ForcePushed
        );
        for other in ["refs/tags/v1", "refs/notes/commits", "refs/pull/1/head"] {
            assert_eq!(change(update(A, B, other), &never), RefChange::Updated);
        }
        let broken = |_: &str, _: &str| {
            Err(GitError::Git {
                args: "merge-base".into(),
                stderr: "bad object".into(),
            })
        };
        assert!(classify(&update(A, B, branch), broken).is_err());
    }

    #[test]
    fn event_types_follow_the_taxonomy() {
        let typed = |ref_name: &str, change| {
            Classified {
                update: update(A, B, ref_name),
                kind: ref_kind(ref_name),
                change,
            }
            .event_type()
        };
        assert_eq!(
            typed("refs/heads/a", RefChange::ForcePushed),
            "git.branch.force-pushed"
        );
        assert_eq!(typed("refs/tags/v1", RefChange::Deleted), "git.tag.deleted");
        assert_eq!(typed("refs/notes/x", RefChange::Created), "git.ref.created");
        // The names are the event model's: each one parses back to the same kind and change.
        let push = Push::new(Path::new("/srv/git/acme/widgets.git"), env(&[])).unwrap();
        for ref_name in ["refs/heads/a", "refs/tags/v1", "refs/notes/x"] {
            for change in [
                RefChange::Created,
                RefChange::Updated,
                RefChange::ForcePushed,
                RefChange::Deleted,
            ] {
                let classified = Classified {
                    update: update(A, B, ref_name),
                    kind: ref_kind(ref_name),
                    change,
                };
                let event = &push.ref_events(&[classified]).unwrap()[0];
                let wit::Payload::RefUpdate(payload) = &event.wit().payload else {
                    panic!("not a ref update")
                };
                assert_eq!(payload.kind, ref_kind(ref_name));
                let expected = match (payload.kind, change) {
                    (RefKind::Branch, _) | (_, RefChange::Created | RefChange::Deleted) => change,
                    _ => RefChange::Updated,
                };
                assert_eq!(payload.change, expected);
            }
        }
    }

    #[test]
    fn a_push_describes_its_repository_pusher_and_options() {
        let push = Push::new(
            Path::new("/srv/git/acme/widgets.git"),
            env(&[
                ("USER", "git"),
                ("REMOTE_USER", "ada"),
                ("GIT_PUSH_OPTION_COUNT", "2"),
                ("GIT_PUSH_OPTION_0", "ci.skip"),
                ("GIT_PUSH_OPTION_1", "reviewer=bob"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (push.url.as_str(), push.project.as_str(), push.name.as_str()),
            ("/srv/git/acme/widgets.git", "acme", "widgets")
        );
        assert_eq!(push.source, "git:///srv/git/acme/widgets.git");
        assert_eq!(push.pusher, "ada");
        assert_eq!(push.options, ["ci.skip", "reviewer=bob"]);
        assert!(uuid::Uuid::parse_str(&push.id).is_ok());

        let updates = [
            Classified {
                update: update(A, B, "refs/heads/main"),
                kind: RefKind::Branch,
                change: RefChange::Updated,
            },
            Classified {
                update: update(ZERO, B, "refs/tags/v1"),
                kind: RefKind::Tag,
                change: RefChange::Created,
            },
        ];
        let events = push.ref_events(&updates).unwrap();
        assert_eq!(events[0].id(), format!("{}:1", push.id));
        assert_eq!(events[1].id(), format!("{}:2", push.id));
        let json = events[1].json();
        assert_eq!(json["type"], "git.tag.created");
        assert_eq!(json["subject"], "refs/tags/v1");
        assert_eq!(json["data"]["pushId"], push.id.as_str());
        assert_eq!(json["data"]["before"], ZERO);
        assert_eq!(json["data"]["after"], B);
        assert_eq!(
            json["data"]["pusher"],
            json!({"username": "ada", "email": null})
        );
        assert_eq!(
            json["data"]["pushOptions"],
            json!(["ci.skip", "reviewer=bob"])
        );
        assert_eq!(json["time"], events[0].json()["time"]);

        let rejected = push.rejected_event(&updates, "protect-main: no").unwrap();
        assert_eq!(rejected.id(), format!("{}:rejected", push.id));
        assert_eq!(rejected.json()["type"], "git.push.rejected");
        assert_eq!(
            rejected.json()["data"]["refs"],
            json!(["refs/heads/main", "refs/tags/v1"])
        );
        assert_eq!(rejected.json()["data"]["reason"], "protect-main: no");
    }

    #[test]
    fn work_trees_name_the_repository_by_their_folder_and_a_url_can_be_given() {
        let push = Push::new(
            Path::new("/home/ada/widgets"),
            env(&[(
                "HOOKWASM_REPO_URL",
                "https://git.example.com/acme/widgets.git",
            )]),
        )
        .unwrap();
        assert_eq!(push.url, "https://git.example.com/acme/widgets.git");
        assert_eq!(
            (push.project.as_str(), push.name.as_str()),
            ("ada", "widgets")
        );
    }

    #[test]
    fn the_pusher_comes_from_the_first_variable_set() {
        let who = |pairs: &[(&str, &str)]| pusher(env(pairs));
        assert_eq!(
            who(&[
                ("GIT_PUSHER_NAME", "ada"),
                ("GIT_PUSHER_EMAIL", "ada@example.com"),
                ("REMOTE_USER", "bob"),
            ]),
            ("ada".into(), Some("ada@example.com".into()))
        );
        assert_eq!(
            who(&[("GL_USERNAME", "carol"), ("USER", "git")]),
            ("carol".into(), None)
        );
        assert_eq!(who(&[("USER", "git")]), ("git".into(), None));
        assert_eq!(who(&[]), ("unknown".into(), None));
        // `Push::new` treats an empty variable as unset.
        let push = Push::new(
            Path::new("/r.git"),
            env(&[("GIT_PUSHER_NAME", ""), ("USER", "git")]),
        )
        .unwrap();
        assert_eq!(push.pusher, "git");
    }

    #[test]
    fn push_option_mistakes_are_reported() {
        let options = |pairs: &[(&str, &str)]| push_options(env(pairs));
        assert_eq!(options(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            options(&[("GIT_PUSH_OPTION_COUNT", "x")])
                .unwrap_err()
                .to_string(),
            "push options: GIT_PUSH_OPTION_COUNT is \"x\", not a number"
        );
        assert_eq!(
            options(&[("GIT_PUSH_OPTION_COUNT", "1")])
                .unwrap_err()
                .to_string(),
            "push options: GIT_PUSH_OPTION_COUNT is 1 but GIT_PUSH_OPTION_0 is not set"
        );
    }
}
