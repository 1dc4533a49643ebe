//! Per-action gates: the circuit breaker, the pause after a 410, and the
//! wait a destination asks for.
//! (Ordering by key is the store's: it claims one job of a key at a time.)
//!
//! Breaker: after `threshold` consecutive retryable failures (the target
//! looks down) the action is *open* for `cooldown`: its jobs wait, without
//! using attempts. Then one job probes (*half-open*): success closes it,
//! failure opens it again. Permanent failures are about the job, not the
//! target, and do not count. A target that answers 410 Gone *disables* the
//! action until `switchyard actions enable NAME`. An operator may *pause*
//! an action (`switchyard actions pause NAME`, the dashboard): its jobs
//! wait, none lost, until it is enabled again. A target that answers 429
//! or 503 with `Retry-After` has the whole action *throttled* until then
//! (at most [`THROTTLE_CAP_MS`]): every job of it waits, not only the one
//! that got the answer. Such a refusal for load is not a failure the
//! breaker counts: the target is up, and says when to come back.

use std::sync::Mutex;
use std::time::Duration;

use crate::host::ExecOutcome;
use crate::store::ActionState;

/// What to do with a job of a gated action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Run,
    /// Put back, due again at this time (ms); no attempt used: the breaker
    /// is open, or the target said when to come back.
    Wait(i64),
    /// The same, held by an operator's pause or a 410 until the action is
    /// enabled (looked at again at this time).
    Hold(i64),
}

/// A change worth logging and storing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Opened {
        until_ms: i64,
        failures: u32,
    },
    /// The target asked to wait (429/503 with `Retry-After`).
    Throttled {
        until_ms: i64,
    },
    Closed,
    Disabled(String),
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until_ms: Option<i64>,
    /// Until when the target asked the action to wait.
    throttled_until_ms: Option<i64>,
    probing: bool,
    disabled: Option<String>,
    /// Paused by an operator (why, and by whom).
    paused: Option<String>,
    /// When the state last changed, here or as the store said (ms).
    changed_at_ms: i64,
}

/// One action's breaker.
#[derive(Debug)]
pub struct Breaker {
    /// Consecutive retryable failures that open it; 0: never.
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// How long a job of a disabled action waits before it is looked at again.
const DISABLED_RECHECK_MS: i64 = 60_000;
/// How long a job waits while another probes a half-open breaker.
const PROBE_WAIT_MS: i64 = 1_000;
/// The longest a target's `Retry-After` throttles its whole action (the
/// job that got it waits as long as it says, up to a day).
pub const THROTTLE_CAP_MS: i64 = 3_600_000;

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(&self, now_ms: i64) -> Admit {
        let mut s = self.lock();
        if s.disabled.is_some() || s.paused.is_some() {
            return Admit::Hold(now_ms + DISABLED_RECHECK_MS);
        }
        if let Some(until) = s.throttled_until_ms.filter(|&u| now_ms < u) {
            return Admit::Wait(until);
        }
        match s.open_until_ms {
            None => Admit::Run,
            Some(until) if now_ms < until => Admit::Wait(until),
            Some(_) if s.probing => Admit::Wait(now_ms + PROBE_WAIT_MS),
            Some(_) => {
                s.probing = true;
                Admit::Run
            }
        }
    }

    pub fn record(&self, outcome: &ExecOutcome, now_ms: i64) -> Option<Transition> {
        let change = self.record_inner(outcome, now_ms);
        if change.is_some() {
            self.lock().changed_at_ms = now_ms;
        }
        change
    }

    fn record_inner(&self, outcome: &ExecOutcome, now_ms: i64) -> Option<Transition> {
        let mut s = self.lock();
        let was_open = s.open_until_ms.is_some();
        s.probing = false;
        match outcome {
            ExecOutcome::Done(_) => {
                s.failures = 0;
                s.open_until_ms = None;
                was_open.then_some(Transition::Closed)
            }
            ExecOutcome::Gone(message) => {
                s.disabled = Some(message.clone());
                Some(Transition::Disabled(message.clone()))
            }
            // A refusal for load: the target is up, and busy. It throttles
            // the action until the time it said, if it said one; its rate
            // is lowered when they repeat (`adapt.rs`). It is not a failure
            // the breaker counts: it does not say the target is down.
            ExecOutcome::RetryAfter(_, after) => {
                if after.is_zero() {
                    return None;
                }
                let until = now_ms + (after.as_millis() as i64).min(THROTTLE_CAP_MS);
                let was = s.throttled_until_ms.filter(|&u| now_ms < u);
                if was.is_some_and(|w| until <= w) {
                    return None;
                }
                s.throttled_until_ms = Some(until);
                // Said once when it starts; an extension is kept quietly.
                was.is_none()
                    .then_some(Transition::Throttled { until_ms: until })
            }
            ExecOutcome::Retryable(_) => {
                s.failures = s.failures.saturating_add(1);
                if self.threshold > 0 && (was_open || s.failures >= self.threshold) {
                    let until_ms = now_ms + self.cooldown.as_millis() as i64;
                    s.open_until_ms = Some(until_ms);
                    Some(Transition::Opened {
                        until_ms,
                        failures: s.failures,
                    })
                } else {
                    None
                }
            }
            ExecOutcome::Permanent(_) => None,
        }
    }

