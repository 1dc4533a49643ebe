//! A destination's refusals lower its action's rate: AIMD (additive
//! increase, multiplicative decrease), as TCP does with a congested link.
//!
//! A refusal for load is an answer that says "too many": HTTP 429 (with
//! or without `Retry-After`) or a 503 with `Retry-After` — an outcome
//! `RetryAfter` from the plugin. One round of refusals alone lowers
//! nothing (its `Retry-After`, if any, throttles the action: `gate.rs`);
//! a second within [`REPEAT_WITHIN_MS`] halves the rate the action may go
//! at, and each after it halves it again — at most once a second: the
//! jobs already in flight when the first came back answer the same, and
//! are one round, not many. Each
//! second without a refusal adds a twentieth of the ceiling back, so that
//! a destination that stopped refusing gets the whole rate again within
//! 20 s; reaching it, the lowered rate is gone. A destination that keeps
//! refusing settles the rate near one step (a twentieth of the ceiling).
//!
//! The ceiling is the action's `rate` when it has one; else the pace it
//! went at (jobs a second) when the first refusal came, so that an action
//! without a configured rate is slowed too, and then let go.
//!
//! The rate lowered is this process's: each instance sharing a store
//! lowers its own, from the refusals its own requests got; they still
//! reserve slots in one shared budget, each at the pace it holds.
//! Nothing here reads a clock: time comes in as an argument.

use std::sync::Mutex;

use crate::config::rate::Rate;

/// Lowered at most once in this long: refusals closer together are one
/// round.
const CUT_SPACING_MS: i64 = 1_000;
/// A round of refusals this soon after another lowers the rate.
pub const REPEAT_WITHIN_MS: i64 = 30_000;
/// Raised by a step each time this long passes without a refusal.
const RAISE_EVERY_MS: i64 = 1_000;
/// A step: this share of the ceiling.
const RAISE_SHARE: f64 = 0.05;
/// The pace of an action without a rate is counted over windows this long.
const PACE_WINDOW_MS: i64 = 1_000;

/// What a refusal or an answer changed, worth a log line and a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Lowered to this many jobs a second.
    Lowered { per_s: f64, ceiling: f64 },
    /// Back at its ceiling: no longer lowered.
    Recovered,
}

#[derive(Debug, Default)]
struct State {
    /// Lowered now (until the raises reach the ceiling).
    lowered: bool,
    /// When a first round of refusals came, while not lowered.
    armed_at_ms: Option<i64>,
    /// Jobs a second the raises stop at.
    ceiling: f64,
    /// The rate the last refusal lowered it to, and when.
    cut_to: f64,
    cut_at_ms: i64,
    /// Attempts ended in the current pace window and the one before.
    window_start_ms: i64,
    this_window: u32,
    last_window: u32,
}

impl State {
    /// Jobs a second allowed at `now_ms`, if lowered still.
    fn limit_at(&self, now_ms: i64) -> Option<f64> {
        if !self.lowered {
            return None;
        }
        let steps = (now_ms - self.cut_at_ms).max(0) / RAISE_EVERY_MS;
        let limit = self.cut_to + steps as f64 * self.ceiling * RAISE_SHARE;
        // (Within a rounding error of the ceiling is at it.)
        (limit + 1e-9 < self.ceiling).then_some(limit)
    }

    /// Jobs a second the action went at lately, by its attempts' ends.
    /// (The window under way counts as a whole one: a low guess early in
    /// it, never a wild one.)
    fn pace(&self) -> f64 {
        let per_s = |n: u32| f64::from(n) * 1e3 / PACE_WINDOW_MS as f64;
        per_s(self.this_window)
            .max(per_s(self.last_window))
            .max(1.0)
    }

