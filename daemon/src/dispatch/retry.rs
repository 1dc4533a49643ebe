//! The retry policy: when a failed attempt is tried again (the schedule,
//! with jitter), and when the job gives up (a dead letter).

use std::time::Duration;

use crate::host::ExecOutcome;
use crate::store::Finish;

/// The retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before retry n (1-based); its length + 1 is the attempt budget.
    pub schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
}

impl RetryPolicy {
    /// What to do after attempt `series_attempt` (1-based) of a job ended so.
    pub fn decide(&self, series_attempt: u32, attempt: &ExecOutcome, now_ms: i64) -> Finish {
        match attempt {
            ExecOutcome::Done(result) => Finish::Done {
                result: result.as_ref().map(|r| r.to_string()),
            },
            ExecOutcome::Permanent(message) | ExecOutcome::Gone(message) => Finish::Dead {
                message: message.clone(),
            },
            ExecOutcome::RetryAfter(message, after) => {
                if series_attempt as usize > self.schedule.len() {
                    return Finish::Dead {
                        message: format!("gave up after {series_attempt} attempts: {message}"),
                    };
                }
                // The target said when: no sooner, and at most a day out.
                let after = (*after).min(Duration::from_secs(86_400));
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
