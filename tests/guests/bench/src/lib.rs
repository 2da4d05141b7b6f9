//! A handler for the host's benchmark (`host/benches/perf.rs`), built with the SDK like any
//! plugin. Its config picks the behaviour; the logic lives in [`logic`], which the benchmark
//! also runs natively as the floor.
//!
//! | behavior | what it does per event |
//! |---|---|
//! | `trivial` | allows, no annotations |
//! | `realistic` | parses the event's CloudEvent JSON (`event.json`), builds a 1 KiB summary, allows with `repository=<project>/<name>` and `summary=<1 KiB>` |

pub mod logic;

use hookwasm_sdk::{Event, Handler, Outcome, Result};
use logic::{Behavior, Config};

/// The handler: its config.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct Bench(Config);

impl Handler for Bench {
    fn on_event(&self, event: &Event) -> Result<Outcome> {
        match self.0.behavior {
            Behavior::Trivial => Ok(Outcome::allow()),
            Behavior::Realistic => {
                let [(k1, v1), (k2, v2)] = logic::realistic(&event.json)?;
                Ok(Outcome::allow().annotate(k1, v1).annotate(k2, v2))
            }
        }
    }
}

hookwasm_sdk::export_handler!(Bench);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::logic::{SUMMARY_BYTES, realistic};

    #[test]
    fn realistic_reads_the_event_and_builds_a_1_kib_summary() {
        let event = r#"{"specversion":"1.0","id":"e1","source":"s","type":"git.branch.updated",
            "data":{"pushId":"p","ref":"refs/heads/main","before":"a1","after":"b2",
            "repository":{"url":"u","project":"acme","name":"widgets"},
            "pusher":{"username":"ada"}}}"#;
        let [(k1, v1), (k2, v2)] = realistic(event).unwrap();
        assert_eq!((k1.as_str(), v1.as_str()), ("repository", "acme/widgets"));
        assert_eq!(k2, "summary");
        assert_eq!(v2.len(), SUMMARY_BYTES);
        assert!(v2.starts_with("e1 (git.branch.updated from s): ada moved refs/heads/main"));
        assert!(
            realistic("{}")
                .unwrap_err()
                .starts_with("cannot read the event")
        );
    }
}