    fn count(&mut self, now_ms: i64) {
        let since = now_ms - self.window_start_ms;
        if !(0..PACE_WINDOW_MS).contains(&since) {
            // A window that ended long ago says nothing of the last one.
            self.last_window = if since < 2 * PACE_WINDOW_MS {
                self.this_window
            } else {
                0
            };
            self.this_window = 0;
            self.window_start_ms = now_ms;
        }
        self.this_window = self.this_window.saturating_add(1);
    }
}

/// One action's controller.
#[derive(Debug, Default)]
pub struct Adaptive {
    state: Mutex<State>,
}

impl Adaptive {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in an attempt's end: `refused` when the destination refused
    /// for load. `configured`: the action's own rate, if any.
    pub fn record(&self, refused: bool, configured: Option<&Rate>, now_ms: i64) -> Option<Change> {
        let mut s = self.lock();
        s.count(now_ms);
        let limit = s.limit_at(now_ms);
        if !refused {
            if s.lowered && limit.is_none() {
                s.lowered = false;
                return Some(Change::Recovered);
            }
            return None;
        }
        if s.lowered && now_ms - s.cut_at_ms < CUT_SPACING_MS {
            return None;
        }
        if !s.lowered || limit.is_none() {
            // Not lowered: only a repeated round lowers it.
            match s.armed_at_ms.map(|at| now_ms - at) {
                Some(since) if since < CUT_SPACING_MS => return None,
                Some(since) if since <= REPEAT_WITHIN_MS => s.armed_at_ms = None,
                _ => {
                    s.armed_at_ms = Some(now_ms);
                    return None;
                }
            }
        }
        if !s.lowered || limit.is_none() {
            s.ceiling = configured.map_or_else(|| s.pace(), Rate::per_second);
        }
        let from = limit.unwrap_or(s.ceiling);
        let per_s = from / 2.0;
        s.lowered = true;
        s.cut_to = per_s;
        s.cut_at_ms = now_ms;
        Some(Change::Lowered {
            per_s,
            ceiling: s.ceiling,
        })
    }

    /// Jobs a second the action may go at now, when its destination's
    /// refusals lowered it.
    pub fn lowered_to(&self, now_ms: i64) -> Option<f64> {
        self.lock().limit_at(now_ms)
    }

