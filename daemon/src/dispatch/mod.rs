//! Dispatch: carrying out the jobs rules decided on, through action plugins.
//!
//! Owns: the dispatcher task, which takes the jobs the router claimed with
//! their routing (handed over in memory, when there is room) and claims due
//! jobs from the store's outbox (retries, redrives, what did not fit),
//! runs each on its action's plugin instance (within the action's
//! concurrency limit and deadline, on the plugin call pool), and records the
//! attempt: done; retryable → again after the next delay of the retry
//! schedule (with jitter); permanent, or out of attempts → dead letter.
//! Also owns each [`Action`]'s state beside its plugin instance: deadline,
//! concurrency, gate (`gate`: circuit breaker, 410 pause). Jobs of an
//! ordered action come from the store one of a key at a time (the key
//! computed at routing, carried on the job); when one ends, the next of
//! its key is looked for at once.
//! Also owns `[delivery]` and the dispatch keys of `[actions.NAME]`
//! (`config.rs`), and a job as the plugin ABI reads it (`job.rs`). Calls: `host` (action instances, the call pool), `store`
//! (the pipeline). Imports no later stage.
//!
//! An action whose plugin takes several jobs in one call (ABI 1.3
//! `execute_batch`, e.g. the file action: one write and one fsync for many
//! lines) gets them so: while one call of it runs, the jobs that become
//! ready wait in its queue, and the next call takes them all (at most
//! [`BATCH_MAX`]) on one pool thread — no timer, so one job alone goes at
//! once. Jobs with an ordering key still go one by one.
//!
//! Actions run at least once: a job is claimed, then run, then recorded. A
//! crash between the run and the record runs it again after the restart;
//! the job's idempotency key, the same on every attempt, lets the action's
//! target recognise the repeat.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::event::{Announce, Notice};
use crate::host::{CallPool, ExecOutcome, Instance, PluginError};
use crate::metrics::recent::{Kind, Latency};
use crate::store::{now_ms, ClaimedJob, Finish, FinishedAttempt, Pipeline};

mod batch;
mod config;
pub mod gate;
mod job;
mod retry;

pub use batch::BATCH_MAX;
pub use config::{ActionConfig, DeliveryConfig};
pub use retry::RetryPolicy;

use job::plugin_job;

use gate::{Admit, Transition};

/// How long the dispatcher sleeps at most when it knows of no due job: it
/// also picks up jobs another process (the CLI's redrive) made due.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How soon the dispatcher looks for due jobs again when every slot was taken.
const FULL_POLL: Duration = Duration::from_millis(50);
/// The least wait before looking again after a look that claimed nothing.
const BUSY_FLOOR_MS: i64 = 20;

/// A configured action as the dispatcher runs it: its plugin instance, its
/// deadline and concurrency, its gate (circuit breaker and 410 pause) and
/// its ordering parameter.
pub struct Action {
    pub name: String,
    pub instance: Arc<Instance>,
    pub timeout: Duration,
    pub permits: Arc<Semaphore>,
    /// Calls at once at most (`concurrency`), the size of `permits`.
    pub concurrency: usize,
    /// The circuit breaker and the pause after 410 Gone.
    pub breaker: gate::Breaker,
    /// The parameter that orders this action's jobs, if any.
    pub order_by: Option<String>,
}

/// An action's deadline when the config sets none (Standard Webhooks
/// suggests 15 to 30 s for a delivery).
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(15);

impl Action {
    pub fn new(name: &str, config: &ActionConfig, instance: Arc<Instance>) -> Action {
        Action {
            name: name.to_string(),
            instance,
            timeout: config.timeout.unwrap_or(DEFAULT_ACTION_TIMEOUT),
            permits: Arc::new(Semaphore::new(config.concurrency)),
            concurrency: config.concurrency,
            breaker: gate::Breaker::new(config.breaker_failures, config.breaker_cooldown),
            order_by: config.order_by.clone(),
        }
    }
}

/// The configured actions by name.
pub type Actions = BTreeMap<String, Arc<Action>>;

