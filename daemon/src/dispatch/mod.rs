//! Dispatch: carrying out the jobs rules decided on, through action plugins.
//!
//! Owns: the dispatcher task, which takes the jobs the router claimed with
//! their routing (handed over in memory, when there is room) and claims due
//! jobs from the store's outbox (retries, redrives, what did not fit; with
//! every `[delivery] concurrency` slot taken, again as soon as a quarter
//! are free), runs each on its action's plugin instance (within the action's
//! concurrency limit and deadline, on the plugin call pool), and records the
//! attempt: done; retryable → again after the next delay of the retry
//! schedule (with jitter); permanent, or out of attempts → dead letter.
//! Also owns each [`Action`]'s state beside its plugin instance: deadline,
//! concurrency, gate (`gate`: circuit breaker, 410 pause, a target's
//! `Retry-After`), rate (`rate`: a job over its action's budget goes back
//! to the store, due at the slot reserved for it; backlog — redriven and
//! replayed jobs — after live ones), and the rate its destination's
//! repeated refusals lowered (`adapt`: AIMD). Backlog also holds at most
//! half of an action's concurrency (`backlog_permits`). Jobs of an
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
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::event::{Announce, Notice};
use crate::host::{CallPool, Instance};
use crate::store::{now_ms, ClaimedJob, Pipeline};

pub mod adapt;
mod batch;
mod config;
mod execute;
pub mod gate;
mod job;
pub mod rate;
mod record;
mod retry;
mod trace;

pub use batch::BATCH_MAX;
pub use config::{ActionConfig, DeliveryConfig};
pub use retry::RetryPolicy;

use gate::Admit;

