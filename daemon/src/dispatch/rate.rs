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
                let (next, slot) = reserve(*tat, now_us, rate);
                *tat = next;
                Ok(slot)
            }
            Budgets::Shared => {
                let step = rate.interval_us();
                let shared = store.shared().ok_or_else(|| {
                    StoreError::Other("a shared budget needs the shared store".into())
                })?;
                let tat = shared
                    .reserve_rate(action.to_string(), key.to_string(), step, now_us)
                    .await?;
                Ok(slot_from(tat, now_us, rate))
            }
        }
    }
}