/// The configured actions, around the plugin instances the host made for
/// them (an instance without its config section is left out).
pub fn actions(
    configs: &BTreeMap<String, ActionConfig>,
    instances: BTreeMap<String, Arc<Instance>>,
) -> Actions {
    instances
        .into_iter()
        .filter_map(|(name, instance)| {
            let section = configs.get(&name)?;
            let action = Action::new(&name, section, instance);
            Some((name, Arc::new(action)))
        })
        .collect()
}

/// Runs jobs on action plugins. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    /// The configured actions; a reload swaps the whole map.
    actions: Arc<ArcSwap<Actions>>,
    pool: CallPool,
    store: Arc<dyn Pipeline>,
    policy: Arc<RetryPolicy>,
    /// Bounds the jobs in flight.
    in_flight: Arc<Semaphore>,
    /// Woken when new jobs are stored.
    pub wake: Arc<Notify>,
    /// Jobs claimed by the router with their routing, handed over in memory.
    handoff: Arc<std::sync::Mutex<Option<mpsc::Receiver<ClaimedJob>>>>,
    handoff_tx: mpsc::Sender<ClaimedJob>,
    /// Per action that takes batches: the jobs waiting for its next call.
    batches: Arc<std::sync::Mutex<HashMap<String, batch::BatchQueue>>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Where dead letters and gate changes are announced, if anywhere.
    announce: Option<Announce>,
    /// How far past now the next claim reaches: a due time found beyond
    /// any retry's delay (see [`RetryPolicy::beyond_any_retry`]).
    stepped_to: Arc<AtomicI64>,
}

