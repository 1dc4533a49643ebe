//! Counting what arrives, and recording it: the router adds each event's
//! verdict to a [`Counter`] (in memory, a lock per batch); the
//! [`Recorder`] takes what was counted about once a second and records it
//! in the store in one transaction, announcing each drift seen for the
//! first time as `switchyard.schema.drift`, and once a minute forgets
//! types and drift not seen within the retention.
//!
//! Bounded: at most [`MAX_TYPES`] types a source and [`MAX_PATHS`] drift
//! paths a type are tracked (past them, a warning, once); a record that
//! fails is kept for the next one, merged with what came since.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Drift, Verdict};
use crate::event::{Announce, Event, Notice};
use crate::store::{now_ms, DriftTally, Learned, Pipeline, Tally, TypeTally};

/// Types tracked a source.
pub const MAX_TYPES: usize = 1024;
/// Drift paths tracked a type.
pub const MAX_PATHS: usize = 64;
const EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY_MS: i64 = 60_000;

type TypeKey = (String, String);
type DriftKey = (String, String, String, &'static str);

#[derive(Default)]
struct Inner {
    types: HashMap<TypeKey, TypeTally>,
    drift: HashMap<DriftKey, DriftTally>,
    learned: Vec<Learned>,
    /// Every type and drift path ever tracked, to bound them.
    known_types: HashMap<String, HashSet<String>>,
    known_paths: HashMap<TypeKey, HashSet<(String, &'static str)>>,
    warned: bool,
}

/// What arrived and how it matched, since the last record.
#[derive(Default)]
pub struct Counter {
    inner: Mutex<Inner>,
}

impl Counter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts events with their verdicts, and the types learned on the
    /// way.
    pub fn add(&self, checked: &[(&Event, &Verdict)], learned: Vec<Learned>) {
        let mut inner = self.lock();
        for (event, verdict) in checked {
            inner.add(event, verdict);
        }
        inner.learned.extend(learned);
    }

    /// Takes what was counted.
    pub fn take(&self, at_ms: i64) -> Tally {
        let mut inner = self.lock();
        Tally {
            at_ms,
            types: std::mem::take(&mut inner.types).into_values().collect(),
            drift: std::mem::take(&mut inner.drift).into_values().collect(),
            learned: std::mem::take(&mut inner.learned),
            prune_before_ms: None,
        }
    }

    /// Puts back a tally that could not be recorded, merged with what
    /// came since.
    pub fn restore(&self, tally: Tally) {
        let mut inner = self.lock();
        for t in tally.types {
            let key = (t.source.clone(), t.kind.clone());
            match inner.types.get_mut(&key) {
                Some(now) => now.count += t.count,
                None => {
                    inner.types.insert(key, t);
                }
            }
        }
        for d in tally.drift {
            let key = (
                d.source.clone(),
                d.kind.clone(),
                d.path.clone(),
                kind_str(&d.drift),
            );
            match inner.drift.get_mut(&key) {
                Some(now) => {
                    now.count += d.count;
                    now.first_event = d.first_event;
                }
                None => {
                    inner.drift.insert(key, d);
                }
            }
        }
        inner.learned.extend(tally.learned);
    }
}

/// A drift kind's name as the static the keys hold.
fn kind_str(name: &str) -> &'static str {
    use super::DriftKind::*;
    [UnknownType, Missing, TypeChanged, Added, Invalid]
        .into_iter()
        .map(|k| k.as_str())
        .find(|k| *k == name)
        .unwrap_or("invalid")
}

impl Inner {
    fn add(&mut self, event: &Event, verdict: &Verdict) {
        let known = self.known_types.entry(event.source.clone()).or_default();
        if !known.contains(&event.kind) {
            if known.len() >= MAX_TYPES {
                self.warn(&event.source, "types");
                return;
            }
            known.insert(event.kind.clone());
        }
        let key = (event.source.clone(), event.kind.clone());
        let t = self.types.entry(key.clone()).or_insert_with(|| TypeTally {
            source: event.source.clone(),
            kind: event.kind.clone(),
            count: 0,
            last_event: String::new(),
        });
        t.count += 1;
        t.last_event.clone_from(&event.id);
        let Verdict::Drifted(drift) = verdict else {
            return;
        };
        for Drift { path, kind, detail } in drift {
            let paths = self.known_paths.entry(key.clone()).or_default();
            let p = (path.clone(), kind.as_str());
            if !paths.contains(&p) {
                if paths.len() >= MAX_PATHS {
                    self.warn(&event.source, "drift paths of one type");
                    continue;
                }
                paths.insert(p);
            }
            let d = self
                .drift
                .entry((key.0.clone(), key.1.clone(), path.clone(), kind.as_str()))
                .or_insert_with(|| DriftTally {
                    source: event.source.clone(),
                    kind: event.kind.clone(),
                    path: path.clone(),
                    drift: kind.as_str().to_string(),
                    detail: detail.clone(),
                    count: 0,
                    first_event: event.id.clone(),
                    last_event: String::new(),
                });
            d.count += 1;
            d.last_event.clone_from(&event.id);
            d.detail.clone_from(detail);
        }
    }

