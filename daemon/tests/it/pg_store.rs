//! The PostgreSQL store against a real server (`pg.rs`): several stores on
//! one database stand for several instances.

use std::time::Duration;

use serde_json::json;

pub(crate) use crate::contract::event;
use crate::pg::{fresh_database, query, sql};
use switchyard::event::Event;
use switchyard::store::{
    now_ms, Envelope, EventFilter, Finish, FinishedAttempt, Ingested, NewJob, Operations,
    PgOptions, PgStore, Pipeline, Routing, StoredRequest,
};

/// A request received now.
pub(crate) fn request(id: &str) -> StoredRequest {
    crate::contract::request(id, now_ms())
}

/// A routing of `event` with one job per idempotency key given.
pub(crate) fn routing(event: &Event, keys: &[&str], claim: bool) -> Routing {
    Routing {
        event_id: event.id.clone(),
        rule_runs: json!([{"rule": "r"}]),
        rules_version: 1,
        jobs: keys
            .iter()
            .enumerate()
            .map(|(i, k)| NewJob {
                id: switchyard::event::new_id(),
                rule: "r".into(),
                call_index: i,
                action: "notify".into(),
                params: json!({"to": "x"}),
                idempotency_key: k.to_string(),
                order_key: None,
            })
            .collect(),
        routed_at_ms: now_ms(),
        claim_with: claim.then(|| Envelope::from(serde_json::value::to_raw_value(event).unwrap())),
    }
}

/// Instances on one fresh database; a short lease so that taking over
/// from a stopped one is quick.
pub(crate) async fn instances(n: usize) -> (String, Vec<PgStore>) {
    instances_beating(n, Duration::from_millis(200)).await
}

/// Instances that beat every `heartbeat` (once at start, then no more in
/// a test's time if it is long: as stalled processes).
async fn instances_beating(n: usize, heartbeat: Duration) -> (String, Vec<PgStore>) {
    let url = fresh_database();
    let mut stores = Vec::new();
    for _ in 0..n {
        let mut options = PgOptions::new(url.clone());
        options.heartbeat = heartbeat;
        options.dead_after = Duration::from_millis(1500);
        stores.push(PgStore::connect(options).await.unwrap());
    }
    (url, stores)
}

#[tokio::test]
async fn two_instances_starting_at_once_apply_each_migration_once() {
    let url = fresh_database();
    let (a, b) = tokio::join!(
        PgStore::connect(PgOptions::new(url.clone())),
        PgStore::connect(PgOptions::new(url.clone())),
    );
    let (_a, _b) = (a.unwrap(), b.unwrap());
    let mut rows = Vec::new();
    query(
        &url,
        "SELECT version FROM schema_migrations ORDER BY version",
        |r| rows.push(r),
    );
    let once: Vec<_> = (1..=7).map(|v| vec![Some(v.to_string())]).collect();
    assert_eq!(rows, once, "each migration, once");
    // A client (the CLI) does not migrate; it reads what the instances made.
    let mut client = PgOptions::new(url.clone());
    client.join = false;
    let client = PgStore::connect(client).await.unwrap();
    assert!(client.backlog().await.is_ok());
    let mut client = PgOptions::new(fresh_database());
    client.join = false;
    let e = PgStore::connect(client).await.err().expect("no schema yet");
    assert!(e.to_string().contains("no Switchyard schema"), "{e}");
}

#[tokio::test]
async fn a_database_of_the_first_schema_is_migrated_with_its_rows() {
    // As an instance of the first release left it: schema 1, an event
    // with a pending job.
    let url = fresh_database();
    sql(
        &url,
        &format!(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY,
                                             applied_at timestamptz NOT NULL DEFAULT now());
             {}
             INSERT INTO schema_migrations (version) VALUES (1);
             INSERT INTO requests VALUES ('r1', 'tight', 1, 'POST', '/', '', '[]', '', 'accepted');
             INSERT INTO events (id, request_id, source, type, received_at, envelope, state)
                 VALUES ('e1', 'r1', 'tight', 't', 1, '{{}}', 'routed');
             INSERT INTO jobs (id, event_id, rule, call_index, action, params, idempotency_key,
                               state, next_at, created_at)
                 VALUES ('j1', 'e1', 'r', 0, 'notify', '{{}}', 'e1:r:0', 'pending', 0, 0);",
            include_str!("../../src/store/postgres/migrations/0001_initial.sql")
        ),
    );
    let store = PgStore::connect(PgOptions::new(url.clone())).await.unwrap();
    let mut rows = Vec::new();
    query(&url, "SELECT e.seq, j.seq FROM events e, jobs j", |r| {
        rows.push(r)
    });
    assert_eq!(rows, vec![vec![Some("1".into()), Some("1".into())]]);
    let claimed = store.claim_jobs(now_ms(), 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "the old job still runs");
    assert_eq!(claimed[0].id, "j1");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_version_is_refused() {
    let (url, _stores) = instances(1).await;
    sql(&url, "INSERT INTO schema_migrations (version) VALUES (999)");
    let e = PgStore::connect(PgOptions::new(url))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("version 999"), "{e}");
}

