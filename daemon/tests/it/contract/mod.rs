//! The store's contract: every behaviour of [`Pipeline`] and
//! [`Operations`], specified once and run against each backend — the
//! embedded store (SQLite and its journal) and PostgreSQL. A backend that
//! differs from the others fails here; a third backend starts by adding
//! itself to [`Backend`] and making this suite pass.
//!
//! What a backend implements (`daemon/src/store/mod.rs`):
//! - [`Pipeline`]: ingest (one durable transaction per request, dedup by
//!   key within a window, the version guard, handshakes kept unrouted),
//!   pending events oldest first, a routing recorded once with its jobs,
//!   claims that never overlap (only due jobs, each key of an ordered
//!   action one job at a time in the order its events came), attempts
//!   (done, retry, dead, with their log), jobs put back without an
//!   attempt, a crashed process's running jobs handed back, retention in
//!   bounded steps that prunes every terminal state and keeps what is
//!   still to do, gates, a ping.
//! - [`Operations`]: lists and filters with paging, one event's detail,
//!   replay, dead letters and redrive (one, all, by filter), enabling an
//!   action, and what the dashboard counts.
//! - Capabilities, said by the backend and kept: [`Shared`] (several
//!   instances; what only several instances show — claims across them,
//!   leases, the leader, notices — in `pg_store.rs`, `pg_order.rs`),
//!   [`CommitTiming`].
//!
//! Each case gets a fresh, empty store ([`Fixture`]); a case that needs a
//! restart asks the fixture to crash the process and open the store again.
//!
//! [`Pipeline`]: switchyard::store::Pipeline
//! [`Operations`]: switchyard::store::Operations
//! [`Shared`]: switchyard::store::Shared
//! [`CommitTiming`]: switchyard::store::CommitTiming

mod lists;
pub mod order;
mod pipeline;
mod retention;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard::event::{new_id, Event};
use switchyard::store::{
    now_ms, ClaimedJob, Envelope, Finish, FinishedAttempt, NewJob, PgOptions, PgStore, Routing,
    SqliteStore, Store, StoreOptions, StoredRequest,
};

/// The backends the contract holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
}

enum Opened {
    Embedded(Arc<SqliteStore>, tempfile::TempDir),
    Postgres(Arc<PgStore>, String),
}

/// A fresh store of one backend, as one process holds it.
pub struct Fixture {
    opened: Option<Opened>,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Fixture {
        let opened = match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let store = open_embedded(&dir);
                Opened::Embedded(store, dir)
            }
            Backend::Postgres => {
                let url = crate::pg::fresh_database();
                Opened::Postgres(open_postgres(&url).await, url)
            }
        };
        Fixture {
            opened: Some(opened),
        }
    }

    pub fn store(&self) -> &dyn Store {
        match self.opened.as_ref().unwrap() {
            Opened::Embedded(s, _) => s.as_ref(),
            Opened::Postgres(s, _) => s.as_ref(),
        }
    }

    /// The process stops without a word (no hand-back) and a new one opens
    /// the same store: what the store kept, it has again.
    pub async fn crash_and_reopen(&mut self) {
        self.opened = Some(match self.opened.take().unwrap() {
            Opened::Embedded(s, dir) => {
                s.close();
                drop(s);
                Opened::Embedded(open_embedded(&dir), dir)
            }
            Opened::Postgres(s, url) => {
                drop(s);
                Opened::Postgres(open_postgres(&url).await, url)
            }
        });
    }
}

fn open_embedded(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.path().join("switchyard.db"), StoreOptions::default()).unwrap())
}

/// An instance that beats often and is taken for dead soon after it
/// stops: a crashed one's work comes back within a test's time.
async fn open_postgres(url: &str) -> Arc<PgStore> {
    let mut options = PgOptions::new(url.to_string());
    options.heartbeat = Duration::from_millis(100);
    options.dead_after = Duration::from_millis(1000);
    Arc::new(PgStore::connect(options).await.unwrap())
}

// Helpers the cases share.

/// An event of `tight`, deduplicated by `key`.
pub fn event(id: &str, key: &str) -> Event {
    Event {
        id: id.into(),
        source: "tight".into(),
        kind: "tight.invoiceViewed".into(),
        subject: None,
        time: "2025-01-01T00:00:00Z".into(),
        data: json!({"n": id}),
        provider: "tight".into(),
        dedup_key: key.into(),
        received_at: "2025-01-01T00:00:00Z".into(),
        extensions: Default::default(),
        order: None,
        handshake: false,
    }
}

/// An event carrying a version of an object (see `Event::order`).
pub fn versioned(id: &str, key: &str, object: &str, version: i64) -> Event {
    let mut e = event(id, key);
    e.order = Some(switchyard_plugin_api::Order {
        key: object.into(),
        version,
    });
    e
}

pub fn request(id: &str, at_ms: i64) -> StoredRequest {
    StoredRequest {
        id: id.into(),
        source: "tight".into(),
        received_at_ms: at_ms,
        method: "POST".into(),
        path: "/hooks/tight".into(),
        query: "a=1".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(b"{\"raw\":true}"),
    }
}

/// A ULID of `ms` with `n` as its random part: ids made "at" a time, in order.
pub fn id_at(ms: i64, n: u128) -> String {
    ulid::Ulid::from_parts(ms as u64, n).to_string()
}

