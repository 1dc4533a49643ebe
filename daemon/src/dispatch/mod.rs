//! Dispatch: carrying out the jobs rules decided on, through action plugins.
//!
//! Owns: the [`Job`] record and running it on its action's plugin instance,
//! within the action's concurrency limit and deadline, on the plugin call
//! pool. Reports each outcome (done, retryable, permanent) in the log.
//! Calls: `host` (action instances, the call pool) and `event`. Nothing above.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::event::Event;
use crate::host::{ActionHandle, CallPool, ExecOutcome, PluginError};

/// One action call to carry out.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    /// Stable across every attempt: `{event id}:{rule}:{call index}`.
    pub idempotency_key: String,
    pub action: String,
    pub rule: String,
    pub attempt: u32,
    pub params: Value,
    pub event: Arc<Event>,
}

impl Job {
    pub fn new(event: Arc<Event>, rule: &str, index: usize, action: String, params: Value) -> Job {
        Job {
            id: crate::event::new_id(),
            idempotency_key: format!("{}:{}:{}", event.id, rule, index),
            action,
            rule: rule.to_string(),
            attempt: 1,
            params,
            event,
        }
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Done(Option<Value>),
    Retryable(String),
    Permanent(String),
}

/// Runs jobs on action plugins. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    actions: Arc<BTreeMap<String, Arc<ActionHandle>>>,
    pool: CallPool,
    /// Bounds the jobs in flight; submitting waits when it is used up.
    in_flight: Arc<Semaphore>,
}

impl Dispatcher {
    pub fn new(
        actions: BTreeMap<String, Arc<ActionHandle>>,
        pool: CallPool,
        max_in_flight: usize,
    ) -> Dispatcher {
        Dispatcher {
            actions: Arc::new(actions),
            pool,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Whether an action of that name is configured.
    pub fn has_action(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    /// Starts a job in the background, waiting for room if too many run.
    pub async fn submit(&self, job: Job, tasks: &mut JoinSet<()>) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let this = self.clone();
        tasks.spawn(async move {
            let _permit = permit;
            this.run(&job).await;
        });
    }

    /// Runs one attempt of a job and logs the outcome.
    pub async fn run(&self, job: &Job) -> Attempt {
        let Some(action) = self.actions.get(&job.action).cloned() else {
            let msg = format!("no action named {:?} in the config", job.action);
            tracing::error!(event_id = %job.event.id, rule = %job.rule, action = %job.action, job_id = %job.id, "{msg}");
            return Attempt::Permanent(msg);
        };
        let Ok(_slot) = action.permits.clone().acquire_owned().await else {
            return Attempt::Retryable("action is shutting down".into());
        };
        let json = match serde_json::to_vec(job) {
            Ok(j) => j,
            Err(e) => return Attempt::Permanent(format!("job cannot be encoded: {e}")),
        };
        let instance = action.instance.clone();
        let timeout = action.timeout;
        let started = std::time::Instant::now();
        let result = self
            .pool
            .call(timeout, move || instance.execute(&json, timeout))
            .await
            .and_then(|r| r);
        let attempt = match result {
            Ok(ExecOutcome::Done(v)) => Attempt::Done(v),
            Ok(ExecOutcome::Retryable(m)) => Attempt::Retryable(m),
            Ok(ExecOutcome::Permanent(m)) => Attempt::Permanent(m),
            // A plugin that times out, is busy or panics may succeed next time.
            Err(
                e @ (PluginError::Timeout(_) | PluginError::Busy(_) | PluginError::Panicked(_)),
            ) => Attempt::Retryable(e.to_string()),
            Err(e) => Attempt::Permanent(e.to_string()),
        };
        let ms = started.elapsed().as_millis() as u64;
        match &attempt {
            Attempt::Done(_) => tracing::info!(
                event_id = %job.event.id, rule = %job.rule, action = %job.action,
                job_id = %job.id, attempt = job.attempt, ms, "job done"
            ),
            Attempt::Retryable(m) => tracing::warn!(
                event_id = %job.event.id, rule = %job.rule, action = %job.action,
                job_id = %job.id, attempt = job.attempt, ms, "job failed (retryable): {m}"
            ),
            Attempt::Permanent(m) => tracing::error!(
                event_id = %job.event.id, rule = %job.rule, action = %job.action,
                job_id = %job.id, attempt = job.attempt, ms, "job failed (permanent): {m}"
            ),
        }
        attempt
    }
}