/// How long the dispatcher sleeps at most when it knows of no due job: it
/// also picks up jobs another process (the CLI's redrive) made due.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How soon the dispatcher looks for due jobs again when every slot was
/// taken, at the latest: it looks as soon as a quarter of the slots are
/// free again (see [`Dispatcher::room`]).
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
    /// Jobs in flight at once at most (`concurrency`), batched or not: the
    /// size of `permits`.
    pub concurrency: usize,
    /// The circuit breaker and the pause after 410 Gone.
    pub breaker: gate::Breaker,
    /// The parameter that orders this action's jobs, if any.
    pub order_by: Option<String>,
    /// Jobs per period at most, if limited.
    pub rate: Option<rate::Rate>,
    /// Its rate as its destination's refusals lowered it (`adapt.rs`).
    pub adapt: adapt::Adaptive,
    /// Backlog's share of `concurrency` (half, rounded up): redriven and
    /// replayed jobs take one of these before one of `permits`, so live
    /// jobs always find the rest.
    pub backlog_permits: Arc<Semaphore>,
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
            rate: config.rate.clone(),
            adapt: adapt::Adaptive::default(),
            backlog_permits: Arc::new(Semaphore::new(config.concurrency.div_ceil(2).max(1))),
        }
    }

    /// The rate in force at `now_ms`: as configured, or lower while the
    /// destination refuses for load.
    pub fn rate_at(&self, now_ms: i64) -> Option<rate::Rate> {
        self.adapt.rate_at(self.rate.as_ref(), now_ms)
    }

    /// The most jobs one batch call takes: `concurrency`, as each job of a
    /// batch is one in flight — or every ready one when the plugin says a
    /// batch is one operation at its destination (ABI 1.7).
    pub fn jobs_per_call(&self) -> usize {
        if self.instance.batch_is_one_operation() {
            usize::MAX
        } else {
            self.concurrency
        }
    }

    /// The slots of `permits` a call of `jobs` jobs holds: one per job, or
    /// one for the call when a batch is one operation.
    pub fn slots_for(&self, jobs: usize) -> u32 {
        if self.instance.batch_is_one_operation() {
            1
        } else {
            jobs.clamp(1, self.concurrency.max(1)) as u32
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
    /// Makes the plugin calls.
    execute: execute::Execute,
    store: Arc<dyn Pipeline>,
    policy: Arc<RetryPolicy>,
    /// Bounds the jobs in flight.
    in_flight: Arc<Semaphore>,
    /// Free slots of `in_flight` worth a claim when every slot was taken: a
    /// quarter of them. A backlog larger than the bound is claimed as soon
    /// as that many attempts have ended, in claims of that many jobs or
    /// more — not one claim per ended attempt, and not after a fixed pause
    /// (a 50 ms pause per 64 jobs held a broker action to ~1.6k jobs/s).
    room: u32,
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
    /// The rate limits' budgets (`rate.rs`).
    budgets: Arc<rate::Budgets>,
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
        let budgets = Arc::new(rate::Budgets::for_store(store.as_ref()));
        Dispatcher {
            actions: Arc::new(ArcSwap::from_pointee(actions)),
            execute: execute::Execute {
                pool,
                metrics: metrics.clone(),
            },
            store,
            policy: Arc::new(policy),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            room: u32::try_from(max_in_flight / 4).unwrap_or(u32::MAX).max(1),
            wake: Arc::new(Notify::new()),
            handoff: Arc::new(std::sync::Mutex::new(Some(handoff_rx))),
            handoff_tx,
            batches: Arc::default(),
            metrics,
            announce: None,
            stepped_to: Arc::default(),
            budgets,
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

    /// Every action's rate as it stands: lowered, budget left, drain time.
    pub async fn live_rates(&self) -> BTreeMap<String, rate::LiveRate> {
        rate::live_rates(
            &self.actions(),
            &self.budgets,
            self.store.as_ref(),
            now_ms(),
        )
        .await
    }

    /// Where the router hands over jobs it claimed with their routing.
    pub fn handoff(&self) -> mpsc::Sender<ClaimedJob> {
        self.handoff_tx.clone()
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
            // Every slot was taken at the last look: look again when there
            // is room.
            let mut full = false;
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
                    full = free == 0;
                    if full {
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
                    // Only this task takes slots, so the room seen here is
                    // there at the claim (the slots go back at once).
                    _ = self.in_flight.acquire_many(self.room), if full => { full = false; None }
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
    /// wait, its rate has no room for the job now, or another job with the
    /// same ordering key is running.
    async fn start(&self, job: ClaimedJob, tasks: &mut JoinSet<()>) {
        if let Some(action) = self.actions().get(&job.action).cloned() {
            let held = match action.breaker.admit(now_ms()) {
                Admit::Run => None,
                Admit::Hold(until) => {
                    tracing::info!(
                        event_id = %job.event_id, action = %job.action, job_id = %job.id,
                        "job waits: its action is paused"
                    );
                    Some(until)
                }
                // Under an open breaker or a throttle of thousands, a line
                // per job would flood the log: the change was said once.
                Admit::Wait(until) => {
                    tracing::debug!(
                        event_id = %job.event_id, action = %job.action, job_id = %job.id,
                        "job waits for its action's gate"
                    );
                    Some(until)
                }
            };
            if let Some(until) = held {
                if let Err(e) = self.store.release_job(job.id.clone(), until).await {
                    tracing::error!(job_id = %job.id, "cannot put a waiting job back: {e}");
                }
                return;
            }
            if let Some(rate) = action.rate_at(now_ms()) {
                if !self.within_rate(&action.name, &rate, &job).await {
                    return;
                }
            }
        }
        self.spawn_attempt(job, tasks).await
    }

    /// Whether `job` may go now by its action's rate: claimed at the slot
    /// reserved for it, or given one now. Else it goes back to the store,
    /// due at the slot reserved for it (not an attempt, not a failure).
    /// Backlog (`rate.rs`) takes a slot only when the budget is full, and
    /// else waits its turn in its lane. A budget that cannot be asked (the
    /// shared store unreachable) lets the job wait a second rather than go
    /// unmetered.
    async fn within_rate(&self, action: &str, rate: &rate::Rate, job: &ClaimedJob) -> bool {
        let now_us = now_ms() * 1_000;
        if job.rate_slot.is_some_and(|slot| slot * 1_000 <= now_us) {
            return true;
        }
        let key = rate::key_of(rate, job);
        let store = self.store.as_ref();
        let slot = if job.is_backlog() {
            match self
                .budgets
                .take_if_full(store, action, &key, rate, now_us)
                .await
            {
                Ok(true) => return true,
                Ok(false) => self
                    .budgets
                    .reserve_one(store, action, &rate::lane_of(&key), rate, now_us)
                    .await
                    .map(|slot| (slot, false)),
                Err(e) => Err(e),
            }
        } else {
            self.budgets
                .reserve_one(store, action, &key, rate, now_us)
                .await
                .map(|slot| (slot, true))
        };
        let (slot_ms, reserved) = match slot {
            Ok((slot_us, true)) if slot_us <= now_us => return true,
            // Rounded up: never due before its slot.
            Ok((slot_us, reserved)) => ((slot_us + 999) / 1_000, reserved),
            Err(e) => {
                tracing::warn!(action, "cannot ask the rate budget: {e}");
                (now_ms() + 1_000, false)
            }
        };
        self.metrics
            .action_deferred
            .get_or_create(&crate::metrics::ActionLabel {
                action: action.to_string(),
            })
            .inc();
        tracing::debug!(
            event_id = %job.event_id, action, job_id = %job.id, slot_ms,
            "job waits for its action's rate"
        );
        // A slot of the live budget is the job's: claimed at it, it goes.
        // A turn in the lane (or none) only lets it ask again then.
        let put_back = if reserved {
            self.store.defer_job(job.id.clone(), slot_ms).await
        } else {
            self.store.release_job(job.id.clone(), slot_ms).await
        };
        if let Err(e) = put_back {
            tracing::error!(job_id = %job.id, "cannot put a job back for its rate: {e}");
        }
        // The dispatcher looks again, and so sleeps until the first job it
        // finds due (this one's slot at the latest), not its idle poll: a
        // job claimed late would go out bunched with the next.
        self.wake.notify_one();
        false
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
        let share = self
            .actions()
            .get(&job.action)
            .filter(|_| job.is_backlog())
            .map(|a| a.backlog_permits.clone());
        let this = self.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let _share = match share {
                Some(share) => share.acquire_owned().await.ok(),
                None => None,
            };
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
        let action = self.actions().get(&job.action).cloned();
        let attempt = self.execute.one(action, &job).await;
        let finished = now_ms();
        self.record(job, attempt, started, finished).await
    }
}
