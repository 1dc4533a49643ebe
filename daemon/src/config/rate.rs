//! A rate setting (`rate = "50/s"`, also `/m` and `/h`, with a `burst`)
//! and the arithmetic of its budget: GCRA (the generic cell rate
//! algorithm), a token bucket kept as one time — the "theoretical arrival
//! time" at which the budget is full again. Actions reserve slots in it
//! (`dispatch/rate.rs`); sources check a request against it
//! (`ingress/limit.rs`).

/// A rate limit, as configured (an action's `rate`, a source's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Jobs per period.
    pub count: u32,
    pub period_ms: i64,
    /// Jobs that may go at once when the budget is full.
    pub burst: u32,
    /// An action's: a parameter whose value has a budget of its own.
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

    /// A rate as the settings give it: its text, its `burst` (by default
    /// the rate's count, at least 1) and, for an action, its key.
    pub fn from_settings(
        text: &str,
        burst: Option<u32>,
        key: Option<String>,
    ) -> Result<Rate, String> {
        let (count, period_ms) = Rate::parse(text)?;
        Ok(Rate {
            count,
            period_ms,
            burst: burst.unwrap_or(count).max(1),
            key,
        })
    }

    /// Jobs a second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) * 1e3 / self.period_ms as f64
    }

    /// Microseconds between two jobs at the rate.
    pub fn interval_us(&self) -> i64 {
        (self.period_ms * 1_000 / i64::from(self.count)).max(1)
    }

    /// How far ahead of its steady pace the budget lets jobs go (µs).
    pub fn tolerance_us(&self) -> i64 {
        i64::from(self.burst.max(1) - 1) * self.interval_us()
    }
}

/// `10/s`, `300/m, burst 20`, `1/s per channel`: as the settings say it.
impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = match self.period_ms {
            1_000 => "s",
            60_000 => "m",
            _ => "h",
        };
        write!(f, "{}/{per}", self.count)?;
        if self.burst != self.count {
            write!(f, ", burst {}", self.burst)?;
        }
        if let Some(key) = &self.key {
            write!(f, " per {key}")?;
        }
        Ok(())
    }
}

/// GCRA: reserves one slot at `now_us` in a budget whose theoretical
/// arrival time is `tat_us` (none yet: `i64::MIN`). The budget's new time,
/// and the slot (the first time at or after `now_us` the job conforms).
pub fn reserve(tat_us: i64, now_us: i64, rate: &Rate) -> (i64, i64) {
    let base = tat_us.max(now_us);
    (base + rate.interval_us(), slot_at(base, now_us, rate))
}

/// The slot of the one reservation that left a budget at `new_tat_us`
/// (what [`reserve`] gives, worked back from the time the shared store
/// returns).
pub fn slot_from(new_tat_us: i64, now_us: i64, rate: &Rate) -> i64 {
    slot_at(new_tat_us - rate.interval_us(), now_us, rate)
}

fn slot_at(base_us: i64, now_us: i64, rate: &Rate) -> i64 {
    base_us.saturating_sub(rate.tolerance_us()).max(now_us)
}

/// Whether one request at `now_us` conforms to a budget at `tat_us`: the
/// budget's new time if it does, else how long until one would (µs) — a
/// reservation kept only when its slot is now.
pub fn check(tat_us: i64, now_us: i64, rate: &Rate) -> Result<i64, i64> {
    match reserve(tat_us, now_us, rate) {
        (next, slot) if slot <= now_us => Ok(next),
        (_, slot) => Err(slot - now_us),
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

    /// Jobs asked for one at a time, `gap_us` apart, from `tat`: the
    /// budget's time after them, and their slots.
    fn reserved(
        rate: &Rate,
        mut tat: i64,
        asks: usize,
        start_us: i64,
        gap_us: i64,
    ) -> (i64, Vec<i64>) {
        let mut slots = Vec::new();
        for i in 0..asks {
            let (next, slot) = reserve(tat, start_us + i as i64 * gap_us, rate);
            tat = next;
            slots.push(slot);
        }
        (tat, slots)
    }

    /// Jobs asked for one at a time, `gap_us` apart: which go at once.
    fn admitted(rate: &Rate, asks: usize, gap_us: i64) -> Vec<i64> {
        reserved(rate, i64::MIN, asks, 0, gap_us).1
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
        let (tat, _) = reserved(&r, i64::MIN, 5, 0, 0);
        let (_, later) = reserved(&r, tat, 3, 10_000_000, 0);
        assert_eq!(later, [10_000_000, 10_000_000, 10_100_000]);
    }

    #[test]
    fn the_slot_worked_back_from_the_shared_time_is_the_one_reserved() {
        let r = rate(20, 1_000, 4);
        let mut tat = 123_456;
        for _ in 0..9 {
            let (next, slot) = reserve(tat, 100_000, &r);
            assert_eq!(slot_from(next, 100_000, &r), slot);
            tat = next;
        }
        // Nine at once from a budget full at 123,456 µs, four a burst.
        assert_eq!(tat, 123_456 + 9 * r.interval_us());
    }

    #[test]
    fn fast_rates_keep_their_pace_in_microseconds() {
        let r = rate(3_000, 1_000, 1);
        assert_eq!(r.interval_us(), 333);
        assert_eq!(admitted(&r, 3, 0), [0, 333, 666]);
    }

    #[test]
    fn a_request_over_the_budget_is_told_how_long_to_wait() {
        let r = rate(10, 1_000, 2);
        let mut tat = i64::MIN;
        for now in [0, 0] {
            tat = check(tat, now, &r).unwrap();
        }
        // Two at once (the burst), the third 100 ms later at the earliest.
        assert_eq!(check(tat, 0, &r), Err(100_000));
        assert_eq!(check(tat, 40_000, &r), Err(60_000));
        assert!(check(tat, 100_000, &r).is_ok());
    }

    #[test]
    fn a_rate_is_shown_as_written() {
        assert_eq!(rate(10, 1_000, 10).to_string(), "10/s");
        assert_eq!(rate(300, 60_000, 20).to_string(), "300/m, burst 20");
        let keyed = Rate {
            key: Some("channel".into()),
            ..rate(1, 3_600_000, 1)
        };
        assert_eq!(keyed.to_string(), "1/h per channel");
    }
}
