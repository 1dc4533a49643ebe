//! The store: where every accepted webhook, its events, their routing and
//! the jobs (outbox) they lead to are kept, durably.
//!
//! Owns: the store's interface in two parts — [`Pipeline`] (what ingress,
//! the router and the dispatcher need) and [`Operations`] (what operators
//! read and do) — and the capabilities only some backends have, which a
//! caller asks for ([`Shared`], [`CommitTiming`]); the two backends, the
//! embedded [`SqliteStore`] (`sqlite/`, with the journal its ingests are
//! made durable by, `sqlite/journal/`) and [`PgStore`] for several
//! instances (`postgres/`); what both SQL backends run alike
//! (`sql.rs`: the operators' side, retention's windows, the gates);
//! retention's bounded steps ([`Sweep`], `sweep.rs`); the clock its times
//! are read from, which never goes back within the process (`clock.rs`);
//! what operators read (`records.rs`), and `[store]` (`config.rs`). Imports only `event` (it stores
//! `event::Event`s as JSON) and config's value formats: no stage.
//!
//! ## A new backend
//! The contract suite (`tests/it/contract/`) states every behaviour of
//! [`Pipeline`] and [`Operations`] once and runs it against each backend:
//! a new one adds itself there and implements until it passes. A SQL
//! backend implements the pipeline's statements by the names the others
//! use (`sqlite/sql.rs`, `postgres/sql.rs`, side by side) and gets
//! [`Operations`] by giving `sql::SqlBackend`'s few primitives. Its schema
//! comes in numbered migrations (`sqlite/migrations/`,
//! `postgres/migrations/`), each applied once; a store written by a newer
//! release is refused. The plan tests (`tests/it/plans/`) run one workload
//! and check that no statement reads a whole growing table.
//!
//! ## What is the record of what
//! **Embedded** (`data_dir/switchyard.db` and `data_dir/journal/`). The
//! journal is the record of every accepted request: its headers and body,
//! its events' envelopes (all three only there), and what became of each
//! event (new, duplicate, stale, handshake), one CRC-framed record, written
//! with the others of its group and synced (`fdatasync`) before any of them
//! is answered 2xx. SQLite is the record of everything that follows: the
//! events' rows (their state, and where their envelope is in the journal,
//! read through `journal_envelope`), dedup keys and object versions,
//! routings, jobs, attempts, gates. Its rows of an ingest commit in the
//! same round without a sync of their own; routings, claims and attempts
//! commit without one too (a power cut that takes them only repeats work
//! under the same idempotency keys); operators' commands commit with one.
//! After a crash, opening the store applies again every journal record
//! past the last one SQLite holds (`meta.journal_seq`), reads the dedup
//! keys held in memory back from their events' rows, and hands back the
//! jobs left running (`recover`, at start). `durability = "relaxed"` skips
//! the journal's sync: a crash of the daemon loses nothing, a power cut
//! the last groups.
//!
//! **PostgreSQL** (the database's tables). The tables are the record of
//! everything: a request (body and headers in its row), its events, dedup
//! keys and versions commit in one transaction before the 2xx (as durable
//! as the server's `synchronous_commit` makes it); routings, claims,
//! attempts and gates commit with `synchronous_commit = off` (a crash of
//! the database that takes the last of them only repeats work), operators'
//! commands with the server's setting. Nothing is rebuilt:
//! after a crash the other instances (or this one's next start) take over
//! the pending events of an instance whose heartbeat stopped, and hand its
//! running jobs back once their leases run out.
//!
//! ## Why SQLite (WAL) rather than redb
//! - The CLI must read and change the store while the daemon runs (list,
//!   show, replay, redrive). SQLite's file locking lets a second process do
//!   that safely; redb allows one process at a time.
//! - The PostgreSQL backend speaks SQL too: one schema to reason about,
//!   the operators' side and retention's statements written once.
//! - WAL mode gives concurrent readers beside the one writer, and one fsync
//!   per commit of the write-ahead log.
//!
//! ## Group commit (embedded)
//! All writes go through one writer thread. It takes every write waiting in
//! its queue, applies each inside its own savepoint of one transaction, and
//! commits once; the batch's journal records are written in one `write`
//! and synced with one `fdatasync` before that commit.

