//! What operators read of the store: events and their detail, jobs with
//! their attempts, the request as kept, what waits, the instances sharing
//! it, and the actions' gates — the values [`Operations`](super::Operations)
//! answers with, shown by the admin API, the dashboard and the CLI.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub received_at_ms: i64,
    pub state: String,
    pub jobs: u64,
    pub jobs_dead: u64,
    pub duplicates: u64,
    /// The event as stored, when the filter asked for it
    /// ([`EventFilter::envelopes`](super::EventFilter::envelopes)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub n: u32,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub outcome: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub event_id: String,
    pub rule: String,
    pub call_index: u32,
    pub action: String,
    pub params: Value,
    pub idempotency_key: String,
    pub state: String,
    pub attempts: u32,
    pub next_at_ms: i64,
    pub last_error: Option<String>,
    pub attempt_log: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub id: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    pub envelope: Value,
    pub state: String,
    pub routings: u32,
    pub routed_at_ms: Option<i64>,
    pub duplicates: u64,
    pub rule_runs: Value,
    /// The rule set version of the last routing (versions count from 1 at
    /// each start of the daemon).
    pub rules_version: Option<i64>,
    /// Why it was held for an operator (a strict source's drifted event),
    /// if it was; it stays once released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    pub request: RequestRecord,
    pub jobs: Vec<JobRecord>,
}

/// Which dead letters: those of an action, whose last error contains a
/// text (each optional: all when neither is given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What waits in the store, for the dashboard's overview.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// When the oldest job still pending (due or waiting for a retry) was made.
    pub oldest_pending_job_ms: Option<i64>,
    /// Jobs claimed and not yet recorded: in an attempt, or about to be.
    pub running_jobs: u64,
    pub dead_letters: u64,
}

/// An instance sharing the store, as `switchyard status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub host: String,
    pub version: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// It beat recently enough that its work is still its own.
    pub alive: bool,
    /// It holds the leader's lease (it runs retention).
    pub leader: bool,
    /// Jobs leased to it and running.
    pub running_jobs: u64,
    /// The instance answering.
    #[serde(rename = "self")]
    pub this: bool,
}

/// An action's gate as last stored: what `switchyard actions list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionState {
    pub action: String,
    /// `closed` (running), `open` (paused by the breaker until `until_ms`),
    /// `half-open` (probing), or `disabled` (the target said 410 Gone).
    pub state: String,
    pub until_ms: Option<i64>,
    /// Consecutive retryable failures.
    pub failures: u32,
    pub reason: Option<String>,
    pub updated_at_ms: i64,
}

impl ActionState {
    /// The state of an action as of `now_ms`, from what was last stored (or
    /// nothing: closed). An open breaker whose cool-down has passed is probing.
    pub fn shown(state: Option<&ActionState>, now_ms: i64) -> &str {
        match state.map(|s| (s.state.as_str(), s.until_ms)) {
            None => "closed",
            Some(("open", Some(until))) if until <= now_ms => "half-open",
            // The target's wait is over: nothing holds the action.
            Some(("throttled", Some(until))) if until <= now_ms => "closed",
            Some((s, _)) => s,
        }
    }
}
