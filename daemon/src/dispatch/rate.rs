//! Per-action rate limits: `rate = "50/s"` (also `/m`, `/h`), `burst`
//! (jobs that may go at once after a quiet spell; by default the rate's
//! count) and `rate_key` (a parameter whose value has a budget of its own,
//! e.g. a Slack channel or a customer).
//!
//! The budget is a GCRA (generic cell rate algorithm: a token bucket kept
//! as one time, the "theoretical arrival time"). A job over the budget is
//! not held in memory nor counted as a failure: it gets the next free
//! *slot* in its action's (or key's) budget, reserved for it, and goes back
//! to the store due at that time, the slot noted on its row. Claimed at
//! its slot it goes out without asking again; a retry asks anew. Jobs
//! deferred one after another get slots one after another: the oldest goes
//! first, and a backlog of thousands drains at the rate, not in a rush of
//! claims each time the budget frees.
//!
//! The budget lives in memory on the embedded store (one process) and in
//! the database on the shared store (`rate_budgets`), so that several
//! instances share one rate rather than each having its own.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::store::{ClaimedJob, Pipeline, StoreError, StoreResult};

/// An action's rate limit, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Jobs per period.
    pub count: u32,
    pub period_ms: i64,
    /// Jobs that may go at once when the budget is full.
    pub burst: u32,
    /// A parameter whose value has a budget of its own.
    pub key: Option<String>,
}

impl Rate {
    /// Reads `"50/s"`, `"3000/m"`, `"10/h"` (spaces allowed around `/`).
    pub fn parse(text: &str) -> Result<(u32, i64), String> {
        let bad = || format!("{text:?} is not a rate such as \"50/s\", \"300/m\" or \"10/h\"");
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period_ms = match per.trim() {
            "s" | "sec" | "second" => 1_000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("{text:?}: a rate must allow at least one job"));
        }
        Ok((count, period_ms))
    }

    /// Microseconds between two jobs at the rate.
    pub fn interval_us(&self) -> i64 {
        (self.period_ms * 1_000 / i64::from(self.count)).max(1)
    }

    /// How far ahead of its steady pace the budget lets jobs go (µs).
    pub fn tolerance_us(&self) -> i64 {
        i64::from(self.burst.max(1) - 1) * self.interval_us()
    }

    /// The budget a job counts against: its key's value, or the action's.
    pub fn key_of(&self, job: &ClaimedJob) -> String {
        match &self.key {
            None => String::new(),
            Some(param) => match job.params.get(param) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            },
        }
    }
}

/// GCRA reservations of `n` jobs at `now_us` against a budget whose
/// theoretical arrival time is `tat_us` (none yet: `i64::MIN`): the new
/// time, and each job's slot (the first at or after `now_us`).
pub fn reserve(tat_us: i64, n: u32, now_us: i64, rate: &Rate) -> (i64, Vec<i64>) {
    let t = rate.interval_us();
    let base = tat_us.max(now_us);
    let slots = (0..i64::from(n))
        .map(|k| (base + k * t - rate.tolerance_us()).max(now_us))
        .collect();
    (base + i64::from(n) * t, slots)
}

/// The slots of `n` jobs from the budget's new time as the shared store
/// returns it (what [`reserve`] gives, worked back from its result).
pub fn slots_from(new_tat_us: i64, n: u32, now_us: i64, rate: &Rate) -> Vec<i64> {
    let base = new_tat_us - i64::from(n) * rate.interval_us();
    (0..i64::from(n))
        .map(|k| (base + k * rate.interval_us() - rate.tolerance_us()).max(now_us))
        .collect()
}

/// Where budgets are kept: in memory (one process), or in the shared store.
pub enum Budgets {
    Local(Mutex<HashMap<(String, String), i64>>),
    Shared,
}

/// Budgets held in memory past this many are swept of the full ones.
const LOCAL_MAX: usize = 10_000;

impl Budgets {
    pub fn for_store(store: &dyn Pipeline) -> Budgets {
        if store.shared().is_some() {
            Budgets::Shared
        } else {
            Budgets::Local(Mutex::default())
        }
    }

