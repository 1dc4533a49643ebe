//! The last hour, minute by minute, in memory: what the dashboard's
//! overview draws and its actions page rates. Counts per minute of
//! webhooks by source and outcome (`accepted`, `duplicate`, `stale`, or
//! the refusal's reason) and of attempts by action and outcome, and two
//! latency sketches per minute (ingest: request to answer; end to end:
//! event taken in to its action done, first attempts only).
//!
//! Prometheus counters say the same since the start; this keeps the shape
//! of the last hour without a time-series database. One instance's view:
//! on a shared store each instance counts what it handled.
//!
//! Names (sources, actions) come from the config, outcomes from fixed
//! sets, so the maps stay small; 60 minutes are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Minutes kept.
pub const MINUTES: usize = 60;
/// Latency sketch buckets: bucket `i` holds values up to `FIRST * GROWTH^i`
/// seconds (100 µs, growing by a fifth: the last is past 200 s).
const BUCKETS: usize = 80;
const FIRST: f64 = 1e-4;
const GROWTH: f64 = 1.2;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Webhooks, by source.
    Webhook,
    /// Action attempts, by action.
    Attempt,
}

/// Which latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    Ingest,
    EndToEnd,
}

#[derive(Clone)]
struct Sketch([u32; BUCKETS]);

impl Default for Sketch {
    fn default() -> Self {
        Sketch([0; BUCKETS])
    }
}

impl Sketch {
    fn add(&mut self, seconds: f64) {
        let i = if seconds <= FIRST {
            0
        } else {
            ((seconds / FIRST).ln() / GROWTH.ln()).ceil() as usize
        };
        let slot = &mut self.0[i.min(BUCKETS - 1)];
        *slot = slot.saturating_add(1);
    }

    fn merge(&mut self, other: &Sketch) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|&n| n as u64).sum()
    }

    /// The `q` quantile (0..1) in seconds: the upper bound of its bucket
    /// (at most a fifth over), or `None` with no values.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.0.iter().enumerate() {
            seen += n as u64;
            if seen >= rank {
                return Some(FIRST * GROWTH.powi(i as i32));
            }
        }
        None
    }
}

#[derive(Default)]
struct Minute {
    /// Minutes since the Unix epoch.
    at: i64,
    counts: HashMap<Kind, HashMap<String, HashMap<String, u64>>>,
    ingest: Sketch,
    end_to_end: Sketch,
}

/// The last [`MINUTES`] minutes.
#[derive(Default)]
pub struct Recent {
    minutes: Mutex<VecDeque<Minute>>,
}

/// One minute as read: the counts by name and outcome.
#[derive(Debug, Clone, Default)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub at: i64,
    pub counts: Vec<(String, String, u64)>,
}

/// Latency over a window, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

fn minute_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(60_000)
}

impl Recent {
    /// The current minute's record (made, and old ones dropped, as needed).
    fn with_minute<T>(&self, now_ms: i64, f: impl FnOnce(&mut Minute) -> T) -> T {
        let at = minute_of(now_ms);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.back().is_none_or(|m| m.at < at) {
            minutes.push_back(Minute {
                at,
                ..Default::default()
            });
            while minutes.front().is_some_and(|m| m.at <= at - MINUTES as i64) {
                minutes.pop_front();
            }
        }
        // A clock stepping back counts into the newest minute.
        f(minutes.back_mut().expect("a minute was just made"))
    }

    pub fn count(&self, now_ms: i64, kind: Kind, name: &str, outcome: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.with_minute(now_ms, |m| {
            let names = m.counts.entry(kind).or_default();
            let outcomes = match names.get_mut(name) {
                Some(o) => o,
                None => names.entry(name.to_string()).or_default(),
            };
            match outcomes.get_mut(outcome) {
                Some(c) => *c += n,
                None => {
                    outcomes.insert(outcome.to_string(), n);
                }
            }
        })
    }

    pub fn latency(&self, now_ms: i64, which: Latency, seconds: f64) {
        self.with_minute(now_ms, |m| match which {
            Latency::Ingest => m.ingest.add(seconds),
            Latency::EndToEnd => m.end_to_end.add(seconds),
        })
    }

    /// The last `minutes` minutes of `kind`, oldest first, one entry per
    /// minute (none missing).
    pub fn counts(&self, now_ms: i64, kind: Kind, minutes: usize) -> Vec<MinuteCounts> {
        let now = minute_of(now_ms);
        let first = now - minutes.min(MINUTES) as i64 + 1;
        let kept = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        (first..=now)
            .map(|at| {
                let mut counts: Vec<(String, String, u64)> = kept
                    .iter()
                    .find(|m| m.at == at)
                    .and_then(|m| m.counts.get(&kind))
                    .map(|names| {
                        names
                            .iter()
                            .flat_map(|(name, outcomes)| {
                                outcomes.iter().map(|(o, n)| (name.clone(), o.clone(), *n))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                counts.sort();
                MinuteCounts { at, counts }
            })
            .collect()
    }

    /// p50 and p99 over the last `minutes` minutes.
    pub fn quantiles(&self, now_ms: i64, which: Latency, minutes: usize) -> Quantiles {
        let first = minute_of(now_ms) - minutes as i64 + 1;
        let kept = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = Sketch::default();
        for m in kept.iter().filter(|m| m.at >= first) {
            all.merge(match which {
                Latency::Ingest => &m.ingest,
                Latency::EndToEnd => &m.end_to_end,
            });
        }
        Quantiles {
            count: all.count(),
            p50: all.quantile(0.5),
            p99: all.quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn counts_land_in_their_minute_and_an_hour_is_kept() {
        let r = Recent::default();
        let t0 = 1_000 * MIN;
        r.count(t0, Kind::Webhook, "tight", "accepted", 3);
        r.count(t0 + 10, Kind::Webhook, "tight", "accepted", 1);
        r.count(t0 + 20, Kind::Webhook, "tight", "unauthenticated", 2);
        r.count(t0 + MIN, Kind::Attempt, "email", "done", 1);
        let w = r.counts(t0 + 2 * MIN, Kind::Webhook, 3);
        assert_eq!(w.len(), 3);
        assert_eq!(
            w[0].counts,
            vec![
                ("tight".into(), "accepted".into(), 4),
                ("tight".into(), "unauthenticated".into(), 2)
            ]
        );
        assert!(w[1].counts.is_empty() && w[2].counts.is_empty());
        assert_eq!(r.counts(t0 + MIN, Kind::Attempt, 1)[0].counts.len(), 1);
        // An hour later the first minute is gone.
        r.count(t0 + 60 * MIN, Kind::Webhook, "tight", "accepted", 1);
        assert!(r.minutes.lock().unwrap().iter().all(|m| m.at > 1_000));
        assert!(r.counts(t0 + 60 * MIN, Kind::Webhook, 60)[0]
            .counts
            .is_empty());
    }

    #[test]
    fn quantiles_are_within_a_fifth() {
        let r = Recent::default();
        let t = 5 * MIN;
        for i in 1..=1000 {
            r.latency(t, Latency::Ingest, i as f64 / 1000.0);
        }
        let q = r.quantiles(t, Latency::Ingest, 5);
        assert_eq!(q.count, 1000);
        let (p50, p99) = (q.p50.unwrap(), q.p99.unwrap());
        assert!((0.5..=0.6).contains(&p50), "{p50}");
        assert!((0.99..=1.19).contains(&p99), "{p99}");
        assert!(r.quantiles(t, Latency::EndToEnd, 5).p50.is_none());
    }
}