impl Dispatcher {
    pub fn new(
        actions: Actions,
        pool: CallPool,
        store: Arc<dyn Pipeline>,
        policy: RetryPolicy,
        max_in_flight: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Dispatcher {
        let (handoff_tx, handoff_rx) = mpsc::channel(max_in_flight.max(1));
        Dispatcher {
            actions: Arc::new(ArcSwap::from_pointee(actions)),
            pool,
            store,
            policy: Arc::new(policy),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            wake: Arc::new(Notify::new()),
            handoff: Arc::new(std::sync::Mutex::new(Some(handoff_rx))),
            handoff_tx,
            batches: Arc::default(),
            metrics,
            announce: None,
            stepped_to: Arc::default(),
        }
    }

    /// Announces dead letters (`switchyard.action.dead_letter`) and gate
    /// changes (`switchyard.action.breaker_open`, `.disabled`) to `announce`
    /// — except those of jobs of Switchyard's own events.
    pub fn with_announce(mut self, announce: Announce) -> Dispatcher {
        self.announce = Some(announce);
        self
    }

    /// Announces `notice` about `job`, unless there is nowhere to, or the
    /// job's event is itself one of Switchyard's own.
    fn announce(&self, job: &ClaimedJob, notice: impl FnOnce() -> Notice) {
        if let Some(announce) = &self.announce {
            if !crate::event::is_own(job.event.get()) {
                announce(notice());
            }
        }
    }

    /// Takes on the gates another process changed (`switchyard actions enable`).
    async fn sync_gates(&self) {
        if let Ok(states) = self.store.action_states().await {
            for st in &states {
                if let Some(a) = self.actions().get(&st.action) {
                    a.breaker.sync(st);
                }
            }
        }
    }

    /// The actions now configured.
    pub fn actions(&self) -> Arc<Actions> {
        self.actions.load_full()
    }

    /// Makes a new set of actions live (a reload). Attempts in flight finish
    /// on the instances they started with.
    pub fn set_actions(&self, actions: Actions) {
        self.actions.store(Arc::new(actions));
    }

    /// Where the router hands over jobs it claimed with their routing.
    pub fn handoff(&self) -> mpsc::Sender<ClaimedJob> {
        self.handoff_tx.clone()
    }

    /// Whether an action of that name is configured, and if so its
    /// `order_by` parameter.
    pub fn order_by(&self, name: &str) -> Option<Option<String>> {
        self.actions().get(name).map(|a| a.order_by.clone())
    }

    /// Starts the dispatcher task: hands back jobs a previous process left
    /// running, then claims and runs due jobs until `stop` turns true, and
    /// waits for the attempts in flight.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let taken = self
            .handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // Only one dispatcher task may take the hand-over queue.
        let mut handoff = taken.unwrap_or_else(|| mpsc::channel(1).1);
        tokio::spawn(async move {
            match self.store.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "resuming jobs left running by the last run"),
                Err(e) => tracing::error!("cannot resume jobs: {e}"),
            }
            let mut tasks = JoinSet::new();
            // The store is asked for due jobs only when it may hold some the
            // hand-over queue did not bring: at start, when woken (jobs
            // stored unclaimed, a retry recorded), when the next stored job
            // falls due, and once per `IDLE_POLL` (another process's
            // redrive). A job handed over costs no store round trip here.
            let mut claim = true;
            let mut next_look = Instant::now() + IDLE_POLL;
            loop {
                if *stop.borrow() {
                    break;
                }
                while tasks.try_join_next().is_some() {}
                while let Ok(job) = handoff.try_recv() {
                    self.start(job, &mut tasks).await;
                }
                if claim || Instant::now() >= next_look {
                    claim = false;
                    self.sync_gates().await;
                    let free = self.in_flight.available_permits().min(256);
                    if free == 0 {
                        // No room: look again once some attempts have ended.
                        claim = true;
                        next_look = Instant::now() + FULL_POLL;
                    } else {
                        let now = now_ms();
                        let horizon =
                            now.saturating_add(self.stepped_to.swap(0, Ordering::Relaxed));
                        let claimed = match self.store.claim_jobs(now.max(horizon), free).await {
                            Ok(jobs) => jobs,
                            Err(e) => {
                                tracing::error!("cannot claim jobs: {e}");
                                Vec::new()
                            }
                        };
                        let full_batch = claimed.len() == free;
                        let claimed_none = claimed.is_empty();
                        for job in claimed {
                            self.start(job, &mut tasks).await;
                        }
                        if full_batch {
                            claim = true;
                            continue;
                        }
                        // Due jobs that were not claimed (another process
                        // took them first) are not looked for again at once.
                        let floor = if claimed_none { BUSY_FLOOR_MS } else { 0 };
                        let wait = match self.store.next_due().await {
                            Ok(Some(at)) if self.policy.beyond_any_retry(at, now) => {
                                // Run it now: nothing is scheduled that far.
                                self.stepped_to.store(at - now, Ordering::Relaxed);
                                claim = true;
                                0
                            }
                            Ok(Some(at)) => (at - now).clamp(floor, IDLE_POLL.as_millis() as i64),
                            _ => IDLE_POLL.as_millis() as i64,
                        };
                        next_look = Instant::now() + Duration::from_millis(wait as u64);
                    }
                }
                let handed = tokio::select! {
                    _ = self.wake.notified() => { claim = true; None }
                    _ = tokio::time::sleep_until(next_look.into()) => None,
                    _ = stop.wait_for(|s| *s) => None,
                    Some(job) = handoff.recv() => Some(job),
                };
                if let Some(job) = handed {
                    self.start(job, &mut tasks).await;
                }
            }
            // Jobs still in the hand-over queue stay claimed in the store;
            // the next start hands them back.
            while tasks.join_next().await.is_some() {}
        })
    }

    /// Starts an attempt once a slot is free, unless the action's gate says
    /// wait, or another job with the same ordering key is running.
    async fn start(&self, job: ClaimedJob, tasks: &mut JoinSet<()>) {
        if let Some(action) = self.actions().get(&job.action).cloned() {
            if let Admit::Wait(until) = action.breaker.admit(now_ms()) {
                tracing::info!(
                    event_id = event_id(&job), action = %job.action, job_id = %job.id,
                    "job waits: its action is paused"
                );
                if let Err(e) = self.store.release_job(job.id.clone(), until).await {
                    tracing::error!(job_id = %job.id, "cannot put a paused job back: {e}");
                }
                return;
            }
        }
        self.spawn_attempt(job, tasks).await
    }

    /// Runs an attempt on a task of its own. A job with an order key was
    /// claimed as its key's only running job (the store holds the others
    /// back): once it ends, the next of its key may be claimed.
    async fn spawn_attempt(&self, job: ClaimedJob, tasks: &mut JoinSet<()>) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let batching = match self.actions().get(&job.action) {
            Some(a) if job.order_key.is_none() && a.instance.batches() => Some(a.concurrency),
            _ => None,
        };
        if let Some(concurrency) = batching {
            let action = job.action.clone();
            let next = self.enqueue_batch(job, permit, concurrency);
            if !matches!(next, batch::Next::Nothing) {
                let this = self.clone();
                tasks.spawn(async move { this.serve(action, next).await });
            }
            return;
        }
        let this = self.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let ordered = job.order_key.is_some();
            this.attempt_and_record(job).await;
            if ordered {
                // The store held the key's next job back until this one
                // ended: look for it now.
                this.wake.notify_one();
            }
        });
    }

    async fn attempt_and_record(&self, job: ClaimedJob) {
        let started = now_ms();
        let attempt = self.attempt(&job).await;
        let finished = now_ms();
        self.record(job, attempt, started, finished).await
    }

    /// Records an attempt's outcome: the action's gate, metrics, and the
    /// job's new state in the store.
    async fn record(&self, job: ClaimedJob, attempt: ExecOutcome, started: i64, finished: i64) {
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
        // First attempts of a first routing (a replay's keys say so): from
        // the event's id, a ULID, the time it was taken in.
        let first_routing = !job.idempotency_key.contains(":replay");
        if job.attempt == 1 && first_routing && matches!(finish, Finish::Done { .. }) {
            if let Ok(id) = ulid::Ulid::from_string(&job.event_id) {
                let took = (finished - id.timestamp_ms() as i64).max(0) as f64 / 1e3;
                recent.latency(finished, Latency::EndToEnd, took);
            }
        }
        if let Finish::Dead { message } = &finish {
            tracing::error!(
                event_id = %event_id(&job), rule = %job.rule, action = %job.action, job_id = %job.id,
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
            Transition::Closed => None,
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

    /// Runs one attempt of a job and logs the outcome.
    pub async fn attempt(&self, job: &ClaimedJob) -> ExecOutcome {
        let event_id = event_id(job);
        let Some(action) = self.actions().get(&job.action).cloned() else {
            let msg = format!("no action named {:?} in the config", job.action);
            tracing::error!(%event_id, rule = %job.rule, action = %job.action, job_id = %job.id, "{msg}");
            return ExecOutcome::Permanent(msg);
        };
        let Ok(_slot) = action.permits.clone().acquire_owned().await else {
            return ExecOutcome::Retryable("action is shutting down".into());
        };
        let json = serde_json::to_vec(&plugin_job(job)).unwrap_or_default();
        let instance = action.instance.clone();
        let timeout = action.timeout;
        let started = std::time::Instant::now();
        let result = self
            .pool
            .call(timeout, move || instance.execute(&json, timeout))
            .await
            .and_then(|r| r);
        let attempt = result.unwrap_or_else(failed_call);
        self.metrics.plugin_call(
            &action.instance.plugin().name,
            "execute",
            outcome_label(&attempt),
        );
        self.logged(job, attempt, started.elapsed().as_millis() as u64)
    }

    /// Logs an attempt's outcome.
    fn logged(&self, job: &ClaimedJob, attempt: ExecOutcome, ms: u64) -> ExecOutcome {
        let event_id = event_id(job);
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
}

/// An outcome as the metrics name it.
fn outcome_label(attempt: &ExecOutcome) -> &'static str {
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

fn event_id(job: &ClaimedJob) -> &str {
    &job.event_id
}