/// Takes `e` in as a delivery of its own, received at `at_ms`.
pub async fn take_in(store: &dyn Store, e: &Event, at_ms: i64) -> switchyard::store::Ingested {
    store
        .ingest(request(&new_id(), at_ms), std::slice::from_ref(e), 60_000)
        .await
        .unwrap()
        .remove(0)
}

/// A job of `action` with `params`; its idempotency key made of the event
/// and the call.
pub fn job(event_id: &str, call: usize, action: &str, order_key: Option<&str>) -> NewJob {
    NewJob {
        id: new_id(),
        rule: "r".into(),
        call_index: call,
        action: action.into(),
        params: json!({"call": call, "customer": order_key}),
        idempotency_key: format!("{event_id}:r:{call}"),
        order_key: order_key.map(str::to_string),
    }
}

/// A routing of `e` with `jobs`, offered for claiming with it if `claim`.
pub fn routing(e: &Event, jobs: Vec<NewJob>, claim: bool) -> Routing {
    Routing {
        event_id: e.id.clone(),
        rule_runs: json!([{"rule": "r", "calls": jobs.len()}]),
        rules_version: 7,
        jobs,
        routed_at_ms: now_ms(),
        claim_with: claim.then(|| Envelope::from(serde_json::value::to_raw_value(e).unwrap())),
    }
}

pub fn attempt(job: &ClaimedJob, finish: Finish) -> FinishedAttempt {
    FinishedAttempt {
        job_id: job.id.clone(),
        attempt: job.attempt,
        started_at_ms: now_ms(),
        finished_at_ms: now_ms(),
        finish,
    }
}

pub fn done() -> Finish {
    Finish::Done { result: None }
}

/// The events of claimed jobs, sorted.
pub fn events_of(jobs: &[ClaimedJob]) -> Vec<&str> {
    let mut ids: Vec<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    ids.sort();
    ids
}

/// Claims, after a crash, until a job the crashed process was running
/// comes back (its second attempt): at once for a store of one process
/// (`recover` at start), once its heartbeat is stale for a shared one
/// (its instances rescue it too). Everything claimed on the way, in order.
pub async fn claim_until_handed_back(s: &dyn Store) -> Vec<ClaimedJob> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut claimed = Vec::new();
    while std::time::Instant::now() < deadline {
        s.recover().await.unwrap();
        let batch = s.claim_jobs(now_ms() + 1, 10).await.unwrap();
        let back = batch.iter().any(|j| j.attempt > 1);
        claimed.extend(batch);
        if back {
            return claimed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no running job came back after the crash; claimed {claimed:?}");
}

/// A whole retention sweep, as the pruner runs it.
pub async fn swept(store: &dyn Store, before_ms: i64, now_ms: i64) -> switchyard::store::Pruned {
    let (pruned, done) =
        switchyard::store::sweep(store, before_ms, now_ms, 10_000, &|| false).await;
    done.unwrap();
    pruned
}

/// Each case, run on each backend: a case is written once, in the module
/// named first, and listed here.
macro_rules! contract {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $case() {
                super::$module::$case(super::Fixture::new(super::Backend::Embedded).await).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                super::$module::$case(super::Fixture::new(super::Backend::Postgres).await).await
            })*
        }
    };
}

contract!(
    pipeline::ingest_stores_each_event_once_within_the_dedup_window,
    pipeline::an_object_version_not_newer_than_the_last_is_stored_stale,
    pipeline::a_handshake_is_stored_but_never_routed,
    pipeline::pending_events_come_oldest_first_with_their_routings,
    pipeline::a_routing_is_recorded_once_with_its_jobs,
    pipeline::jobs_claimed_with_their_routing_are_running_already,
    pipeline::claims_take_due_jobs_once_and_never_overlap,
    pipeline::attempts_end_done_retried_or_dead_with_their_log,
    pipeline::a_released_job_is_due_again_without_using_an_attempt,
    pipeline::a_crashed_process_s_running_jobs_are_handed_back,
    pipeline::next_due_and_backlog_count_what_waits,
    pipeline::gates_are_stored_and_enabling_an_action_makes_its_jobs_due,
    pipeline::ping_says_the_store_can_write,
    pipeline::what_was_taken_in_survives_a_restart,
    pipeline::events_of_one_request_are_decided_in_their_order,
    pipeline::claims_take_the_longest_due_first,
    pipeline::capabilities_said_are_kept,
    pipeline::json_with_any_character_is_kept_as_it_came,
    order::jobs_of_one_key_run_one_at_a_time_in_the_order_their_events_came,
    order::an_ordered_job_is_never_claimed_with_its_routing,
    order::order_is_kept_across_a_restart,
    retention::every_terminal_state_is_pruned_and_what_is_still_to_do_is_kept,
    retention::expired_dedup_keys_and_old_versions_go,
    retention::a_sweep_goes_in_bounded_steps_over_many_rows,
    lists::every_filter_lists_what_it_says,
    lists::pages_of_events_and_the_nth_newest,
    lists::an_event_shows_its_request_routing_jobs_and_attempts,
    lists::a_replay_routes_an_event_again,
    lists::dead_letters_are_redriven_one_all_or_by_filter,
    lists::the_dashboard_counts_what_waits,
);
