//! Retention, a bounded step at a time: a [`Sweep`] says where one stands
//! and what it removes next ([`Pipeline::prune`] runs a step), [`sweep`]
//! runs one whole. Each backend states the steps' statements; what they
//! may cost is checked by the store's plan tests (`tests/it/plans/`,
//! one workload planned by each backend).

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
    /// Steps taken (a whole sweep's).
    pub steps: u64,
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
        self.steps += 1;
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

    /// What a step that read a window of ids (`count` of them, the last
    /// `last`) makes of it: the upper bound of the ids it deletes among (the
    /// phase's cursor when the window is empty), and where the phase goes
    /// on — from its last id when the window was full, else nowhere.
    pub(crate) fn window(&self, count: i64, last: Option<String>) -> (String, Option<String>) {
        let upper = last.clone().unwrap_or_else(|| self.after.clone());
        (upper, last.filter(|_| count >= SWEEP_WINDOW))
    }

    /// After a step that deleted `n` rows with a bounded statement (dedup
    /// keys, versions): the phase goes on while the bound was reached.
    pub(crate) fn again_if_full(n: u64) -> Option<String> {
        (n as i64 >= SWEEP_WINDOW).then(String::new)
    }

    /// The step after this one: the same phase from `after` (where the
    /// phase stopped; unused by the phases that are not walked by id),
    /// else the next phase.
    pub(crate) fn then(&self, after: Option<String>) -> Option<Sweep> {
        if let Some(after) = after {
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

/// Runs a whole sweep, step by step, until it ends, `max_steps` were
/// taken, `stop` says so, or a step fails: what it removed (with where it
/// stopped, if before the end), and the failure if one did.
pub async fn sweep(
    store: &dyn Pipeline,
    before_ms: i64,
    now_ms: i64,
    max_steps: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> (Pruned, StoreResult<()>) {
    let mut total = Pruned::default();
    let mut next = Some(Sweep::new(before_ms, now_ms));
    while let Some(step) = next.take() {
        if stop() || total.steps as usize >= max_steps {
            next = Some(step);
            break;
        }
        match store.prune(step.clone()).await {
            Ok(pruned) => {
                total.add(&pruned);
                next = pruned.next;
            }
            Err(e) => {
                total.next = Some(step);
                return (total, Err(e));
            }
        }
    }
    total.next = next;
    (total, Ok(()))
}