#[tokio::test]
async fn one_delivery_reaching_two_instances_at_once_is_one_event() {
    let (_url, stores) = instances(2).await;
    for round in 0..20 {
        let key = format!("delivery-{round}");
        let (ea, eb) = (
            event(&format!("a{round}"), &key),
            event(&format!("b{round}"), &key),
        );
        let (ra, rb) = tokio::join!(
            stores[0].ingest(
                request(&format!("ra{round}")),
                std::slice::from_ref(&ea),
                60_000
            ),
            stores[1].ingest(
                request(&format!("rb{round}")),
                std::slice::from_ref(&eb),
                60_000
            ),
        );
        let mut results = [ra.unwrap().remove(0), rb.unwrap().remove(0)];
        results.sort_by_key(|r| matches!(r, Ingested::Duplicate(_)));
        match &results {
            [Ingested::New(first), Ingested::Duplicate(of)] => assert_eq!(first, of),
            other => panic!("round {round}: {other:?}"),
        }
    }
    let pending = stores[0].backlog().await.unwrap().unrouted_events;
    assert_eq!(pending, 20);
}

#[tokio::test]
async fn two_instances_routing_one_event_make_one_set_of_jobs() {
    let (_url, stores) = instances(2).await;
    let e = event("e1", "k1");
    stores[0]
        .ingest(request("r1"), std::slice::from_ref(&e), 60_000)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        stores[0].record_routing(routing(&e, &["e1:r:0"], true)),
        stores[1].record_routing(routing(&e, &["e1:r:0"], true)),
    );
    let claimed = a.unwrap().len() + b.unwrap().len();
    assert_eq!(claimed, 1, "one of them routed it");
    let detail = stores[1].show_event("e1".into()).await.unwrap();
    assert_eq!((detail.state.as_str(), detail.jobs.len()), ("routed", 1));
}

#[tokio::test]
async fn claims_by_several_instances_never_overlap() {
    let (_url, stores) = instances(3).await;
    let mut keys = Vec::new();
    for i in 0..60 {
        let e = event(&format!("e{i:02}"), &format!("k{i}"));
        stores[0]
            .ingest(request(&format!("r{i}")), std::slice::from_ref(&e), 60_000)
            .await
            .unwrap();
        let key = format!("e{i:02}:r:0");
        stores[0]
            .record_routing(routing(&e, &[&key], false))
            .await
            .unwrap();
        keys.push(key);
    }
    let now = now_ms() + 1;
    let mut taken = Vec::new();
    for _ in 0..10 {
        let (a, b, c) = tokio::join!(
            stores[0].claim_jobs(now, 4),
            stores[1].claim_jobs(now, 4),
            stores[2].claim_jobs(now, 4),
        );
        for j in a.unwrap().into_iter().chain(b.unwrap()).chain(c.unwrap()) {
            assert_eq!(j.attempt, 1);
            let event: serde_json::Value = serde_json::from_str(j.event.get()).unwrap();
            assert_eq!(event["id"], j.event_id.as_str());
            taken.push(j.idempotency_key);
        }
    }
    taken.sort();
    let before = taken.len();
    taken.dedup();
    assert_eq!(before, taken.len(), "a job was claimed twice");
    keys.sort();
    assert_eq!(taken, keys, "every job claimed once");
}

