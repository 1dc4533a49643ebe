//! Refusals told in the log without flooding it: a flood of forged
//! signatures, or a backlog over its bound answering thousands of 503s a
//! second, would otherwise write a line per request. Each (source, reason)
//! gets at most [`BURST`] lines per [`EVERY_MS`]; the next line says how
//! many like it went unlogged in between. Every refusal is still counted
//! (`switchyard_webhooks_rejected_total{source,reason}`) and kept in the
//! rejections ring.

use std::collections::HashMap;
use std::sync::Mutex;

/// The period over which refusals of one kind are counted.
pub const EVERY_MS: i64 = 10_000;
/// Lines per source and reason in a period: the first few say what is
/// wrong (a misconfigured sender's reasons differ), the rest are counted.
pub const BURST: u32 = 5;

#[derive(Default)]
pub struct Quiet {
    /// Keyed by configured source names (an unknown source's name, which
    /// the sender chooses, is keyed as ""): bounded by the config.
    last: Mutex<HashMap<(String, &'static str), Period>>,
}

#[derive(Clone, Copy)]
struct Period {
    started_ms: i64,
    logged: u32,
    unlogged: u64,
}

impl Quiet {
    /// Whether this refusal is logged: `Some(n)` with the number of refusals
    /// like it left unlogged before it, or `None` (counted as unlogged). A
    /// clock that stepped back starts a new period.
    pub fn admit(&self, source: &str, reason: &'static str, now_ms: i64) -> Option<u64> {
        let mut periods = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let p = periods
            .entry((source.to_string(), reason))
            .or_insert(Period {
                started_ms: now_ms,
                logged: 0,
                unlogged: 0,
            });
        if now_ms < p.started_ms || now_ms - p.started_ms >= EVERY_MS {
            p.started_ms = now_ms;
            p.logged = 0;
        }
        if p.logged < BURST {
            p.logged += 1;
            Some(std::mem::take(&mut p.unlogged))
        } else {
            p.unlogged += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_source_and_reason_in_each_period_then_the_count_of_the_rest() {
        let q = Quiet::default();
        for n in 0..BURST {
            assert_eq!(q.admit("a", "backlog", 1_000 + i64::from(n)), Some(0));
        }
        for n in 0..500 {
            assert_eq!(q.admit("a", "backlog", 1_010 + n), None);
        }
        // Another reason, another source: their own lines.
        assert_eq!(q.admit("a", "unauthenticated", 1_001), Some(0));
        assert_eq!(q.admit("b", "backlog", 1_001), Some(0));
        assert_eq!(q.admit("a", "backlog", 1_000 + EVERY_MS), Some(500));
        assert_eq!(q.admit("a", "backlog", 1_000 + EVERY_MS + 1), Some(0));
        // The clock stepped back: a new period.
        for _ in 0..10 {
            q.admit("a", "backlog", 1_000 + EVERY_MS + 2);
        }
        assert_eq!(q.admit("a", "backlog", 10), Some(7));
    }
}
