//! What an attempt's end changes: its action's gate (the breaker, a 410's
//! pause) saved and announced, the metrics, a dead letter announced, and
//! the job's new state (done, a retry at its time, dead) recorded in the
//! store — which wakes the dispatcher when a retry is due later.

use serde_json::Value;

use super::adapt::Change;
use super::execute::outcome_label;
use super::gate::Transition;
use super::Dispatcher;
use crate::event::Notice;
use crate::host::ExecOutcome;
use crate::metrics::recent::{Kind, Latency};
use crate::store::{ClaimedJob, Finish, FinishedAttempt};

impl Dispatcher {
    /// Records an attempt's outcome: the action's gate, metrics, and the
    /// job's new state in the store.
    pub(super) async fn record(
        &self,
        job: ClaimedJob,
        attempt: ExecOutcome,
        started: i64,
        finished: i64,
    ) {
        self.update_gate(&job, &attempt, finished).await;
        let finish = self.policy.decide(job.series_attempt, &attempt, finished);
        let action_label = crate::metrics::ActionLabel {
            action: job.action.clone(),
        };
        let outcome = outcome_label(&attempt);
        self.metrics
            .action_attempts
            .get_or_create(&crate::metrics::ActionLabels {
                action: job.action.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.metrics
            .action_seconds
            .get_or_create(&action_label)
            .observe((finished - started).max(0) as f64 / 1e3);
        if matches!(finish, Finish::Dead { .. }) {
            self.metrics.dead_letters.get_or_create(&action_label).inc();
        }
        let recent = &self.metrics.recent;
        recent.count(finished, Kind::Attempt, &job.action, outcome, 1);
        // First attempts of a first routing (not a replay's): from the
        // event's id, a ULID, the time it was taken in.
        if job.attempt == 1 && !job.is_backlog() && matches!(finish, Finish::Done { .. }) {
            if let Ok(id) = ulid::Ulid::from_string(&job.event_id) {
                let took = (finished - id.timestamp_ms() as i64).max(0) as f64 / 1e3;
                recent.latency(finished, Latency::EndToEnd, took);
            }
        }
        if let Finish::Dead { message } = &finish {
            tracing::error!(
                event_id = %&job.event_id, rule = %job.rule, action = %job.action, job_id = %job.id,
                "job moved to dead letters: {message}"
            );
            self.announce(&job, || {
                let event: Value = serde_json::from_str(job.event.get()).unwrap_or_default();
                Notice {
                    kind: "switchyard.action.dead_letter",
                    subject: job.action.clone(),
                    data: serde_json::json!({
                        "action": job.action,
                        "job_id": job.id,
                        "rule": job.rule,
                        "attempts": job.attempt,
                        "error": message,
                        "event_id": job.event_id,
                        "event_type": event["type"],
                        "event_source": event["source"],
                    }),
                    dedup_key: format!("dead:{}:{}", job.id, job.attempt),
                }
            });
        }
        let record = FinishedAttempt {
            job_id: job.id.clone(),
            attempt: job.attempt,
            started_at_ms: started,
            finished_at_ms: finished,
            finish,
        };
        let retry = matches!(record.finish, Finish::Retry { .. });
        if let Err(e) = self.store.finish_attempt(record).await {
            // The job stays claimed; the next start hands it back and it runs again.
            tracing::error!(job_id = %job.id, "cannot record the attempt: {e}");
        } else if retry {
            // The dispatcher learns when the retry falls due.
            self.wake.notify_one();
        }
    }

    /// Feeds an attempt's outcome to its action's breaker; logs and stores
    /// a change.
    async fn update_gate(&self, job: &ClaimedJob, attempt: &ExecOutcome, now: i64) {
        let action = job.action.as_str();
        let Some(handle) = self.actions().get(action).cloned() else {
            return;
        };
        let refused = matches!(attempt, ExecOutcome::RetryAfter(..));
        match handle.adapt.record(refused, handle.rate.as_ref(), now) {
            None => {}
            Some(Change::Lowered { per_s, ceiling }) => {
                tracing::warn!(
                    action,
                    rate_per_s = format!("{per_s:.2}"),
                    ceiling_per_s = format!("{ceiling:.2}"),
                    "rate lowered: the target refuses for load; it comes back as the target accepts"
                );
                let label = crate::metrics::ActionLabel {
                    action: action.to_string(),
                };
                self.metrics.action_rate_lowered.get_or_create(&label).inc();
                // Slots reserved at the old rate are given up: each waiting
                // job asks the lowered one when it falls due.
                self.budgets.forget(action);
                match self.store.forget_rate_slots(action.to_string()).await {
                    Ok(0) => {}
                    Ok(jobs) => {
                        tracing::info!(action, jobs, "waiting jobs re-paced at the lowered rate")
                    }
                    Err(e) => tracing::error!(action, "cannot re-pace the waiting jobs: {e}"),
                }
            }
            Some(Change::Recovered) => {
                tracing::info!(
                    action,
                    "rate recovered: the target accepts the whole rate again"
                )
            }
        }
        let Some(change) = handle.breaker.record(attempt, now) else {
            return;
        };
        match &change {
            Transition::Opened { until_ms, failures } => tracing::warn!(
                action,
                failures,
                pause_ms = until_ms - now,
                "circuit open: the action is paused after repeated failures"
            ),
            Transition::Closed => tracing::info!(action, "circuit closed: the action runs again"),
            Transition::Throttled { until_ms } => tracing::warn!(
                action,
                wait_ms = until_ms - now,
                "throttled: the target asked to wait (Retry-After); every job of the action waits"
            ),
            Transition::Disabled(reason) => tracing::error!(
                action,
                "action disabled (the target is gone): {reason}; `switchyard actions enable {action}` resumes it"
            ),
        }
        let notice = match &change {
            Transition::Opened { until_ms, failures } => Some((
                "switchyard.action.breaker_open",
                serde_json::json!({"action": action, "failures": failures, "until_ms": until_ms}),
            )),
            Transition::Disabled(reason) => Some((
                "switchyard.action.disabled",
                serde_json::json!({"action": action, "reason": reason}),
            )),
            Transition::Closed | Transition::Throttled { .. } => None,
        };
        if let Some((kind, data)) = notice {
            self.announce(job, || Notice {
                kind,
                subject: action.to_string(),
                data,
                dedup_key: format!("{kind}:{action}:{now}"),
            });
        }
        let state = handle.breaker.snapshot(action, now);
        let paused = match state.state.as_str() {
            "paused" => 3,
            "throttled" => 4,
            "disabled" => 2,
            "open" | "half-open" => 1,
            _ => 0,
        };
        self.metrics
            .action_paused
            .get_or_create(&crate::metrics::ActionLabel {
                action: action.to_string(),
            })
            .set(paused);
        if let Err(e) = self.store.save_action_state(state).await {
            tracing::error!(action, "cannot store the action's state: {e}");
        }
    }
}