pub mod catalog;
pub mod clock;
mod config;
mod filter;
pub mod postgres;
mod records;
mod sql;
mod sql_backend;
mod sqlite;
mod sweep;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use catalog::{DriftRow, DriftTally, Learned, Tally, TypeRow, TypeTally};
pub use config::{Durability, StoreConfig};
pub use filter::{given, parse_time, Dialect, EventFilter, FieldMatch, STATES};
pub use postgres::{PgOptions, PgStore};
pub use records::{
    ActionState, AttemptRecord, DeadFilter, EventDetail, EventSummary, InstanceInfo, JobRecord,
    RequestRecord, Waiting,
};
pub use sqlite::{record_statements, register_functions, Recovery, SqliteStore, StoreOptions};
pub(crate) use sweep::SWEEP_WINDOW;
pub use sweep::{sweep, Pruned, Sweep, SweepPhase};

use crate::event::Event;

/// Why the store could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes now (disk full, read-only, I/O error):
    /// answer 503 and let the sender retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// An accepted request as it is kept: credentials redacted.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub id: String,
    pub source: String,
    pub received_at_ms: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

/// What became of each event of an ingested request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "id", rename_all = "lowercase")]
pub enum Ingested {
    /// Stored and due for routing.
    New(String),
    /// Seen within the dedup window: the id of the event it repeats.
    Duplicate(String),
    /// Stored but not routed: its object's version is not newer than the
    /// last one accepted (the event's id; see `Event::order`).
    Stale(String),
    /// Stored but not routed: the provider checking the endpoint (the
    /// event's id; see `Event::handshake`).
    Handshake(String),
}

/// An event waiting for routing.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub event: Event,
    /// Times it was routed before (a replay routes it again).
    pub routings: u32,
    /// It was held for an operator, who released it: it is routed as it
    /// is, not held again.
    pub released: bool,
}

/// An event as the JSON text it is stored as, shared by the jobs it makes:
/// handed to an action as it is, never parsed into a tree on the way.
pub type Envelope = std::sync::Arc<serde_json::value::RawValue>;

/// A stored envelope as a job carries it (`null` if it is not JSON, which
/// only a hand-edited database could make it).
pub(crate) fn envelope_of(text: String) -> Envelope {
    use serde_json::value::RawValue;
    let raw = RawValue::from_string(text).unwrap_or_else(|e| {
        tracing::error!("store: an unreadable event envelope is handed on as null: {e}");
        RawValue::from_string("null".into()).expect("null is JSON")
    });
    Envelope::from(raw)
}

/// What another process left for this one to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Jobs are due (stored unclaimed, handed back, redriven, or next in
    /// line behind a job of the same order key).
    Jobs,
    /// Events wait for routing (a replay, or a stopped instance's).
    Events,
}

/// Called when a store hears of [`Work`].
pub type OnWork = std::sync::Arc<dyn Fn(Work) + Send + Sync>;

/// An event's routing, to record in one transaction with its jobs.
#[derive(Debug, Clone)]
pub struct Routing {
    pub event_id: String,
    pub rule_runs: Value,
    /// The version of the rule set that routed the event.
    pub rules_version: u64,
    pub jobs: Vec<NewJob>,
    pub routed_at_ms: i64,
    /// When set, the jobs are stored already claimed for their first
    /// attempt and handed back (the envelope is what the attempt carries):
    /// the dispatcher runs them without claiming them from the store.
    pub claim_with: Option<Envelope>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub rule: String,
    pub call_index: usize,
    pub action: String,
    pub params: Value,
    pub idempotency_key: String,
    /// The value of its action's `order_by` parameter: jobs of one key run
    /// one at a time, in the order their events were taken in.
    pub order_key: Option<String>,
}

impl NewJob {
    /// The job as stored claimed with its routing: its first attempt.
    pub(crate) fn first_attempt(self, event_id: &str, event: &Envelope) -> ClaimedJob {
        ClaimedJob {
            id: self.id,
            event_id: event_id.to_string(),
            event: event.clone(),
            rule: self.rule,
            action: self.action,
            params: self.params,
            idempotency_key: self.idempotency_key,
            attempt: 1,
            series_attempt: 1,
            order_key: self.order_key,
            rate_slot: None,
        }
    }
}

/// What marks the idempotency key of a job of a replayed event
/// (`router::idempotency_key`).
pub const REPLAY_MARK: &str = ":replay";