    /// Takes on what the store says when it is newer than what this
    /// process last did: another process enabled the action, or (sharing a
    /// store) another instance opened its breaker or saw a 410.
    pub fn sync(&self, stored: &ActionState) {
        let mut s = self.lock();
        if stored.updated_at_ms <= s.changed_at_ms {
            return;
        }
        s.changed_at_ms = stored.updated_at_ms;
        s.probing = false;
        s.paused = None;
        match stored.state.as_str() {
            "paused" => {
                s.paused = Some(stored.reason.clone().unwrap_or_default());
            }
            "disabled" => {
                s.disabled = Some(stored.reason.clone().unwrap_or_default());
            }
            "open" | "half-open" => {
                s.disabled = None;
                s.open_until_ms = stored.until_ms;
                s.failures = stored.failures;
            }
            "throttled" => {
                s.disabled = None;
                s.throttled_until_ms = stored.until_ms;
            }
            _ => {
                s.disabled = None;
                s.open_until_ms = None;
                s.throttled_until_ms = None;
                s.failures = 0;
            }
        }
    }

    /// The state to show and store.
    pub fn snapshot(&self, action: &str, now_ms: i64) -> ActionState {
        let s = self.lock();
        let throttled = s.throttled_until_ms.filter(|&u| now_ms < u);
        let (state, until) = match (&s.disabled, s.open_until_ms) {
            _ if s.paused.is_some() => ("paused", None),
            (Some(_), _) => ("disabled", None),
            (None, Some(until)) if now_ms < until => ("open", Some(until)),
            (None, Some(until)) => ("half-open", Some(until)),
            (None, None) if throttled.is_some() => ("throttled", throttled),
            (None, None) => ("closed", None),
        };
        ActionState {
            action: action.to_string(),
            state: state.into(),
            until_ms: until,
            failures: s.failures,
            reason: s.paused.clone().or_else(|| s.disabled.clone()),
            updated_at_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_probes_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let fail = ExecOutcome::Retryable("503".into());
        assert_eq!(b.admit(0), Admit::Run);
        assert_eq!(b.record(&fail, 0), None);
        assert_eq!(b.record(&ExecOutcome::Permanent("400".into()), 0), None);
        assert_eq!(b.record(&fail, 0), None);
        assert_eq!(
            b.record(&fail, 1_000),
            Some(Transition::Opened {
                until_ms: 11_000,
                failures: 3
            })
        );
        assert_eq!(b.admit(5_000), Admit::Wait(11_000));
        assert_eq!(b.snapshot("a", 5_000).state, "open");
        // Half-open: one probe runs, the others wait.
        assert_eq!(b.admit(11_000), Admit::Run);
        assert_eq!(b.admit(11_001), Admit::Wait(12_001));
        // The probe fails: open again for a cool-down.
        assert_eq!(
            b.record(&fail, 11_500),
            Some(Transition::Opened {
                until_ms: 21_500,
                failures: 4
            })
        );
        assert_eq!(b.admit(21_500), Admit::Run);
        assert_eq!(
            b.record(&ExecOutcome::Done(None), 21_600),
            Some(Transition::Closed)
        );
        assert_eq!(b.admit(21_700), Admit::Run);
        assert_eq!(b.snapshot("a", 21_700).state, "closed");
    }

    #[test]
    fn what_another_instance_stored_later_is_taken_on_and_older_news_is_not() {
        let b = Breaker::new(3, Duration::from_secs(30));
        let stored = |state: &str, until_ms: Option<i64>, at: i64| ActionState {
            action: "a".into(),
            state: state.into(),
            until_ms,
            failures: 3,
            reason: (state == "disabled").then(|| "HTTP 410".into()),
            updated_at_ms: at,
        };
        // Another instance opened the breaker: jobs here wait too.
        b.sync(&stored("open", Some(40_000), 10_000));
        assert_eq!(b.admit(11_000), Admit::Wait(40_000));
        // It saw a 410: disabled here as well.
        b.sync(&stored("disabled", None, 12_000));
        assert_eq!(b.snapshot("a", 12_000).state, "disabled");
        // Enabled later (by an operator, anywhere): runs again.
        b.sync(&stored("closed", None, 13_000));
        assert_eq!(b.admit(13_000), Admit::Run);
        // This process's own newer change is not undone by older news.
        b.record(&ExecOutcome::Gone("HTTP 410".into()), 20_000);
        b.sync(&stored("closed", None, 19_000));
        assert_eq!(b.snapshot("a", 20_000).state, "disabled");
    }

    #[test]
    fn gone_disables_until_enabled() {
        let b = Breaker::new(0, Duration::from_secs(1));
        assert_eq!(
            b.record(&ExecOutcome::Gone("HTTP 410".into()), 0),
            Some(Transition::Disabled("HTTP 410".into()))
        );
        assert_eq!(b.admit(10), Admit::Hold(10 + DISABLED_RECHECK_MS));
        let mut stored = b.snapshot("a", 10);
        assert_eq!(stored.state, "disabled");
        stored.state = "closed".into();
        b.sync(&stored);
        assert_eq!(b.admit(20), Admit::Run);
        // Threshold 0: failures never open it.
        for _ in 0..10 {
            assert_eq!(b.record(&ExecOutcome::Retryable("x".into()), 0), None);
        }
    }

    #[test]
    fn a_paused_action_waits_until_enabled_whatever_its_attempts_say() {
        let b = Breaker::new(3, Duration::from_secs(30));
        let stored = |state: &str, at: i64| ActionState {
            action: "a".into(),
            state: state.into(),
            until_ms: None,
            failures: 0,
            reason: (state == "paused").then(|| "paused by the admin token".into()),
            updated_at_ms: at,
        };
        b.sync(&stored("paused", 1_000));
        assert_eq!(b.admit(2_000), Admit::Hold(2_000 + DISABLED_RECHECK_MS));
        // An attempt that was in flight ends: still paused.
        assert_eq!(b.record(&ExecOutcome::Done(None), 2_500), None);
        let shown = b.snapshot("a", 3_000);
        assert_eq!(shown.state, "paused");
        assert_eq!(shown.reason.as_deref(), Some("paused by the admin token"));
        b.sync(&stored("closed", 4_000));
        assert_eq!(b.admit(4_000), Admit::Run);
    }

    #[test]
    fn a_targets_retry_after_throttles_every_job_until_then() {
        // Threshold 0: only the throttle, no breaker.
        let b = Breaker::new(0, Duration::from_secs(1));
        let told = |secs| ExecOutcome::RetryAfter("HTTP 429".into(), Duration::from_secs(secs));
        assert_eq!(
            b.record(&told(2), 1_000),
            Some(Transition::Throttled { until_ms: 3_000 })
        );
        assert_eq!(b.admit(1_500), Admit::Wait(3_000));
        // A later answer extends it, quietly; a shorter one does not shorten it.
        assert_eq!(b.record(&told(4), 2_000), None);
        assert_eq!(b.record(&told(1), 2_500), None);
        assert_eq!(b.admit(2_900), Admit::Wait(6_000));
        let shown = b.snapshot("a", 2_900);
        assert_eq!(
            (shown.state.as_str(), shown.until_ms),
            ("throttled", Some(6_000))
        );
        // A success of a job already in flight does not lift it.
        assert_eq!(b.record(&ExecOutcome::Done(None), 3_000), None);
        assert_eq!(b.admit(3_000), Admit::Wait(6_000));
        assert_eq!(b.admit(6_000), Admit::Run);
        assert_eq!(b.snapshot("a", 6_000).state, "closed");
        // At most an hour, whatever the target says.
        let c = Breaker::new(0, Duration::from_secs(1));
        c.record(&told(86_400), 0);
        assert_eq!(c.admit(0), Admit::Wait(THROTTLE_CAP_MS));
        // Another instance's throttle is taken on.
        let d = Breaker::new(0, Duration::from_secs(1));
        d.sync(&shown);
        assert_eq!(d.admit(2_950), Admit::Wait(6_000));
    }
}
