//! Switchyard's own events: what the stages announce ([`Notice`]s — a job
//! gave up, a breaker opened, an action was disabled, a rule file broke)
//! stored and routed through the rules like a provider's events, with the
//! source `switchyard`, so users alert the way they already route.
//!
//! Rate-limited: at most [`PER_KEY`] a minute of one type about one thing
//! (an action, a file) and [`ALL`] a minute in all; what is held back is
//! counted into the next one that passes (`data.suppressed`). A notice's
//! dedup key makes announcing the same thing twice one event. Jobs of
//! Switchyard's own events are never announced (the dispatcher's rule), so
//! an alert whose action fails cannot feed itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::event::{Announce, Notice, OWN_SOURCE};
use crate::store::{now_ms, BacklogGauge, Ingested, PendingEvent, Pipeline, StoredRequest};

/// Notices of one type about one thing, a minute.
pub const PER_KEY: u32 = 5;
/// Notices in all, a minute.
pub const ALL: u32 = 60;
const MINUTE_MS: i64 = 60_000;

#[derive(Default)]
struct Window {
    start_ms: i64,
    passed: u32,
    held: u64,
}

impl Window {
    /// Whether one more may pass now; a new minute starts a new count.
    fn admit(&mut self, now: i64, max: u32) -> bool {
        if now - self.start_ms >= MINUTE_MS {
            self.start_ms = now;
            self.passed = 0;
        }
        if self.passed < max {
            self.passed += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }
}

#[derive(Default)]
struct Limiter {
    per_key: HashMap<(&'static str, String), Window>,
    all: Window,
}

/// Most keys the limiter remembers (types × subjects); beyond, it forgets
/// the quiet ones.
const KEYS: usize = 1024;

impl Limiter {
    /// `Some(held back since the last one of this key)` if `n` may pass.
    fn admit(&mut self, n: &Notice, now: i64) -> Option<u64> {
        if self.per_key.len() >= KEYS {
            self.per_key.retain(|_, w| now - w.start_ms < MINUTE_MS);
        }
        let w = self.per_key.entry((n.kind, n.subject.clone())).or_default();
        if !w.admit(now, PER_KEY) || !self.all.admit(now, ALL) {
            if w.held == 1 {
                tracing::warn!(kind = n.kind, subject = %n.subject, "too many notices; holding them back for a minute");
            }
            return None;
        }
        Some(std::mem::take(&mut w.held))
    }
}

/// Stores and routes notices.
pub struct Notices {
    pub store: Arc<dyn Pipeline>,
    pub inbox: mpsc::Sender<PendingEvent>,
    pub overflowed: Arc<AtomicBool>,
    pub gauge: Arc<BacklogGauge>,
    pub dedup_window_ms: i64,
    limiter: Mutex<Limiter>,
    /// Where the store and route a notice: the daemon's runtime, also for
    /// a notice announced from another thread (the rules' file watcher).
    runtime: tokio::runtime::Handle,
}

impl Notices {
    /// Made within the daemon's runtime.
    pub fn new(
        store: Arc<dyn Pipeline>,
        inbox: mpsc::Sender<PendingEvent>,
        overflowed: Arc<AtomicBool>,
        gauge: Arc<BacklogGauge>,
        dedup_window_ms: i64,
    ) -> Arc<Notices> {
        Arc::new(Notices {
            store,
            inbox,
            overflowed,
            gauge,
            dedup_window_ms,
            limiter: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// What the stages call.
    pub fn announcer(self: &Arc<Self>) -> Announce {
        let me = self.clone();
        Arc::new(move |n| me.announce(n))
    }

    fn announce(self: &Arc<Self>, mut n: Notice) {
        let now = now_ms();
        let held = {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            limiter.admit(&n, now)
        };
        let Some(held) = held else { return };
        if held > 0 {
            n.data["suppressed"] = held.into();
        }
        let me = self.clone();
        self.runtime
            .spawn(async move { me.store_and_route(n, now).await });
    }

    async fn store_and_route(&self, n: Notice, now: i64) {
        let kind = n.kind;
        let event = n.into_event(time::OffsetDateTime::now_utc());
        let request = StoredRequest {
            id: crate::event::new_id(),
            source: OWN_SOURCE.into(),
            received_at_ms: now,
            method: "POST".into(),
            path: String::new(),
            query: String::new(),
            headers: Vec::new(),
            body: bytes::Bytes::from(serde_json::to_vec(&event.data).unwrap_or_default()),
        };
        match self
            .store
            .ingest(request, std::slice::from_ref(&event), self.dedup_window_ms)
            .await
        {
            Ok(outcome) if matches!(outcome.first(), Some(Ingested::New(_))) => {
                tracing::info!(event_id = %event.id, kind, "notice taken in");
                self.gauge.unrouted_events.fetch_add(1, Ordering::Relaxed);
                if self
                    .inbox
                    .try_send(PendingEvent {
                        event,
                        routings: 0,
                        released: false,
                    })
                    .is_err()
                {
                    self.overflowed.store(true, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(kind, "cannot store a notice: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: &'static str, subject: &str) -> Notice {
        Notice {
            kind,
            subject: subject.into(),
            data: serde_json::json!({}),
            dedup_key: String::new(),
        }
    }

    #[test]
    fn notices_are_held_back_per_key_and_in_all_and_counted() {
        let mut l = Limiter::default();
        let dead = notice("switchyard.action.dead_letter", "email");
        for _ in 0..PER_KEY {
            assert_eq!(l.admit(&dead, 1_000), Some(0));
        }
        assert_eq!(l.admit(&dead, 1_001), None);
        assert_eq!(l.admit(&dead, 1_002), None);
        // Another action is not held back by the first one's storm.
        assert_eq!(
            l.admit(&notice("switchyard.action.dead_letter", "slack"), 1_003),
            Some(0)
        );
        // A minute later: it passes, saying two were held back.
        assert_eq!(l.admit(&dead, 61_000), Some(2));
        // In all: at most ALL a minute over every key.
        let mut l = Limiter::default();
        let passed = (0..200)
            .filter(|i| {
                l.admit(
                    &notice("switchyard.action.dead_letter", &format!("a{i}")),
                    5,
                )
                .is_some()
            })
            .count();
        assert_eq!(passed, ALL as usize);
    }
}
