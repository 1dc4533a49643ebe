//! The action's side: the job it is handed, the outcome it gives (one, or
//! one per job of a batch), and the [`Action`] trait.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Host;

/// A job handed to an action plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Stable across retries: event id + rule + call index.
    pub idempotency_key: String,
    pub action: String,
    pub rule: String,
    pub attempt: u32,
    pub params: Value,
    pub event: Value,
    /// The attempt's trace context, when the host traces (an added key: a
    /// plugin that does not know it ignores it): an action that makes a
    /// request sends it on (`traceparent`), one that logs can log with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// A W3C trace context: the attempt's span as the next hop's parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// What an action made of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; an optional result object is recorded with the job.
    Done(Option<Value>),
    /// Failed; worth trying again later.
    Retryable(String),
    /// Failed; worth trying again, not before this long (a `Retry-After`).
    /// The target refused for load (HTTP 429, or 503 with `Retry-After`):
    /// the host slows the whole action. Zero when it refused without a time.
    RetryAfter(String, Duration),
    /// Failed; will never succeed as it is.
    Permanent(String),
    /// Failed for good, and the target says it is gone (HTTP 410): the host
    /// pauses this action until someone enables it again.
    Gone(String),
}

/// The JSON an action's failure may carry beside its message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailureDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable: bool,
}

/// One job's outcome in `execute_batch`'s answer (ABI 1.3):
/// `{"status": "done" | "retryable" | "permanent", "message", "result",
/// "retry_after_ms", "disable"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub status: BatchStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(flatten)]
    pub detail: FailureDetail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Done,
    Retryable,
    Permanent,
}

/// `execute_batch`'s answer: one outcome per job, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchOutput {
    pub outcomes: Vec<BatchOutcome>,
}

impl From<Outcome> for BatchOutcome {
    fn from(outcome: Outcome) -> BatchOutcome {
        let (status, message, result, detail) = match outcome {
            Outcome::Done(result) => (
                BatchStatus::Done,
                String::new(),
                result,
                FailureDetail::default(),
            ),
            Outcome::Retryable(m) => (BatchStatus::Retryable, m, None, FailureDetail::default()),
            Outcome::RetryAfter(m, after) => (
                BatchStatus::Retryable,
                m,
                None,
                FailureDetail {
                    retry_after_ms: Some(after.as_millis().min(u64::MAX as u128) as u64),
                    disable: false,
                },
            ),
            Outcome::Permanent(m) => (BatchStatus::Permanent, m, None, FailureDetail::default()),
            Outcome::Gone(m) => (
                BatchStatus::Permanent,
                m,
                None,
                FailureDetail {
                    retry_after_ms: None,
                    disable: true,
                },
            ),
        };
        BatchOutcome {
            status,
            message,
            result,
            detail,
        }
    }
}

impl From<BatchOutcome> for Outcome {
    fn from(b: BatchOutcome) -> Outcome {
        match (b.status, b.detail.retry_after_ms, b.detail.disable) {
            (BatchStatus::Done, ..) => Outcome::Done(b.result),
            (BatchStatus::Retryable, Some(ms), _) => {
                Outcome::RetryAfter(b.message, Duration::from_millis(ms))
            }
            (BatchStatus::Retryable, None, _) => Outcome::Retryable(b.message),
            (BatchStatus::Permanent, _, true) => Outcome::Gone(b.message),
            (BatchStatus::Permanent, _, false) => Outcome::Permanent(b.message),
        }
    }
}

/// An action plugin: carries out jobs decided by rules.
pub trait Action: Send + Sync + Sized + 'static {
    fn create(host: Host, config: Value) -> Result<Self, String>;

    /// Carry out a job within `timeout`. The same job may arrive again after
    /// a retryable failure or a crash: use `job.idempotency_key` to dedupe.
    fn execute(&self, job: &Job, timeout: Duration) -> Outcome;

    /// Whether the host should hand this action every ready job in one
    /// [`execute_batch`](Action::execute_batch) call (ABI 1.3) rather than
    /// one `execute` call per job. Worth it when many jobs at once cost
    /// less than one by one (one write and one sync for many lines).
    const BATCHES: bool = false;

    /// Whether a batch is one operation at the destination (ABI 1.7): the
    /// file action writes a batch's lines with one write and one sync, so
    /// the host counts its call as one against the action's `concurrency`
    /// and hands it every ready job. Left false (the http action sends a
    /// batch's requests at once), each job counts as one in flight and a
    /// call takes at most `concurrency` jobs.
    const BATCH_IS_ONE_OPERATION: bool = false;

    /// Carry out several jobs within `timeout` in all, one outcome per job,
    /// in order. Called only when [`BATCHES`](Action::BATCHES) is true.
    fn execute_batch(&self, jobs: &[Job], timeout: Duration) -> Vec<Outcome> {
        jobs.iter().map(|job| self.execute(job, timeout)).collect()
    }
}
