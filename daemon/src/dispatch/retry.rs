//! The retry policy: when a failed attempt is tried again (the schedule,
//! with jitter), and when the job gives up (a dead letter).

use std::time::Duration;

use crate::host::ExecOutcome;
use crate::store::Finish;

/// The longest a target's `Retry-After` is honored.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(86_400);

/// The retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before retry n (1-based); its length + 1 is the attempt budget.
    pub schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
}

impl RetryPolicy {
    /// The furthest ahead a retry is ever scheduled: the schedule's longest
    /// delay at its most jitter, or the longest `Retry-After` honored. A
    /// stored due time further ahead was written on a clock that has since
    /// stepped back.
    pub fn longest(&self) -> Duration {
        let schedule = self
            .schedule
            .iter()
            .max()
            .map_or(Duration::ZERO, |d| d.mul_f64(1.0 + self.jitter.max(0.0)));
        schedule.max(RETRY_AFTER_CAP)
    }

    /// Whether a stored due time `at` lies further ahead than any retry is
    /// scheduled (a minute's margin): written before the system clock
    /// stepped back by more than this process saw (it was not running;
    /// see [`crate::store::clock`] for a step while it runs). Said; the
    /// dispatcher then runs it now.
    pub fn beyond_any_retry(&self, at: i64, now: i64) -> bool {
        let longest = self.longest().as_millis() as i64 + 60_000;
        if at.saturating_sub(now) <= longest {
            return false;
        }
        tracing::warn!(
            due_in_s = (at - now) / 1000,
            longest_retry_s = longest / 1000,
            "a job is due further ahead than any retry is scheduled: the system clock stepped back; running it now"
        );
        true
    }

    /// What to do after attempt `series_attempt` (1-based) of a job ended so.
    pub fn decide(&self, series_attempt: u32, attempt: &ExecOutcome, now_ms: i64) -> Finish {
        match attempt {
            ExecOutcome::Done(result) => Finish::Done {
                result: result.as_ref().map(|r| r.to_string()),
            },
            ExecOutcome::Permanent(message) | ExecOutcome::Gone(message) => Finish::Dead {
                message: message.clone(),
            },
            // A refusal for load without a time: retried on the schedule.
            ExecOutcome::RetryAfter(message, after) if after.is_zero() => self.decide(
                series_attempt,
                &ExecOutcome::Retryable(message.clone()),
                now_ms,
            ),
            ExecOutcome::RetryAfter(message, after) => {
                if series_attempt as usize > self.schedule.len() {
                    return Finish::Dead {
                        message: format!("gave up after {series_attempt} attempts: {message}"),
                    };
                }
                // The target said when: no sooner, and at most a day out.
                let after = (*after).min(RETRY_AFTER_CAP);
                Finish::Retry {
                    message: message.clone(),
                    next_at_ms: now_ms + after.as_millis() as i64,
                }
            }
            ExecOutcome::Retryable(message) => {
                match self.schedule.get(series_attempt.saturating_sub(1) as usize) {
                    Some(delay) => {
                        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
                        let delay_ms = (delay.as_millis() as f64 * factor).round() as i64;
                        Finish::Retry {
                            message: message.clone(),
                            next_at_ms: now_ms + delay_ms.max(0),
                        }
                    }
                    None => Finish::Dead {
                        message: format!("gave up after {series_attempt} attempts: {message}"),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_beyond_any_retry_is_a_clock_step() {
        let policy = RetryPolicy {
            schedule: vec![Duration::from_secs(3_600 * 30)],
            jitter: 0.5,
        };
        // The schedule's 30 h at +50 % is the furthest (beyond a day).
        assert_eq!(policy.longest(), Duration::from_secs(3_600 * 45));
        let day = 86_400_000;
        assert!(!policy.beyond_any_retry(45 * 3_600_000, 0));
        assert!(policy.beyond_any_retry(46 * 3_600_000, 0));
        let short = RetryPolicy {
            schedule: vec![Duration::from_secs(5)],
            jitter: 0.2,
        };
        // A target's Retry-After is honored up to a day.
        assert!(!short.beyond_any_retry(day, 0));
        assert!(short.beyond_any_retry(day + 3_600_000, 0));
    }

    #[test]
    fn retries_follow_the_schedule_then_give_up() {
        let policy = RetryPolicy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter: 0.2,
        };
        let failed = ExecOutcome::Retryable("503".into());
        for (n, base) in [(1u32, 5_000i64), (2, 300_000)] {
            match policy.decide(n, &failed, 0) {
                Finish::Retry { next_at_ms, .. } => {
                    assert!(
                        next_at_ms >= base * 8 / 10 && next_at_ms <= base * 12 / 10,
                        "{n}: {next_at_ms}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(policy.decide(3, &failed, 0), Finish::Dead { .. }));
        assert!(matches!(
            policy.decide(1, &ExecOutcome::Permanent("400".into()), 0),
            Finish::Dead { .. }
        ));
        assert!(matches!(
            policy.decide(1, &ExecOutcome::Done(None), 0),
            Finish::Done { .. }
        ));
    }
}
