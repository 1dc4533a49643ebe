//! Running attempts on action plugins: one job in one `execute` call, or
//! several of one action in one `execute_batch` call (a batch call that
//! fails as a whole — a panic, nonsense — is retried job by job so only
//! the job that caused it fails). Each call goes on the call pool within
//! its action's concurrency and deadline; each outcome is logged and the
//! call counted. What the outcome changes is `record.rs`'s.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;

use super::job::plugin_job;
use super::Action;
use crate::host::{CallPool, ExecOutcome, PluginError};
use crate::metrics::Metrics;
use crate::store::ClaimedJob;

/// Makes the plugin calls of attempts. Cheap to clone.
#[derive(Clone)]
pub struct Execute {
    pub pool: CallPool,
    pub metrics: Arc<Metrics>,
}

impl Execute {
    /// Runs one attempt of a job on `action` (`None`: not configured) and
    /// logs the outcome.
    pub async fn one(&self, action: Option<Arc<Action>>, job: &ClaimedJob) -> ExecOutcome {
        let Some(action) = action else {
            let msg = format!("no action named {:?} in the config", job.action);
            tracing::error!(event_id = %job.event_id, rule = %job.rule, action = %job.action, job_id = %job.id, "{msg}");
            return ExecOutcome::Permanent(msg);
        };
        let Ok(_slot) = action.permits.clone().acquire_owned().await else {
            return ExecOutcome::Retryable("action is shutting down".into());
        };
        let span = super::trace::start(job);
        let traceparent = span.as_ref().map(|s| s.traceparent.as_str());
        let json = serde_json::to_vec(&plugin_job(job, traceparent)).unwrap_or_default();
        let instance = action.instance.clone();
        let timeout = action.timeout;
        let started = Instant::now();
        let result = self
            .pool
            .call(timeout, move || instance.execute(&json, timeout))
            .await
            .and_then(|r| r);
        let attempt = result.unwrap_or_else(failed_call);
        let _in_trace = super::trace::end(span, &attempt);
        self.metrics.plugin_call(
            &action.instance.plugin().name,
            "execute",
            outcome_label(&attempt),
        );
        logged(job, attempt, started.elapsed().as_millis() as u64)
    }

    /// Runs jobs of one action (`None`: not configured) in one
    /// `execute_batch` call: an outcome per job, in order.
    pub async fn batch(
        &self,
        action_name: &str,
        action: Option<Arc<Action>>,
        jobs: &[ClaimedJob],
    ) -> Vec<ExecOutcome> {
        let Some(action) = action else {
            let msg = format!("no action named {action_name:?} in the config");
            return jobs
                .iter()
                .map(|job| logged(job, ExecOutcome::Permanent(msg.clone()), 0))
                .collect();
        };
        // `concurrency` bounds the jobs in flight, not the calls.
        let slots = action.slots_for(jobs.len());
        let Ok(slot) = action.permits.clone().acquire_many_owned(slots).await else {
            return vec![ExecOutcome::Retryable("action is shutting down".into()); jobs.len()];
        };
        let spans: Vec<_> = jobs.iter().map(super::trace::start).collect();
        let batch: Vec<_> = jobs
            .iter()
            .zip(&spans)
            .map(|(job, span)| plugin_job(job, span.as_ref().map(|s| s.traceparent.as_str())))
            .collect();
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
                // The jobs alone take their own slots (and spans).
                drop(slot);
                let tried_alone =
                    ExecOutcome::Retryable("the batch call failed; tried alone".into());
                for span in spans {
                    super::trace::end(span, &tried_alone);
                }
                return join_all(jobs.iter().map(|job| self.one(Some(action.clone()), job))).await;
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
            .zip(spans)
            .map(|((job, outcome), span)| {
                let _in_trace = super::trace::end(span, &outcome);
                logged(job, outcome, ms)
            })
            .collect()
    }
}

/// Logs an attempt's outcome.
fn logged(job: &ClaimedJob, attempt: ExecOutcome, ms: u64) -> ExecOutcome {
    let event_id = &job.event_id;
    match &attempt {
        ExecOutcome::Done(_) => tracing::info!(
            %event_id, rule = %job.rule, action = %job.action,
            job_id = %job.id, attempt = job.attempt, ms, "job done"
        ),
        ExecOutcome::RetryAfter(m, after) => tracing::warn!(
            %event_id, rule = %job.rule, action = %job.action,
            job_id = %job.id, attempt = job.attempt, ms, retry_after_ms = after.as_millis() as u64,
            "job failed (retryable, the target asked to wait): {m}"
        ),
        ExecOutcome::Gone(m) => tracing::error!(
            %event_id, rule = %job.rule, action = %job.action,
            job_id = %job.id, attempt = job.attempt, ms, "target is gone; pausing the action: {m}"
        ),
        ExecOutcome::Retryable(m) => tracing::warn!(
            %event_id, rule = %job.rule, action = %job.action,
            job_id = %job.id, attempt = job.attempt, ms, "job failed (retryable): {m}"
        ),
        ExecOutcome::Permanent(m) => tracing::error!(
            %event_id, rule = %job.rule, action = %job.action,
            job_id = %job.id, attempt = job.attempt, ms, "job failed (permanent): {m}"
        ),
    }
    attempt
}

/// An outcome as the metrics name it.
pub(super) fn outcome_label(attempt: &ExecOutcome) -> &'static str {
    match attempt {
        ExecOutcome::Done(_) => "done",
        ExecOutcome::Retryable(_) | ExecOutcome::RetryAfter(..) => "retryable",
        ExecOutcome::Permanent(_) => "permanent",
        ExecOutcome::Gone(_) => "gone",
    }
}

/// What a call that did not return an outcome means for its jobs.
fn failed_call(e: PluginError) -> ExecOutcome {
    match e {
        // A plugin that times out, is busy or panics may succeed next time.
        PluginError::Timeout(_) | PluginError::Busy(_) | PluginError::Panicked(_) => {
            ExecOutcome::Retryable(e.to_string())
        }
        e => ExecOutcome::Permanent(e.to_string()),
    }
}
