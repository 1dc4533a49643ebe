//! Retention, a bounded step at a time: a [`Sweep`] says where one stands
//! and what it removes next ([`Pipeline::prune`] runs a step), [`sweep`]
//! runs one whole. Each backend states the steps' statements; what they
//! may cost is checked by the store's plan tests (`sqlite/plans.rs`,
//! `tests/it/pg_plans.rs`).

use serde::Serialize;

use super::{ulid_floor, Pipeline, StoreResult};

/// What a prune removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    pub events: u64,
    pub requests: u64,
    pub dedup_keys: u64,
    /// Object versions (the stale-event guard) not updated within retention.
    pub versions: u64,
    /// Journal segments removed (the embedded store).
    pub segments: u64,
    /// The sweep's next step; `None` once it is done.
    #[serde(skip)]
    pub next: Option<Sweep>,
}

impl Pruned {
    /// Counts a step's removals in.
    pub fn add(&mut self, step: &Pruned) {
        self.events += step.events;
        self.requests += step.requests;
        self.dedup_keys += step.dedup_keys;
        self.versions += step.versions;
        self.segments += step.segments;
    }

    /// Whether anything was removed.
    pub fn any(&self) -> bool {
        self.events + self.requests + self.dedup_keys + self.versions + self.segments > 0
    }
}

/// Rows a step of a sweep looks at, at most, in the table it is in: what
/// bounds one prune transaction, whatever the store holds.
pub(crate) const SWEEP_WINDOW: i64 = 128;

/// Where a retention sweep stands. A sweep removes what retention lets go
/// of, one table after another (events with their jobs and attempts, then
/// requests, then the journal segments no request needs, expired dedup
/// keys, old object versions), a bounded step at a time: events and
/// requests are walked in id order below the retention's floor, at most
/// [`SWEEP_WINDOW`] ids a step, from where the last step stopped — so rows
/// that must stay (an event still to route, or with a job still to run)
/// are stepped over once per sweep, never read again by every step.
/// Each step is its own short transaction: acknowledgements are never
/// queued behind more than one window of deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Events and requests received before this are old enough.
    pub before_ms: i64,
    /// Dedup keys that expired by this are let go.
    pub now_ms: i64,
    pub phase: SweepPhase,
    /// The last id the phase looked at ("" before its first step).
    pub after: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepPhase {
    Events,
    Requests,
    Segments,
    DedupKeys,
    Versions,
}

impl Sweep {
    pub fn new(before_ms: i64, now_ms: i64) -> Sweep {
        Sweep {
            before_ms,
            now_ms,
            phase: SweepPhase::Events,
            after: String::new(),
        }
    }

    /// The id below which rows are old enough (ids are ULIDs).
    pub(crate) fn floor(&self) -> String {
        ulid_floor(self.before_ms)
    }

    /// The step after this one: the same phase from `last` when the window
    /// was full (`last` is the window's last id), else the next phase.
    pub(crate) fn then(&self, last: Option<String>) -> Option<Sweep> {
        if let Some(after) = last {
            return Some(Sweep {
                after,
                ..self.clone()
            });
        }
        let phase = match self.phase {
            SweepPhase::Events => SweepPhase::Requests,
            SweepPhase::Requests => SweepPhase::Segments,
            SweepPhase::Segments => SweepPhase::DedupKeys,
            SweepPhase::DedupKeys => SweepPhase::Versions,
            SweepPhase::Versions => return None,
        };
        Some(Sweep {
            phase,
            after: String::new(),
            ..self.clone()
        })
    }
}

/// Runs a whole sweep, step by step (at most `max_steps`); what it removed.
pub async fn sweep(
    store: &dyn Pipeline,
    before_ms: i64,
    now_ms: i64,
    max_steps: usize,
) -> StoreResult<Pruned> {
    let mut total = Pruned::default();
    let mut next = Some(Sweep::new(before_ms, now_ms));
    for _ in 0..max_steps {
        let Some(step) = next.take() else {
            break;
        };
        let pruned = store.prune(step).await?;
        total.add(&pruned);
        next = pruned.next;
    }
    total.next = next;
    Ok(total)
}