    /// The rate in force at `now_ms`: the lowered one (no burst: jobs go
    /// evenly spaced while the destination is struggling, per key as the
    /// action's own), else the configured one.
    pub fn rate_at(&self, configured: Option<&Rate>, now_ms: i64) -> Option<Rate> {
        match self.lowered_to(now_ms) {
            None => configured.cloned(),
            Some(per_s) => Some(Rate {
                // Per hour, so that a fraction of a job a second is kept.
                count: (per_s * 3_600.0).round().clamp(1.0, f64::from(u32::MAX)) as u32,
                period_ms: 3_600_000,
                burst: 1,
                key: configured.and_then(|r| r.key.clone()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32) -> Rate {
        Rate {
            count,
            period_ms: 1_000,
            burst: count,
            key: None,
        }
    }

    #[test]
    fn refusals_halve_the_rate_once_a_second_and_quiet_seconds_bring_it_back() {
        let a = Adaptive::default();
        let configured = rate(100);
        assert_eq!(a.rate_at(Some(&configured), 0), Some(configured.clone()));
        assert_eq!(a.record(false, Some(&configured), 0), None);
        // A first round of refusals lowers nothing; a second halves it.
        assert_eq!(a.record(true, Some(&configured), 0), None);
        assert_eq!(a.record(true, Some(&configured), 500), None);
        assert_eq!(a.rate_at(Some(&configured), 600), Some(configured.clone()));
        assert_eq!(
            a.record(true, Some(&configured), 1_000),
            Some(Change::Lowered {
                per_s: 50.0,
                ceiling: 100.0
            })
        );
        // The others of the same round (in flight already) do not.
        for t in 1_001..1_100 {
            assert_eq!(a.record(true, Some(&configured), t), None);
        }
        assert_eq!(a.lowered_to(1_500), Some(50.0));
        let lowered = a.rate_at(Some(&configured), 1_500).unwrap();
        assert_eq!((lowered.burst, lowered.interval_us()), (1, 20_000));
        // Still refused a second later (one step, 5/s, came back meanwhile):
        // halved again.
        assert_eq!(
            a.record(true, Some(&configured), 2_000),
            Some(Change::Lowered {
                per_s: 27.5,
                ceiling: 100.0
            })
        );
        // Quiet: a twentieth of the ceiling back each second.
        assert_eq!(a.lowered_to(2_999), Some(27.5));
        assert_eq!(a.lowered_to(3_000), Some(32.5));
        assert_eq!(a.lowered_to(10_000), Some(67.5));
        assert_eq!(a.record(false, Some(&configured), 10_000), None);
        // Refused again while coming back: halved from where it stood.
        assert_eq!(
            a.record(true, Some(&configured), 10_000),
            Some(Change::Lowered {
                per_s: 33.75,
                ceiling: 100.0
            })
        );
        // 14 quiet seconds: 33.75 + 14 × 5 ≥ 100, the configured rate again.
        assert_eq!(a.lowered_to(23_999), Some(98.75));
        assert_eq!(
            a.record(false, Some(&configured), 24_000),
            Some(Change::Recovered)
        );
        assert_eq!(a.rate_at(Some(&configured), 24_000), Some(configured));
    }

    #[test]
    fn a_round_of_refusals_long_after_another_lowers_nothing() {
        let a = Adaptive::default();
        let configured = rate(10);
        assert_eq!(a.record(true, Some(&configured), 0), None);
        assert_eq!(a.record(true, Some(&configured), 999), None);
        assert_eq!(
            a.record(true, Some(&configured), REPEAT_WITHIN_MS + 1),
            None
        );
        assert_eq!(a.lowered_to(REPEAT_WITHIN_MS + 2), None);
        assert!(a
            .record(true, Some(&configured), REPEAT_WITHIN_MS + 1_001)
            .is_some());
    }

    #[test]
    fn refused_every_second_it_settles_at_one_step() {
        let a = Adaptive::default();
        let configured = rate(64);
        for second in 0..30 {
            a.record(true, Some(&configured), second * 1_000);
        }
        // Each second halves what one step (3.2/s) added to it.
        let settled = a.lowered_to(29_500).unwrap();
        assert!((3.2..3.21).contains(&settled), "{settled}");
    }

    #[test]
    fn an_action_without_a_rate_is_slowed_from_the_pace_it_went_at() {
        let a = Adaptive::default();
        // 40 attempts in a second, then 40 more in the next, the last
        // of them refused.
        for i in 0..80 {
            assert_eq!(a.record(false, None, i * 25), None);
        }
        assert_eq!(a.record(true, None, 1_990), None);
        assert_eq!(a.rate_at(None, 2_000), None);
        // Refused again: halved from the 41 a second it went at.
        assert_eq!(
            a.record(true, None, 2_990),
            Some(Change::Lowered {
                per_s: 20.5,
                ceiling: 41.0
            })
        );
        assert_eq!(a.rate_at(None, 2_990).unwrap().count, 73_800);
        // Back to its pace, it goes unlimited again (2.05/s a second: 10 s).
        assert_eq!(a.record(false, None, 12_989), None);
        assert_eq!(a.record(false, None, 12_990), Some(Change::Recovered));
        assert_eq!(a.rate_at(None, 12_990), None);
    }

    #[test]
    fn a_pace_counted_long_ago_does_not_stand_for_now() {
        let a = Adaptive::default();
        for i in 0..100 {
            a.record(false, None, i * 10);
        }
        // Ten quiet seconds, then attempts refused: its pace is low.
        assert_eq!(a.record(true, None, 11_000), None);
        assert_eq!(
            a.record(true, None, 12_000),
            Some(Change::Lowered {
                per_s: 0.5,
                ceiling: 1.0
            })
        );
    }
}
