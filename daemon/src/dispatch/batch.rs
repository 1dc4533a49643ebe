//! Batch calls: the jobs of an action whose plugin takes several in one
//! call (ABI 1.3 `execute_batch`) wait in its queue while a call runs; the
//! next call takes them all, up to [`BATCH_MAX`], on one pool thread.

use std::time::Instant;

use futures_util::future::join_all;
use tokio::sync::OwnedSemaphorePermit;

use super::{failed_call, outcome_label, plugin_job, Dispatcher};
use crate::host::{ExecOutcome, PluginError};
use crate::store::{now_ms, ClaimedJob};

/// The most jobs handed to an action in one `execute_batch` call.
pub const BATCH_MAX: usize = 256;

/// Jobs waiting for their action's next batch call, with their slots.
#[derive(Default)]
pub(super) struct BatchQueue {
    jobs: Vec<(ClaimedJob, OwnedSemaphorePermit)>,
    /// Whether a task is making calls for this action now.
    running: bool,
}

impl Dispatcher {
    /// Whether the action takes several jobs in one call.
    pub(super) fn batches(&self, action: &str) -> bool {
        self.actions()
            .get(action)
            .is_some_and(|a| a.instance.batches())
    }

    /// Queues a job for its action's next batch call; true when no task is
    /// making calls for that action, and the caller must start one.
    pub(super) fn enqueue_batch(&self, job: ClaimedJob, permit: OwnedSemaphorePermit) -> bool {
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let queue = batches.entry(job.action.clone()).or_default();
        queue.jobs.push((job, permit));
        !std::mem::replace(&mut queue.running, true)
    }

    /// Makes batch calls for an action until its queue is empty.
    pub(super) async fn run_batches(&self, action: String) {
        loop {
            let batch: Vec<_> = {
                let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = batches.get_mut(&action) else {
                    return;
                };
                if queue.jobs.is_empty() {
                    queue.running = false;
                    return;
                }
                let n = queue.jobs.len().min(BATCH_MAX);
                queue.jobs.drain(..n).collect()
            };
            let (jobs, _permits): (Vec<ClaimedJob>, Vec<_>) = batch.into_iter().unzip();
            let started = now_ms();
            let outcomes = self.attempt_batch(&action, &jobs).await;
            let finished = now_ms();
            // Recorded together: the store's writer takes them in one commit.
            join_all(
                jobs.into_iter()
                    .zip(outcomes)
                    .map(|(job, outcome)| self.record(job, outcome, started, finished)),
            )
            .await;
        }
    }

    /// Runs jobs of one action in one `execute_batch` call: an outcome per
    /// job, in order.
    async fn attempt_batch(&self, action_name: &str, jobs: &[ClaimedJob]) -> Vec<ExecOutcome> {
        let Some(action) = self.actions().get(action_name).cloned() else {
            let msg = format!("no action named {action_name:?} in the config");
            return jobs
                .iter()
                .map(|job| self.logged(job, ExecOutcome::Permanent(msg.clone()), 0))
                .collect();
        };
        let Ok(_slot) = action.permits.clone().acquire_owned().await else {
            return vec![ExecOutcome::Retryable("action is shutting down".into()); jobs.len()];
        };
        let batch: Vec<switchyard_plugin_api::Job> = jobs.iter().map(plugin_job).collect();
        let json = serde_json::to_vec(&batch).unwrap_or_default();
        let (instance, timeout, n) = (action.instance.clone(), action.timeout, jobs.len());
        let started = Instant::now();
        let result = self
            .pool
            .call(timeout, move || instance.execute_batch(&json, n, timeout))
            .await
            .and_then(|r| r);
        let ms = started.elapsed().as_millis() as u64;
        // One call, counted once: "ok" when it gave an outcome per job.
        let (outcomes, label) = match result {
            Ok(outcomes) => (outcomes, "ok"),
            // A call that panicked or answered nonsense: one job of it may
            // be the cause. Each is tried alone, so only that one fails.
            Err(
                e @ (PluginError::Panicked(_)
                | PluginError::BadOutput(_)
                | PluginError::Internal(_)),
            ) if n > 1 => {
                tracing::warn!(
                    action = action_name,
                    jobs = n,
                    "a batch call failed ({e}); trying its jobs one by one"
                );
                self.metrics.plugin_call(
                    &action.instance.plugin().name,
                    "execute_batch",
                    outcome_label(&failed_call(e)),
                );
                drop(_slot);
                return join_all(jobs.iter().map(|job| self.attempt(job))).await;
            }
            Err(e) => {
                let failed = failed_call(e);
                let label = outcome_label(&failed);
                (vec![failed; n], label)
            }
        };
        self.metrics
            .plugin_call(&action.instance.plugin().name, "execute_batch", label);
        jobs.iter()
            .zip(outcomes)
            .map(|(job, outcome)| self.logged(job, outcome, ms))
            .collect()
    }
}
