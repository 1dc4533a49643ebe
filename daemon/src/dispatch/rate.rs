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
//! Backlog — jobs redriven from the dead letters, jobs of a replay — goes
//! after live jobs: it takes a slot only when the budget is full (none of
//! the burst used), so that a live job finds the burst there; else it
//! waits in a lane of its own (a budget at the same rate beside the
//! action's), asking again at its turn. A redrive of thousands thus drains
//! at the rate while live jobs keep their latency, and takes the whole
//! rate when no live job wants it.
//!
//! The budget lives in memory on the embedded store (one process) and in
//! the database on the shared store (`rate_budgets`), so that several
//! instances share one rate rather than each having its own.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

pub use crate::config::rate::{reserve, slot_from, Rate};
use crate::store::{ClaimedJob, Pipeline, StoreError, StoreResult};

/// The budget a job counts against: its key's value, or the action's.
pub fn key_of(rate: &Rate, job: &ClaimedJob) -> String {
    match &rate.key {
        None => String::new(),
        Some(param) => match job.params.get(param) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        },
    }
}

/// The budget a backlog job waits its turn in: its action's, beside the
/// live one (`key` the live budget's).
pub fn lane_of(key: &str) -> String {
    format!("{key}\u{1}backlog")
}

/// A budget as shown: jobs it lets go at once now, and until when its
/// reserved slots run (µs; now or earlier when none waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetView {
    /// `None` for an action with a budget per key.
    pub left: Option<u32>,
    pub reserved_until_us: i64,
}

/// What is left at `now_us` of a budget at `tat_us` (GCRA: a job conforms
/// while its time is within the tolerance).
pub fn left_at(tat_us: i64, now_us: i64, rate: &Rate) -> u32 {
    let ahead = tat_us.saturating_sub(now_us).max(0);
    let room = rate.tolerance_us() + rate.interval_us() - ahead;
    (room.max(0) / rate.interval_us()).clamp(0, i64::from(rate.burst)) as u32
}

/// Where budgets are kept: in memory (one process), or in the shared store.
pub enum Budgets {
    Local(Mutex<HashMap<(String, String), i64>>),
    Shared,
}

fn no_shared() -> StoreError {
    StoreError::Other("a shared budget needs the shared store".into())
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

    fn local(
        budgets: &Mutex<HashMap<(String, String), i64>>,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), i64>> {
        budgets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time of `action`'s budget for `key` kept in memory (none yet:
    /// `i64::MIN`), the map swept of the full ones past [`LOCAL_MAX`].
    fn local_tat<'a>(
        budgets: &'a mut HashMap<(String, String), i64>,
        action: &str,
        key: &str,
        now_us: i64,
    ) -> &'a mut i64 {
        if budgets.len() > LOCAL_MAX {
            // A budget whose time has passed is as good as none.
            budgets.retain(|_, tat| *tat > now_us);
        }
        budgets
            .entry((action.to_string(), key.to_string()))
            .or_insert(i64::MIN)
    }

    /// Takes one job's slot now only when the budget is full: whether it
    /// did (backlog's way, leaving the burst to live jobs).
    pub async fn take_if_full(
        &self,
        store: &dyn Pipeline,
        action: &str,
        key: &str,
        rate: &Rate,
        now_us: i64,
    ) -> StoreResult<bool> {
        match self {
            Budgets::Local(budgets) => {
                let mut budgets = Self::local(budgets);
                let tat = Self::local_tat(&mut budgets, action, key, now_us);
                if *tat > now_us {
                    return Ok(false);
                }
                *tat = now_us + rate.interval_us();
                Ok(true)
            }
            Budgets::Shared => {
                let shared = store.shared().ok_or_else(no_shared)?;
                shared
                    .take_rate_if_full(
                        action.to_string(),
                        key.to_string(),
                        rate.interval_us(),
                        now_us,
                    )
                    .await
            }
        }
    }

    /// Forgets `action`'s budgets kept here (its rate was lowered: the new
    /// one counts from now). The shared store's go with its jobs' slots.
    pub fn forget(&self, action: &str) {
        if let Budgets::Local(budgets) = self {
            Self::local(budgets).retain(|(a, _), _| a != action);
        }
    }

    /// `action`'s budgets as shown at `now_us`.
    pub async fn view(
        &self,
        store: &dyn Pipeline,
        action: &str,
        rate: &Rate,
        now_us: i64,
    ) -> StoreResult<BudgetView> {
        let budgets: Vec<(String, i64)> = match self {
            Budgets::Local(budgets) => Self::local(budgets)
                .iter()
                .filter(|((a, _), _)| a == action)
                .map(|((_, k), tat)| (k.clone(), *tat))
                .collect(),
            Budgets::Shared => {
                let shared = store.shared().ok_or_else(no_shared)?;
                shared.rate_budgets(action.to_string()).await?
            }
        };
        let live = budgets.iter().find(|(k, _)| k.is_empty()).map(|b| b.1);
        Ok(BudgetView {
            left: rate
                .key
                .is_none()
                .then(|| left_at(live.unwrap_or(i64::MIN), now_us, rate)),
            reserved_until_us: budgets
                .iter()
                .map(|b| b.1)
                .max()
                .unwrap_or(now_us)
                .max(now_us),
        })
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
                let mut budgets = Self::local(budgets);
                let tat = Self::local_tat(&mut budgets, action, key, now_us);
                let (next, slot) = reserve(*tat, now_us, rate);
                *tat = next;
                Ok(slot)
            }
            Budgets::Shared => {
                let step = rate.interval_us();
                let shared = store.shared().ok_or_else(no_shared)?;
                let tat = shared
                    .reserve_rate(action.to_string(), key.to_string(), step, now_us)
                    .await?;
                Ok(slot_from(tat, now_us, rate))
            }
        }
    }
}

/// An action's rate as it stands, beside what the store says of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveRate {
    /// Jobs a second it may go at, when its destination's refusals
    /// lowered its rate (`adapt.rs`).
    pub lowered_to: Option<f64>,
    /// Jobs its budget lets go at once now (none for a budget per key).
    pub budget_left: Option<u32>,
    /// Until the last slot reserved for its waiting jobs: the time its
    /// backlog takes to drain at the rate (ms).
    pub drain_ms: Option<i64>,
    /// Jobs a second in force: configured or lowered.
    pub per_s: Option<f64>,
}

/// Every action's rate as it stands at `now_ms`.
pub async fn live_rates(
    actions: &super::Actions,
    budgets: &Budgets,
    store: &dyn Pipeline,
    now_ms: i64,
) -> std::collections::BTreeMap<String, LiveRate> {
    let mut shown = std::collections::BTreeMap::new();
    for (name, action) in actions {
        let mut live = LiveRate {
            lowered_to: action.adapt.lowered_to(now_ms),
            ..LiveRate::default()
        };
        if let Some(rate) = action.rate_at(now_ms) {
            live.per_s = Some(rate.per_second());
            let now_us = now_ms * 1_000;
            match budgets.view(store, name, &rate, now_us).await {
                Ok(view) => {
                    live.budget_left = view.left;
                    live.drain_ms = Some((view.reserved_until_us - now_us) / 1_000);
                }
                Err(e) => tracing::warn!(action = %name, "cannot read the rate budget: {e}"),
            }
        }
        shown.insert(name.clone(), live);
    }
    shown
}
