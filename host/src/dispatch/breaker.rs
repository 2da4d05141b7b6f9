//! Quarantine: a circuit breaker per handler.
//!
//! After `afterFailures` consecutive failures the breaker opens: the handler is not run until its
//! backoff has passed. Then one event probes it (half-open): success closes the breaker, failure
//! opens it again for twice as long, up to `maxBackoffMs`. While it is open, gates answer at once
//! by their failure policy and observers hold their queued events (the queue's bound then pushes
//! back on producers).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::QuarantinePolicy;

/// Whether an event may run the handler now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: run.
    Run,
    /// The backoff has passed: run this one event as the probe.
    Probe,
    /// Quarantined: do not run; the next probe may start after `retry_in`.
    Refuse {
        /// Time until the next probe may start (zero while a probe is running).
        retry_in: Duration,
    },
}

/// A change of state worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open after `failures` consecutive failures.
    Opened {
        /// Consecutive failures that opened it.
        failures: u32,
        /// How long until the probe.
        backoff: Duration,
    },
    /// A probe failed: open again, for longer.
    Reopened {
        /// How long until the next probe.
        backoff: Duration,
    },
    /// A probe succeeded: back in service.
    Closed,
}

/// The breaker's state as `GET /v1/handlers` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerView {
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// While open: milliseconds until the next probe may start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_in_ms: Option<u64>,
    /// How many times the handler has been quarantined.
    pub quarantines: u64,
}

/// A handler's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    policy: QuarantinePolicy,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    consecutive_failures: u32,
    quarantines: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant, backoff: Duration },
    Probing { backoff: Duration },
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: QuarantinePolicy) -> Breaker {
        Breaker {
            policy,
            state: Mutex::new(State {
                phase: Phase::Closed,
                consecutive_failures: 0,
                quarantines: 0,
            }),
        }
    }

    /// Decides whether an event may run the handler now; a `Probe` admission must be followed
    /// by [`Breaker::record`].
    pub fn admit(&self) -> Admission {
        let mut state = self.lock();
        let now = Instant::now();
        match state.phase {
            Phase::Closed => Admission::Run,
            Phase::Open { until, backoff } if now >= until => {
                state.phase = Phase::Probing { backoff };
                Admission::Probe
            }
            Phase::Open { until, .. } => Admission::Refuse {
                retry_in: until - now,
            },
            Phase::Probing { .. } => Admission::Refuse {
                retry_in: Duration::ZERO,
            },
        }
    }

    /// Records how an admitted invocation ended.
    pub fn record(&self, admission: Admission, succeeded: bool) -> Option<Transition> {
        let mut state = self.lock();
        let now = Instant::now();
        if succeeded {
            state.consecutive_failures = 0;
        } else {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        }
        match (state.phase, admission) {
            (Phase::Probing { .. }, Admission::Probe) if succeeded => {
                state.phase = Phase::Closed;
                Some(Transition::Closed)
            }
            (Phase::Probing { backoff }, Admission::Probe) => {
                let backoff = (backoff * 2).min(self.policy.max_backoff());
                state.phase = Phase::Open {
                    until: now + backoff,
                    backoff,
                };
                state.quarantines += 1;
                Some(Transition::Reopened { backoff })
            }
            (Phase::Closed, _) if state.consecutive_failures >= self.policy.after_failures => {
                let backoff = self.policy.backoff();
                state.phase = Phase::Open {
                    until: now + backoff,
                    backoff,
                };
                state.quarantines += 1;
                Some(Transition::Opened {
                    failures: state.consecutive_failures,
                    backoff,
                })
            }
            // A run admitted before the breaker opened: it only updates the failure count.
            _ => None,
        }
    }

    /// Gives back an admission that was not used (an observer found nothing to deliver): a
    /// probe that never ran leaves the next one free to start at once.
    pub fn release(&self, admission: Admission) {
        if admission != Admission::Probe {
            return;
        }
        let mut state = self.lock();
        if let Phase::Probing { backoff } = state.phase {
            state.phase = Phase::Open {
                until: Instant::now(),
                backoff,
            };
        }
    }

    /// The state as it is now.
    pub fn view(&self) -> BreakerView {
        let state = self.lock();
        let (name, probe_in) = match state.phase {
            Phase::Closed => ("closed", None),
            Phase::Open { until, .. } => (
                "open",
                Some(until.saturating_duration_since(Instant::now())),
            ),
            Phase::Probing { .. } => ("half-open", None),
        };
        BreakerView {
            state: name,
            consecutive_failures: state.consecutive_failures,
            probe_in_ms: probe_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            quarantines: state.quarantines,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few plain values, valid after any panic elsewhere.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(backoff_ms: u64) -> Breaker {
        Breaker::new(QuarantinePolicy {
            after_failures: 3,
            backoff_ms,
            max_backoff_ms: backoff_ms * 3,
        })
    }

    fn fail(b: &Breaker) -> Option<Transition> {
        let admission = b.admit();
        b.record(admission, false)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(60_000);
        assert_eq!(fail(&b), None);
        assert_eq!(
            b.record(b.admit(), true),
            None,
            "a success resets the count"
        );
        assert_eq!(fail(&b), None);
        assert_eq!(fail(&b), None);
        assert!(matches!(
            fail(&b),
            Some(Transition::Opened { failures: 3, .. })
        ));
        assert!(
            matches!(b.admit(), Admission::Refuse { retry_in } if retry_in > Duration::from_secs(59))
        );
        assert_eq!(b.view().state, "open");
    }

    #[test]
    fn probes_once_then_closes_or_backs_off_up_to_the_cap() {
        let b = breaker(0);
        for _ in 0..3 {
            fail(&b);
        }
        let probe = b.admit();
        assert_eq!(probe, Admission::Probe);
        assert_eq!(
            b.admit(),
            Admission::Refuse {
                retry_in: Duration::ZERO
            },
            "one probe at a time"
        );
        assert_eq!(b.view().state, "half-open");
        assert_eq!(
            b.record(probe, false),
            Some(Transition::Reopened {
                backoff: Duration::ZERO
            })
        );
        let probe = b.admit();
        assert_eq!(b.record(probe, true), Some(Transition::Closed));
        assert_eq!(b.admit(), Admission::Run);
        assert_eq!(b.view().quarantines, 2);

        let capped = breaker(10);
        for _ in 0..3 {
            fail(&capped);
        }
        std::thread::sleep(Duration::from_millis(15));
        let probe = capped.admit();
        assert_eq!(
            capped.record(probe, false),
            Some(Transition::Reopened {
                backoff: Duration::from_millis(20)
            })
        );
        std::thread::sleep(Duration::from_millis(25));
        let probe = capped.admit();
        assert_eq!(
            capped.record(probe, false),
            Some(Transition::Reopened {
                backoff: Duration::from_millis(30)
            })
        );
    }
}