/// A job claimed for an attempt.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub event_id: String,
    pub event: Envelope,
    pub rule: String,
    pub action: String,
    pub params: Value,
    pub idempotency_key: String,
    /// The number of this attempt (1 for the first), over the job's life.
    pub attempt: u32,
    /// The number of this attempt since the job was last redriven: the
    /// retry schedule counts these.
    pub series_attempt: u32,
    /// Its order key (see [`NewJob::order_key`]), as computed at routing:
    /// the store claims one job of a key at a time.
    pub order_key: Option<String>,
    /// The slot its action's rate reserved for it when it was deferred
    /// (`dispatch/rate.rs`): claimed at it, it goes without asking again.
    pub rate_slot: Option<i64>,
}

impl ClaimedJob {
    /// Whether the job is backlog rather than live traffic: redriven from
    /// the dead letters, or made by a replay. Its action's rate and
    /// concurrency serve live jobs first (`dispatch/rate.rs`).
    pub fn is_backlog(&self) -> bool {
        self.attempt > self.series_attempt || self.idempotency_key.contains(REPLAY_MARK)
    }
}

/// The outcome of one attempt, as the dispatcher decided it.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Done; the action's result (e.g. a command's captured output) as JSON text.
    Done { result: Option<String> },
    /// Try again at `next_at_ms`.
    Retry { message: String, next_at_ms: i64 },
    /// Give up: a dead letter.
    Dead { message: String },
}

#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    pub job_id: String,
    pub attempt: u32,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub finish: Finish,
}

/// What an attempt's outcome writes: the attempt row and the job's new state.
pub(crate) struct AttemptRow<'a> {
    /// `done` | `retry` | `dead`.
    pub outcome: &'static str,
    /// The result (done) or the error (retry, dead).
    pub message: Option<&'a str>,
    /// The job's state after it: `done` | `pending` | `dead`.
    pub state: &'static str,
    /// When a retried job is due.
    pub next_at_ms: Option<i64>,
    /// When the job finished (done or dead).
    pub finished_at_ms: Option<i64>,
}

impl FinishedAttempt {
    pub(crate) fn row(&self) -> AttemptRow<'_> {
        let finished = Some(self.finished_at_ms);
        let (outcome, message, state, next_at_ms, finished_at_ms) = match &self.finish {
            Finish::Done { result } => ("done", result.as_deref(), "done", None, finished),
            Finish::Retry {
                message,
                next_at_ms,
            } => (
                "retry",
                Some(message.as_str()),
                "pending",
                Some(*next_at_ms),
                None,
            ),
            Finish::Dead { message } => ("dead", Some(message.as_str()), "dead", None, finished),
        };
        AttemptRow {
            outcome,
            message,
            state,
            next_at_ms,
            finished_at_ms,
        }
    }
}

/// How much work is waiting; ingress refuses new work beyond set bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub unrouted_events: u64,
    pub pending_jobs: u64,
}

