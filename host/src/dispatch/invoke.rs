//! Running one handler version on one event, for gates and observers alike: the breaker's
//! admission, the trace span, the counters, the log line and the last failure.

use std::time::Duration;

use crate::config::Mode;
use crate::escape::escape;
use crate::event::Event;
use crate::sandbox::{Invocation, Status};
use crate::trace;

use super::breaker::{Admission, Transition};
use super::registry::{Failure, Slot, Version};
use super::report::{Report, Verdict};

impl Slot {
    /// Runs `version` on one event as `admission` allows (a quarantined handler is not run and
    /// reports `quarantined`), records the outcome, and logs failures, denials and quarantine
    /// changes. Everything the guest said is escaped in the log.
    pub(super) async fn invoke(
        &self,
        event: &Event,
        version: &Version,
        admission: Admission,
    ) -> Report {
        let spec = &version.spec;
        let digest = version.handler.digest();
        let invocation = match admission {
            Admission::Refuse { retry_in } => Invocation {
                status: Status::Quarantined,
                outcome: None,
                error: Some(format!(
                    "quarantined after repeated failures; next probe in {} ms",
                    retry_in.as_millis()
                )),
                fuel_consumed: 0,
                duration: Duration::ZERO,
            },
            Admission::Run | Admission::Probe => {
                let span = trace::HandlerSpan::start(&self.name, role_of(spec.mode), digest, event);
                let invocation = span.scope(version.handler.on_event(event)).await;
                span.end(
                    invocation.status.as_str(),
                    invocation.fuel_consumed,
                    invocation.error.as_deref(),
                );
                let ok = invocation.status == Status::Ok;
                log_transition(&self.name, version.breaker.record(admission, ok));
                invocation
            }
        };
        let role = Some((spec.mode, spec.failure_policy));
        let report = Report::new(&self.name, digest, role, event.id(), invocation);
        let denied = spec.mode == Mode::Gate && report.verdict == Some(Verdict::Deny);
        let duration = Duration::from_secs_f64(report.duration_ms / 1e3);
        self.stats
            .record(report.status, denied, report.fuel_consumed, duration);
        let version = &digest[..12];
        let event = event.id();
        let reason = escape(report.reason.as_deref().unwrap_or_default());
        match report.status {
            Status::Ok if denied => {
                tracing::debug!(handler = %self.name, version, event, "denied: {reason}");
            }
            Status::Ok | Status::Quarantined => {
                tracing::debug!(handler = %self.name, version, event, status = %report.status, "handled");
            }
            _ => {
                tracing::warn!(handler = %self.name, version, event, cause = %report.status, "handler failed: {reason}");
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure {
                    at: jiff::Timestamp::now().to_string(),
                    event_id: event.to_owned(),
                    status: report.status,
                    reason: report.reason.clone(),
                });
            }
        }
        report
    }
}

/// How a span names a handler's role.
fn role_of(mode: Mode) -> &'static str {
    match mode {
        Mode::Gate => "gate",
        Mode::Observe => "observer",
    }
}

/// Logs a breaker's change of state.
pub(super) fn log_transition(handler: &str, transition: Option<Transition>) {
    match transition {
        Some(Transition::Opened { failures, backoff }) => tracing::warn!(
            handler,
            "quarantined after {failures} consecutive failures; probing again in {} ms",
            backoff.as_millis()
        ),
        Some(Transition::Reopened { backoff }) => tracing::warn!(
            handler,
            "probe failed; quarantined again, probing in {} ms",
            backoff.as_millis()
        ),
        Some(Transition::Closed) => tracing::info!(handler, "probe succeeded; back in service"),
        None => {}
    }
}
