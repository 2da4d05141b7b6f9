//! What a handler's invocation means for the producer: its effective verdict under the
//! failure policy, the JSON line `call` and `replay` print, and the merged verdict of all gates.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::config::{FailurePolicy, Mode};
use crate::sandbox::{Invocation, Status};
use crate::wit;

/// Allow or deny, as JSON (read back by a git hook forwarding to `serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The action may go on.
    Allow,
    /// The action must not go on.
    Deny,
}

impl Verdict {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// One handler's invocation for one event, as `call`, `replay` and `POST /v1/events` report it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The handler's name.
    pub handler: String,
    /// SHA-256 of the module version that ran.
    pub digest: String,
    /// Observer or gate; absent when a module is called directly (`hookwasm call`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The event's id.
    pub event_id: String,
    /// How the invocation ended.
    pub status: Status,
    /// For gates: the verdict that counts (a failure follows the failure policy). For observers:
    /// what the handler answered, or `null` when it failed.
    pub verdict: Option<Verdict>,
    /// Why: the deny reason, or the failure's cause.
    pub reason: Option<String>,
    /// The handler's annotations; a repeated key keeps its last value.
    #[serde(serialize_with = "annotations_as_object")]
    pub annotations: Vec<(String, String)>,
    /// Fuel used.
    pub fuel_consumed: u64,
    /// Wall-clock time in milliseconds, instantiation included.
    pub duration_ms: f64,
}

impl Report {
    /// Interprets an invocation of a handler in `mode` with `policy`; `None` for a module called
    /// directly, whose failures have no verdict.
    pub fn new(
        handler: &str,
        digest: &str,
        role: Option<(Mode, FailurePolicy)>,
        event_id: &str,
        invocation: Invocation,
    ) -> Report {
        let (verdict, reason, annotations) = match (invocation.status, invocation.outcome) {
            (Status::Ok, Some(outcome)) => {
                let (verdict, reason) = match outcome.verdict {
                    wit::Verdict::Allow => (Verdict::Allow, None),
                    wit::Verdict::Deny(reason) => (Verdict::Deny, Some(reason)),
                };
                (Some(verdict), reason, outcome.annotations)
            }
            (status, _) => {
                let cause = invocation.error.unwrap_or_else(|| "no outcome".into());
                let verdict = match role {
                    None | Some((Mode::Observe, _)) => None,
                    Some((Mode::Gate, FailurePolicy::Closed)) => Some(Verdict::Deny),
                    Some((Mode::Gate, FailurePolicy::Open)) => Some(Verdict::Allow),
                };
                let reason = match verdict {
                    Some(Verdict::Deny) => {
                        format!("{handler} failed ({status}: {cause}); failurePolicy closed denies")
                    }
                    Some(Verdict::Allow) => {
                        format!("{handler} failed ({status}: {cause}); failurePolicy open allows")
                    }
                    None => format!("{status}: {cause}"),
                };
                (verdict, Some(reason), Vec::new())
            }
        };
        Report {
            handler: handler.to_owned(),
            digest: digest.to_owned(),
            mode: role.map(|(mode, _)| mode),
            event_id: event_id.to_owned(),
            status: invocation.status,
            verdict,
            reason,
            annotations,
            fuel_consumed: invocation.fuel_consumed,
            duration_ms: invocation.duration.as_secs_f64() * 1e3,
        }
    }

    /// The report as the event history keeps it: attempt `attempt`, finished now.
    pub fn outcome(&self, attempt: u32) -> crate::outbox::Outcome {
        let mut annotations = serde_json::Map::new();
        for (key, value) in &self.annotations {
            annotations.insert(key.clone(), serde_json::Value::String(value.clone()));
        }
        let failed = self.status != Status::Ok;
        crate::outbox::Outcome {
            handler: self.handler.clone(),
            mode: self.mode.map_or("call", Mode::as_str).to_owned(),
            digest: self.digest.clone(),
            status: self.status.to_string(),
            verdict: self.verdict.map(|v| v.as_str().to_owned()),
            reason: self.reason.clone(),
            cause: failed.then(|| {
                self.reason
                    .clone()
                    .unwrap_or_else(|| self.status.to_string())
            }),
            annotations,
            fuel_consumed: self.fuel_consumed,
            duration_ms: self.duration_ms,
            attempt,
            at: crate::outbox::now(),
        }
    }

    /// Whether the handler failed or denied: `call` and `replay` exit 1 then.
    pub fn failed_or_denied(&self) -> bool {
        self.status != Status::Ok || self.verdict == Some(Verdict::Deny)
    }
}