/// The store as the pipeline uses it: ingress (ingest), the router
/// (pending events, routings), the dispatcher (claims, attempts, gates) and
/// housekeeping (recovery, pruning, health). A backend implements this and
/// [`Operations`].
pub trait Pipeline: Send + Sync + 'static {
    /// Persists a request and its events in one durable transaction,
    /// deduplicating by (source, dedup key) within `dedup_window_ms`.
    fn ingest(
        &self,
        request: StoredRequest,
        events: &[Event],
        dedup_window_ms: i64,
    ) -> StoreFuture<'_, Vec<Ingested>>;

    /// Events waiting to be routed, oldest first.
    fn pending_events(&self, limit: usize) -> StoreFuture<'_, Vec<PendingEvent>>;

    /// Marks an event routed and adds its jobs, in one transaction. Returns
    /// the jobs claimed with it (see [`Routing::claim_with`]); none if the
    /// event had been routed already.
    fn record_routing(&self, routing: Routing) -> StoreFuture<'_, Vec<ClaimedJob>>;

    /// Claims up to `limit` jobs due at `now_ms` for an attempt each.
    fn claim_jobs(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<ClaimedJob>>;

    /// Records an attempt's outcome.
    fn finish_attempt(&self, attempt: FinishedAttempt) -> StoreFuture<'_, ()>;

    /// When the next pending job is due, if any.
    fn next_due(&self) -> StoreFuture<'_, Option<i64>>;

    /// Counts of waiting work.
    fn backlog(&self) -> StoreFuture<'_, Backlog>;

    /// Hands jobs left running by a stopped or crashed process back.
    fn recover(&self) -> StoreFuture<'_, u64>;

    /// One step of a retention sweep ([`Sweep`]): removes routed, stale
    /// and handshake events received before `before_ms` (with their
    /// requests, finished jobs and attempts), dedup keys expired by
    /// `now_ms` and object versions not updated since `before_ms`, at most
    /// a window of rows a step; says what it removed and the next step.
    /// A store shared by several instances sweeps on its leader only.
    fn prune(&self, sweep: Sweep) -> StoreFuture<'_, Pruned>;

    /// Takes the write lock and commits nothing: the store can write.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// The capability of a store that several processes share as
    /// instances (leases, notices, hand-back), if this backend has it.
    /// Asked for by whoever needs it; a backend says `None` itself.
    fn shared(&self) -> Option<&dyn Shared>;

    /// The capability of telling the time of each commit, if this backend
    /// has it (one writer committing in groups does; a pool of connections
    /// has no one commit to time).
    fn commit_timing(&self) -> Option<&dyn CommitTiming>;

    /// Puts a claimed job back, due at `next_at_ms`, without using an attempt
    /// (its action was paused or throttled, or it is backlog waiting its
    /// turn). A slot its rate reserved is given up: it asks again then,
    /// rather than go with every other job that waited, in a rush.
    fn release_job(&self, job_id: String, next_at_ms: i64) -> StoreFuture<'_, ()>;

    /// Puts a claimed job back without using an attempt, due at the slot
    /// its action's rate reserved for it, and notes the slot on it.
    fn defer_job(&self, job_id: String, slot_ms: i64) -> StoreFuture<'_, ()>;

    /// Forgets the slots `action`'s rate reserved for its waiting jobs
    /// (its rate was lowered: each asks again, due when it was), and on
    /// the shared store its budgets: how many jobs.
    fn forget_rate_slots(&self, action: String) -> StoreFuture<'_, u64>;

    /// Records an action's gate (breaker or pause).
    fn save_action_state(&self, state: ActionState) -> StoreFuture<'_, ()>;

    /// Every action's gate as last stored.
    fn action_states(&self) -> StoreFuture<'_, Vec<ActionState>>;

    /// Records what the catalog counted ([`Tally`]) in one transaction:
    /// the drift seen for the first time comes back, to be announced.
    fn record_catalog(&self, tally: Tally) -> StoreFuture<'_, Vec<DriftTally>>;

    /// Holds a pending event for an operator instead of routing it (a
    /// strict source's event that drifted): whether it was pending.
    fn hold_event(&self, event_id: String, why: String, at_ms: i64) -> StoreFuture<'_, bool>;

    /// The event types the store knows, of a source or of all, with the
    /// schemas learned for them.
    fn event_types(&self, source: Option<String>) -> StoreFuture<'_, Vec<TypeRow>>;
}

/// What operators read and do, through the admin API, the dashboard and
/// the CLI: the lists and one event's detail (reads), and the commands
/// that change what the pipeline will do — replay, redrive, enable an
/// action (writes).
pub trait Operations: Send + Sync + 'static {
    fn list_events(&self, filter: EventFilter) -> StoreFuture<'_, Vec<EventSummary>>;
    /// The id of the `n`th newest event (from 1) within the filter's id and
    /// time bounds (its other conditions are not looked at), if there are
    /// that many: where a search of the newest `n` ends.
    fn nth_newest_id(&self, bounds: EventFilter, n: usize) -> StoreFuture<'_, Option<String>>;
    fn show_event(&self, id: String) -> StoreFuture<'_, EventDetail>;
    /// Routes a stored event again through the current rules.
    fn replay(&self, id: String) -> StoreFuture<'_, ()>;
    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<JobRecord>>;
    /// Jobs waiting for their action's rate (deferred to a reserved slot),
    /// per action that has any.
    fn waiting_for_rate(&self) -> StoreFuture<'_, Vec<(String, u64)>>;
    /// Sends dead jobs (one, or all with `None`) back to the queue, due now.
    fn redrive(&self, id: Option<String>, now_ms: i64) -> StoreFuture<'_, u64>;
    /// Closes an action's gate and makes its waiting jobs due now; returns
    /// how many jobs that was.
    fn enable_action(&self, action: String, now_ms: i64) -> StoreFuture<'_, u64>;
    /// How many dead letters match.
    fn count_dead(&self, filter: DeadFilter) -> StoreFuture<'_, u64>;
    /// Sends up to `limit` dead letters that match back to the queue, due
    /// now; returns how many (0: none is left).
    fn redrive_matching(
        &self,
        filter: DeadFilter,
        limit: usize,
        now_ms: i64,
    ) -> StoreFuture<'_, u64>;
    /// The oldest pending job, and how many dead letters there are.
    fn waiting(&self) -> StoreFuture<'_, Waiting>;
    /// The drift recorded, of a source and type or of all, newest first.
    fn schema_drift(
        &self,
        source: Option<String>,
        kind: Option<String>,
    ) -> StoreFuture<'_, Vec<DriftRow>>;
    /// Releases a held event (or up to `limit` of a source's, or of all,
    /// with `None`) to be routed as it is: how many.
    fn release_held(
        &self,
        id: Option<String>,
        source: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, u64>;
}