    fn warn(&mut self, source: &str, what: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                source,
                "the catalog tracks no more {what}; later ones are not counted"
            );
        }
    }
}

/// Records the counter's tallies in the store about once a second.
pub struct Recorder {
    pub store: Arc<dyn Pipeline>,
    pub counter: Arc<Counter>,
    /// Where drift first seen is announced.
    pub announce: Announce,
    /// Types and drift not seen within it are forgotten.
    pub retention: Option<Duration>,
}

impl Recorder {
    /// Records until `stop`, and once more then.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_prune = 0;
            loop {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(EVERY) => false,
                    _ = stop.wait_for(|s| *s) => true,
                };
                let now = now_ms();
                let mut tally = self.counter.take(now);
                if let Some(keep) = self.retention {
                    if now - last_prune >= PRUNE_EVERY_MS {
                        last_prune = now;
                        tally.prune_before_ms = Some(now - keep.as_millis() as i64);
                    }
                }
                if !tally.is_empty() {
                    self.record(tally).await;
                }
                if stopping {
                    break;
                }
            }
        })
    }

    async fn record(&self, tally: Tally) {
        match self.store.record_catalog(tally.clone()).await {
            Ok(new) => {
                for d in new {
                    tracing::warn!(source = %d.source, kind = %d.kind, path = %d.path,
                        drift = %d.drift, event_id = %d.first_event, "schema drift: {}", d.detail);
                    (self.announce)(drift_notice(&d));
                }
            }
            Err(e) => {
                tracing::warn!("cannot record the event types (will retry): {e}");
                self.counter.restore(Tally {
                    prune_before_ms: None,
                    ..tally
                });
            }
        }
    }
}

/// The announcement of a drift first seen.
pub fn drift_notice(d: &DriftTally) -> Notice {
    Notice {
        kind: "switchyard.schema.drift",
        subject: format!("{}/{}", d.source, d.kind),
        data: json!({
            "source": d.source,
            "type": d.kind,
            "path": d.path,
            "drift": d.drift,
            "detail": d.detail,
            "event_id": d.first_event,
            "count": d.count,
        }),
        dedup_key: format!(
            "schema.drift:{}:{}:{}:{}:{}",
            d.source, d.kind, d.path, d.drift, d.first_event
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::DriftKind;
    use serde_json::json;
    use switchyard_plugin_api::EventDraft;
    use time::OffsetDateTime;

    fn event(kind: &str) -> Event {
        let draft = EventDraft::new(kind, json!({}));
        Event::from_draft(draft, "s", "p", b"{}", 0, OffsetDateTime::UNIX_EPOCH)
    }

    fn added(path: String) -> Drift {
        Drift {
            path,
            kind: DriftKind::Added,
            detail: "not in the documentation".into(),
        }
    }

    #[test]
    fn counts_merge_and_what_is_tracked_is_bounded() {
        let counter = Counter::default();
        let e = event("kind");
        let drifted = Verdict::Drifted(vec![added("/a".into())]);
        counter.add(&[(&e, &drifted), (&e, &drifted)], Vec::new());
        let tally = counter.take(0);
        assert_eq!(tally.types.len(), 1);
        assert_eq!(tally.types[0].count, 2);
        assert_eq!(tally.drift[0].count, 2);
        assert_eq!(tally.drift[0].first_event, e.id);
        // A record that failed comes back, merged with what came since.
        counter.restore(tally);
        counter.add(&[(&e, &drifted)], Vec::new());
        let tally = counter.take(0);
        assert_eq!((tally.types[0].count, tally.drift[0].count), (3, 3));

        // A provider inventing types and fields without end: bounded.
        let events: Vec<Event> = (0..MAX_TYPES + 100)
            .map(|i| event(&format!("t{i}")))
            .collect();
        let matches = Verdict::Matches;
        let checked: Vec<_> = events.iter().map(|e| (e, &matches)).collect();
        counter.add(&checked, Vec::new());
        assert_eq!(counter.take(0).types.len(), MAX_TYPES - 1);
        let wide = Verdict::Drifted(
            (0..MAX_PATHS + 50)
                .map(|i| added(format!("/f{i}")))
                .collect(),
        );
        counter.add(&[(&e, &wide)], Vec::new());
        assert_eq!(counter.take(0).drift.len(), MAX_PATHS - 1);
    }
}