#[tokio::test]
async fn an_attempt_is_recorded_only_by_the_instance_holding_the_job() {
    // No heartbeat after the first: the test says when leases run out and
    // who hands them back.
    let (url, stores) = instances_beating(2, Duration::from_secs(3600)).await;
    let e = event("e1", "k1");
    stores[0]
        .ingest(request("r1"), std::slice::from_ref(&e), 60_000)
        .await
        .unwrap();
    let job = stores[0]
        .record_routing(routing(&e, &["e1:r:0"], true))
        .await
        .unwrap()
        .remove(0);
    // The first instance stalls: its lease runs out and the job is handed
    // back, then taken by the second.
    sql(&url, "UPDATE jobs SET lease_until = 0");
    assert_eq!(stores[1].recover().await.unwrap(), 1);
    let again = stores[1].claim_jobs(now_ms() + 1, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    let finish = |attempt: u32, message: &str| FinishedAttempt {
        job_id: job.id.clone(),
        attempt,
        started_at_ms: now_ms(),
        finished_at_ms: now_ms(),
        finish: Finish::Dead {
            message: message.into(),
        },
    };
    // The first instance's late answer is not recorded…
    stores[0].finish_attempt(finish(1, "late")).await.unwrap();
    let shown = stores[1].show_event("e1".into()).await.unwrap();
    assert_eq!(shown.jobs[0].state, "running");
    assert!(shown.jobs[0].attempt_log.is_empty());
    // …the holder's is.
    stores[1]
        .finish_attempt(finish(2, "gave up"))
        .await
        .unwrap();
    let shown = stores[0].show_event("e1".into()).await.unwrap();
    assert_eq!(shown.jobs[0].state, "dead");
    assert_eq!(shown.jobs[0].attempt_log.len(), 1);
    assert_eq!(
        shown.jobs[0].attempt_log[0].message.as_deref(),
        Some("gave up")
    );
    // Any instance redrives it.
    assert_eq!(stores[0].dead_letters(10).await.unwrap().len(), 1);
    assert_eq!(stores[0].redrive(None, now_ms()).await.unwrap(), 1);
    assert!(stores[1].dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_pending_events_of_a_stopped_instance_are_taken_over() {
    let (_url, stores) = instances(2).await;
    let e = event("e1", "k1");
    stores[0].ingest(request("r1"), &[e], 60_000).await.unwrap();
    // Not the second's while the first beats.
    assert!(stores[1].pending_events(10).await.unwrap().is_empty());
    assert_eq!(stores[0].pending_events(10).await.unwrap().len(), 1);
    // The first stops beating: after its lease, the second takes it.
    let mut stores = stores;
    let first = stores.remove(0);
    drop(first);
    let mut taken = Vec::new();
    for _ in 0..100 {
        taken = stores[0].pending_events(10).await.unwrap();
        if !taken.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(taken.len(), 1, "taken over once the first stopped beating");
    assert_eq!(taken[0].event.id, "e1");
}

/// Which of the stores leads (each asks; only the holder's renewal says
/// yes), once one does.
async fn leader(stores: &[PgStore]) -> usize {
    for _ in 0..100 {
        let mut leading = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            if s.is_leader().await.unwrap() {
                leading.push(i);
            }
        }
        assert!(leading.len() <= 1, "two leaders: {leading:?}");
        if let [one] = leading[..] {
            return one;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader");
}

#[tokio::test]
async fn one_leader_at_a_time_and_another_once_it_is_gone() {
    let (_url, mut stores) = instances(2).await;
    let first = leader(&stores).await;
    assert_eq!(leader(&stores).await, first, "renewed by its holder");
    // Only the leader prunes.
    let later = now_ms() + 1;
    let other = 1 - first;
    assert_eq!(swept(&stores[other], later, later, 1000).await.events, 0);
    // The leader stops (no goodbye: as if killed): once its lease runs out,
    // the other takes over.
    drop(stores.remove(first));
    assert_eq!(leader(&stores).await, 0);
}

#[tokio::test]
async fn routed_events_are_pruned_by_the_leader_and_listed_by_any() {
    let (_url, stores) = instances(2).await;
    let e = event(&switchyard::event::new_id(), "k1");
    let r = switchyard::event::new_id();
    stores[0]
        .ingest(request(&r), std::slice::from_ref(&e), 1)
        .await
        .unwrap();
    stores[0]
        .record_routing(routing(&e, &[], false))
        .await
        .unwrap();
    let listed = stores[1]
        .list_events(EventFilter {
            kind: Some("tight.*".into()),
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "routed");
    let first = leader(&stores).await;
    let later = now_ms() + 10;
    let pruned = swept(&stores[first], later, later, 1000).await;
    assert_eq!(
        (pruned.events, pruned.requests, pruned.dedup_keys),
        (1, 1, 1)
    );
    assert!(stores[1].show_event(e.id.clone()).await.is_err());
}

/// A whole sweep that must not fail, as the pruner runs it (no stop).
pub(crate) async fn swept(
    store: &dyn switchyard::store::Pipeline,
    before_ms: i64,
    now_ms: i64,
    max_steps: usize,
) -> switchyard::store::Pruned {
    let (pruned, done) =
        switchyard::store::sweep(store, before_ms, now_ms, max_steps, &|| false).await;
    done.unwrap();
    pruned
}

/// Retention prunes the rate budgets no job has asked of for a minute (a
/// budget whose time has passed is as good as none), and keeps the others:
/// a rate per customer leaves no row per customer for ever.
#[tokio::test]
async fn rate_budgets_unused_for_a_minute_are_pruned() {
    let (_url, stores) = instances(1).await;
    let shared = stores[0].shared().unwrap();
    let now = now_ms();
    let step = 100_000;
    for (key, at_ms) in [("long-ago", now - 120_000), ("now", now)] {
        shared
            .reserve_rate("notify".into(), key.into(), step, at_ms * 1_000)
            .await
            .unwrap();
    }
    let keys = |budgets: Vec<(String, i64)>| -> Vec<String> {
        let mut keys: Vec<_> = budgets.into_iter().map(|b| b.0).collect();
        keys.sort();
        keys
    };
    let before = shared.rate_budgets("notify".into()).await.unwrap();
    assert_eq!(keys(before), ["long-ago", "now"]);
    swept(&stores[0], now - 1_000, now, 1000).await;
    let after = shared.rate_budgets("notify".into()).await.unwrap();
    assert_eq!(keys(after), ["now"]);
    // A budget taken only when full: not while in use, then again.
    assert!(!shared
        .take_rate_if_full("notify".into(), "now".into(), step, now * 1_000)
        .await
        .unwrap());
    assert!(shared
        .take_rate_if_full("notify".into(), "now".into(), step, (now + 1_000) * 1_000)
        .await
        .unwrap());
}
