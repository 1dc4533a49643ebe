//! A source's inbound limits: `rate` (every request to its endpoint) and
//! `rate_per_sender` (each sender address, as `trusted_proxies` make it
//! out), each with GCRA's arithmetic (`config/rate.rs`). A request over
//! either is answered 429 with `Retry-After` (whole seconds until one
//! would pass) before it is verified — a flood costs no verification —
//! and counted with the other refusals. Kept in memory per instance (each
//! instance protects itself), started afresh by a reload.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::config::rate::{check, Rate};

/// Sender budgets kept at most; past it, those whose time has passed are
/// dropped, and a new sender beyond it is held to the source's rate only.
const SENDERS_MAX: usize = 65_536;

#[derive(Default)]
pub struct SourceLimits {
    source: Option<(Rate, Mutex<i64>)>,
    per_sender: Option<(Rate, Mutex<HashMap<IpAddr, i64>>)>,
}

/// A request refused: which limit, and whole seconds to wait (at least 1).
#[derive(Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: &'static str,
    pub retry_after_secs: u32,
}

fn over(limit: &'static str, wait_us: i64) -> OverLimit {
    let secs = (wait_us + 999_999) / 1_000_000;
    OverLimit {
        limit,
        retry_after_secs: secs.clamp(1, 3_600) as u32,
    }
}

impl SourceLimits {
    pub fn new(rate: Option<Rate>, per_sender: Option<Rate>) -> SourceLimits {
        SourceLimits {
            source: rate.map(|r| (r, Mutex::new(i64::MIN))),
            per_sender: per_sender.map(|r| (r, Mutex::default())),
        }
    }

    /// Whether the source has a limit at all.
    pub fn any(&self) -> bool {
        self.source.is_some() || self.per_sender.is_some()
    }

    /// Whether a request from `sender` may come in at `now_us`: the sender's
    /// budget first (a flooding sender spends none of the source's), then
    /// the source's.
    pub fn admit(&self, sender: Option<IpAddr>, now_us: i64) -> Result<(), OverLimit> {
        if let (Some((rate, tats)), Some(ip)) = (&self.per_sender, sender) {
            let mut tats = tats.lock().unwrap_or_else(|p| p.into_inner());
            if tats.len() >= SENDERS_MAX && !tats.contains_key(&ip) {
                tats.retain(|_, tat| *tat > now_us);
            }
            if tats.len() < SENDERS_MAX || tats.contains_key(&ip) {
                let tat = tats.get(&ip).copied().unwrap_or(i64::MIN);
                match check(tat, now_us, rate) {
                    Ok(next) => {
                        tats.insert(ip, next);
                    }
                    Err(wait) => return Err(over("rate_per_sender", wait)),
                }
            }
        }
        if let Some((rate, tat)) = &self.source {
            let mut tat = tat.lock().unwrap_or_else(|p| p.into_inner());
            match check(*tat, now_us, rate) {
                Ok(next) => *tat = next,
                Err(wait) => return Err(over("rate", wait)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            count,
            period_ms: 1_000,
            burst,
            key: None,
        })
    }

    #[test]
    fn a_sender_over_its_rate_waits_and_others_are_served() {
        let limits = SourceLimits::new(None, rate(2, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.admit(Some(a), 0).is_ok());
        assert!(limits.admit(Some(a), 0).is_ok());
        let refused = limits.admit(Some(a), 0).unwrap_err();
        assert_eq!(refused.limit, "rate_per_sender");
        assert_eq!(refused.retry_after_secs, 1);
        assert!(limits.admit(Some(b), 0).is_ok(), "another sender is served");
        assert!(
            limits.admit(Some(a), 500_000).is_ok(),
            "half a second later"
        );
        // No sender known: only the source's rate applies (none here).
        assert!(limits.admit(None, 0).is_ok());
    }

    #[test]
    fn the_sources_rate_holds_for_all_its_senders() {
        let limits = SourceLimits::new(rate(1, 1), rate(10, 10));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.admit(Some(a), 0).is_ok());
        assert_eq!(limits.admit(Some(b), 0).unwrap_err().limit, "rate");
        assert!(limits.admit(Some(b), 1_000_000).is_ok());
    }
}
