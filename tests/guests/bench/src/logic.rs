//! The benchmark handlers' logic, in plain Rust over strings. The guest (`lib.rs`) calls it, and
//! `host/benches/perf.rs` compiles this same file natively to measure the floor: what the work
//! costs with no sandbox at all.

use std::fmt::Write as _;

use serde::Deserialize;

/// The handler's config: `{"behavior": "trivial"}` or `{"behavior": "realistic"}`.
#[derive(Debug, Deserialize)]
pub struct Config {
    /// What each event does.
    pub behavior: Behavior,
}

/// What the handler does with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    /// Allows, with no annotations: what the SDK and the sandbox cost by themselves.
    Trivial,
    /// Parses the CloudEvent JSON, builds a 1 KiB summary, and returns two annotations.
    Realistic,
}

/// Length of the summary the realistic handler builds.
pub const SUMMARY_BYTES: usize = 1024;

/// The part of a `git.*` CloudEvent the realistic handler reads.
#[derive(Debug, Deserialize)]
struct CloudEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    source: String,
    data: PushData,
}

#[derive(Debug, Deserialize)]
struct PushData {
    #[serde(rename = "ref")]
    ref_name: String,
    before: String,
    after: String,
    repository: Repository,
    pusher: Pusher,
}

#[derive(Debug, Deserialize)]
struct Repository {
    project: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Pusher {
    username: String,
}

/// The realistic handler's work on the event's JSON: two annotations, `repository` and a 1 KiB
/// `summary`.
pub fn realistic(event_json: &str) -> Result<[(String, String); 2], String> {
    let event: CloudEvent =
        serde_json::from_str(event_json).map_err(|e| format!("cannot read the event: {e}"))?;
    let data = &event.data;
    let mut summary = String::with_capacity(SUMMARY_BYTES + 256);
    while summary.len() < SUMMARY_BYTES {
        let _ = write!(
            summary,
            "{} ({} from {}): {} moved {} from {} to {} in {}/{}; ",
            event.id,
            event.event_type,
            event.source,
            data.pusher.username,
            data.ref_name,
            data.before,
            data.after,
            data.repository.project,
            data.repository.name,
        );
    }
    // Every character written above is ASCII unless the event's strings are not; cut on a
    // character boundary either way.
    let mut cut = SUMMARY_BYTES;
    while !summary.is_char_boundary(cut) {
        cut -= 1;
    }
    summary.truncate(cut);
    let repository = format!("{}/{}", data.repository.project, data.repository.name);
    Ok([
        ("repository".to_owned(), repository),
        ("summary".to_owned(), summary),
    ])
}