fn annotations_as_object<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(None)?;
    let mut seen = std::collections::HashMap::new();
    for (i, (key, _)) in pairs.iter().enumerate() {
        seen.insert(key.as_str(), i);
    }
    for (i, (key, value)) in pairs.iter().enumerate() {
        if seen.get(key.as_str()) == Some(&i) {
            map.serialize_entry(key, value)?;
        }
    }
    map.end()
}

/// The merged answer of every gate subscribed to an event: any deny denies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The event's id.
    pub event_id: String,
    /// Deny if any gate denied (or failed closed); allow otherwise, also when no gate ran.
    pub verdict: Verdict,
    /// Every deny reason, with the gate that gave it.
    pub reasons: Vec<Attributed>,
    /// Every gate's annotations, with the gate that gave them.
    pub annotations: Vec<Attributed>,
    /// Each gate's report, in config order.
    pub gates: Vec<Report>,
    /// How many observers the event was queued for (stored in the outbox).
    pub observers_queued: usize,
    /// The event (same `source` and `id`) was accepted before, so it was not stored or
    /// delivered again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A reason or annotation and the handler it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attributed {
    /// The handler's name.
    pub handler: String,
    /// The annotation key; absent for reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The reason or annotation value.
    pub value: String,
}

impl Decision {
    /// Merges gate reports (in config order).
    pub fn merge(event_id: &str, gates: Vec<Report>, observers_queued: usize) -> Decision {
        let mut reasons = Vec::new();
        let mut annotations = Vec::new();
        for gate in &gates {
            if gate.verdict == Some(Verdict::Deny) {
                reasons.push(Attributed {
                    handler: gate.handler.clone(),
                    key: None,
                    value: gate.reason.clone().unwrap_or_else(|| "denied".into()),
                });
            }
            annotations.extend(gate.annotations.iter().map(|(k, v)| Attributed {
                handler: gate.handler.clone(),
                key: Some(k.clone()),
                value: v.clone(),
            }));
        }
        Decision {
            event_id: event_id.to_owned(),
            verdict: if reasons.is_empty() {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            reasons,
            annotations,
            gates,
            observers_queued,
            duplicate: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn invocation(
        status: Status,
        outcome: Option<wit::Outcome>,
        error: Option<&str>,
    ) -> Invocation {
        Invocation {
            status,
            outcome,
            error: error.map(str::to_owned),
            fuel_consumed: 7,
            duration: Duration::from_millis(2),
        }
    }

    #[test]
    fn failures_follow_the_failure_policy_and_say_so() {
        let failed = || invocation(Status::Timeout, None, Some("did not answer within 5 ms"));
        let closed = Report::new(
            "g",
            "d",
            Some((Mode::Gate, FailurePolicy::Closed)),
            "e",
            failed(),
        );
        assert_eq!(closed.verdict, Some(Verdict::Deny));
        assert_eq!(
            closed.reason.as_deref(),
            Some("g failed (timeout: did not answer within 5 ms); failurePolicy closed denies")
        );
        let open = Report::new(
            "g",
            "d",
            Some((Mode::Gate, FailurePolicy::Open)),
            "e",
            failed(),
        );
        assert_eq!(open.verdict, Some(Verdict::Allow));
        let observer = Report::new(
            "o",
            "d",
            Some((Mode::Observe, FailurePolicy::Open)),
            "e",
            failed(),
        );
        assert_eq!(observer.verdict, None);
        assert!(observer.failed_or_denied());
    }

    #[test]
    fn any_deny_denies_and_every_reason_is_kept() {
        let deny = |reason: &str| wit::Outcome {
            verdict: wit::Verdict::Deny(reason.into()),
            annotations: vec![("rule".into(), reason.into())],
        };
        let allow = wit::Outcome {
            verdict: wit::Verdict::Allow,
            annotations: vec![],
        };
        let gates = vec![
            Report::new(
                "a",
                "d",
                Some((Mode::Gate, FailurePolicy::Closed)),
                "e",
                invocation(Status::Ok, Some(deny("no")), None),
            ),
            Report::new(
                "b",
                "d",
                Some((Mode::Gate, FailurePolicy::Closed)),
                "e",
                invocation(Status::Ok, Some(allow), None),
            ),
            Report::new(
                "c",
                "d",
                Some((Mode::Gate, FailurePolicy::Closed)),
                "e",
                invocation(Status::Ok, Some(deny("never")), None),
            ),
        ];
        let decision = Decision::merge("e", gates, 2);
        assert_eq!(decision.verdict, Verdict::Deny);
        let reasons: Vec<_> = decision
            .reasons
            .iter()
            .map(|r| (r.handler.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(reasons, [("a", "no"), ("c", "never")]);
        assert_eq!(decision.annotations.len(), 2);
        assert_eq!(Decision::merge("e", vec![], 0).verdict, Verdict::Allow);
    }
}