/// What a store shared by several instances does beyond [`Pipeline`]
/// (PostgreSQL's): who the instances are, telling them of work another
/// left, and handing work back at once when one stops.
pub trait Shared: Send + Sync {
    /// Has `wake` told when another process left work for this one (jobs
    /// due, events to route): the other instances, or a CLI's replay.
    /// Polling stays the fallback.
    fn on_work(&self, wake: OnWork);

    /// This process stops taking work: what it holds goes back at once
    /// (its running jobs and pending events), not after its leases run out.
    fn leave(&self) -> StoreFuture<'_, ()>;

    /// The instances sharing the store.
    fn instances(&self) -> StoreFuture<'_, Vec<InstanceInfo>>;

    /// Takes a slot of `step_us` from the rate budget of `action` and
    /// `key`, shared by the instances: the budget's new time (µs), from
    /// which the slot follows (`config::rate::slot_from`).
    fn reserve_rate(
        &self,
        action: String,
        key: String,
        step_us: i64,
        now_us: i64,
    ) -> StoreFuture<'_, i64>;

    /// Takes a slot of `step_us` from that budget only when it is full
    /// (its time not past `now_us`): whether it did. Backlog goes so,
    /// leaving the burst to live jobs.
    fn take_rate_if_full(
        &self,
        action: String,
        key: String,
        step_us: i64,
        now_us: i64,
    ) -> StoreFuture<'_, bool>;

    /// The budgets of `action` (key, time µs), to show.
    fn rate_budgets(&self, action: String) -> StoreFuture<'_, Vec<(String, i64)>>;
}

/// Told the time each commit took.
pub type CommitObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// What a store with one writer committing in groups does beyond
/// [`Pipeline`] (the embedded store's): tells the time of each commit.
pub trait CommitTiming: Send + Sync {
    /// Has `f` told the time of each commit, for metrics. Set once.
    fn observe_commits(&self, f: CommitObserver);
}

/// A whole backend: the pipeline's part and the operators' part. Pipeline
/// stages hold an `Arc<dyn Pipeline>`; the admin API and the CLI the whole.
pub trait Store: Pipeline + Operations {}

impl<T: Pipeline + Operations> Store for T {}

/// The backlog as ingress sees it: refreshed from the store about once a
/// second, and counted up by ingress in between.
#[derive(Debug, Default)]
pub struct BacklogGauge {
    pub unrouted_events: AtomicU64,
    pub pending_jobs: AtomicU64,
}

impl BacklogGauge {
    pub fn set(&self, b: Backlog) {
        self.unrouted_events
            .store(b.unrouted_events, Ordering::Relaxed);
        self.pending_jobs.store(b.pending_jobs, Ordering::Relaxed);
    }
    /// `n` events left the backlog (routed). The count is refreshed from
    /// the store now and then; between refreshes ingress adds what it
    /// accepts and the router takes away what it routes, so a fast stream
    /// that is routed as fast is never taken for a backlog.
    pub fn routed(&self, n: u64) {
        let _ = self
            .unrouted_events
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    pub fn get(&self) -> Backlog {
        Backlog {
            unrouted_events: self.unrouted_events.load(Ordering::Relaxed),
            pending_jobs: self.pending_jobs.load(Ordering::Relaxed),
        }
    }
}

/// The smallest ULID of a millisecond: ids below it were made before it
/// (ids are ULIDs, so a time range is an id range).
pub fn ulid_floor(ms: i64) -> String {
    ulid::Ulid::from_parts(ms.max(0) as u64, 0).to_string()
}

/// The process's store clock (see [`clock`]).
static CLOCK: clock::SteadyClock = clock::SteadyClock::new(clock::system_ms);

/// Milliseconds since the Unix epoch, never less than an earlier answer in
/// this process: a system clock stepped back does not strand what is due
/// (see [`clock`]).
pub fn now_ms() -> i64 {
    CLOCK.now_ms()
}