    /// Reserves one job's slot (µs) in `action`'s budget for `key`.
    pub async fn reserve_one(
        &self,
        store: &dyn Pipeline,
        action: &str,
        key: &str,
        rate: &Rate,
        now_us: i64,
    ) -> StoreResult<i64> {
        match self {
            Budgets::Local(budgets) => {
                let mut budgets = budgets.lock().unwrap_or_else(|p| p.into_inner());
                if budgets.len() > LOCAL_MAX {
                    // A budget whose time has passed is as good as none.
                    budgets.retain(|_, tat| *tat > now_us);
                }
                let tat = budgets
                    .entry((action.to_string(), key.to_string()))
                    .or_insert(i64::MIN);
                let (next, slots) = reserve(*tat, 1, now_us, rate);
                *tat = next;
                Ok(slots[0])
            }
            Budgets::Shared => {
                let step = rate.interval_us();
                let shared = store.shared().ok_or_else(|| {
                    StoreError::Other("a shared budget needs the shared store".into())
                })?;
                let tat = shared
                    .reserve_rate(action.to_string(), key.to_string(), step, now_us)
                    .await?;
                Ok(slots_from(tat, 1, now_us, rate)[0])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, period_ms: i64, burst: u32) -> Rate {
        Rate {
            count,
            period_ms,
            burst,
            key: None,
        }
    }

    #[test]
    fn rates_read_as_written() {
        assert_eq!(Rate::parse("50/s"), Ok((50, 1_000)));
        assert_eq!(Rate::parse(" 300 / m "), Ok((300, 60_000)));
        assert_eq!(Rate::parse("10/h"), Ok((10, 3_600_000)));
        for bad in ["50", "50/d", "x/s", "0/s", "-1/s", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    /// Jobs asked for one at a time, `gap_us` apart: which go at once.
    fn admitted(rate: &Rate, asks: usize, gap_us: i64) -> Vec<i64> {
        let mut tat = i64::MIN;
        let mut slots = Vec::new();
        for i in 0..asks {
            let (next, s) = reserve(tat, 1, i as i64 * gap_us, rate);
            tat = next;
            slots.push(s[0]);
        }
        slots
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rest_at_the_rate() {
        // 10/s with a burst of 3: 100 ms apart past the first three.
        let r = rate(10, 1_000, 3);
        let slots = admitted(&r, 6, 0);
        assert_eq!(slots, [0, 0, 0, 100_000, 200_000, 300_000]);
        // In any second: at most burst + rate.
        let in_first_second = slots.iter().filter(|&&s| s < 1_000_000).count();
        assert!(in_first_second <= 3 + 10);
    }

    #[test]
    fn jobs_slower_than_the_rate_all_go_at_once_and_a_quiet_spell_refills() {
        let r = rate(10, 1_000, 1);
        // 200 ms apart, slower than 100 ms: each at its own time.
        assert_eq!(admitted(&r, 3, 200_000), [0, 200_000, 400_000]);
        // A quiet spell refills the burst, no more.
        let r = rate(10, 1_000, 2);
        let (tat, _) = reserve(i64::MIN, 5, 0, &r);
        let (_, later) = reserve(tat, 3, 10_000_000, &r);
        assert_eq!(later, [10_000_000, 10_000_000, 10_100_000]);
    }

    #[test]
    fn many_reserved_together_get_the_slots_one_by_one_would() {
        let r = rate(20, 1_000, 4);
        let (tat, slots) = reserve(123_456, 9, 100_000, &r);
        let mut one_by_one = Vec::new();
        let mut t = 123_456;
        for _ in 0..9 {
            let (next, s) = reserve(t, 1, 100_000, &r);
            t = next;
            one_by_one.push(s[0]);
        }
        assert_eq!((tat, &slots), (t, &one_by_one));
        assert_eq!(slots_from(tat, 9, 100_000, &r), slots);
    }

    #[test]
    fn fast_rates_keep_their_pace_in_microseconds() {
        let r = rate(3_000, 1_000, 1);
        assert_eq!(r.interval_us(), 333);
        assert_eq!(admitted(&r, 3, 0), [0, 333, 666]);
    }
}
