//! Every statement the pipeline and the pruner run, recorded as a backend
//! runs them through one workload (the same for both backends) and planned
//! against a store holding months of rows: none may read the whole of a
//! table that grows with traffic. A store lives for months; a statement
//! whose cost grows with what the store holds rather than with its own
//! work stops ingestion once the store is big (the request step of
//! retention did, once, through a foreign key without an index). And every
//! reference between tables has an index that starts with it: a delete of
//! the referenced row (retention's) looks there.
//!
//! `embedded.rs` plans with SQLite's `EXPLAIN QUERY PLAN`; `postgres.rs`
//! with the server's generic plans (what a prepared statement gets whatever
//! its values).

mod embedded;
mod postgres;

use serde_json::json;
use switchyard::event::{new_id, Event};
use switchyard::store::{
    now_ms, ActionState, Envelope, Finish, FinishedAttempt, NewJob, Routing, Store,
};

use crate::contract::{event, request, swept};

/// Tables that grow with traffic (until retention prunes them).
pub const GROWING: &[&str] = &[
    "requests",
    "events",
    "jobs",
    "attempts",
    "dedup",
    "versions",
    "rate_budgets",
    // Not `event_types`: a row a type, bounded (`catalog::tally`); read
    // whole when asked for every type.
    "schema_drift",
];

/// A dedup key the fills put in the `dedup` table, in force.
pub const FILLED_KEY: &str = "key3";

/// Each statement of the pipeline and the pruner, at least once: ingest
/// (one event, several, a duplicate of a key in the `dedup` table, a
/// versioned event, a handshake, enough keys at once to be written out in
/// bulk), routings (claimed with them, stored, ordered), claims, attempts,
/// a release, the housekeeping reads, gates, an events stream's look, and
/// a whole sweep (of the
/// `filled` old events, and what they hold). `bulk`
/// events come in one request, each with a key of its own: enough for the
/// embedded store to write its keys out (it holds 16,384 before it does).
pub async fn workload(s: &dyn Store, filled: u64, bulk: usize) {
    let now = now_ms();
    let (e1, e2, e3, e4, e5) = (new_id(), new_id(), new_id(), new_id(), new_id());
    s.ingest(request(&new_id(), now), &[event(&e1, "fresh")], 60_000)
        .await
        .unwrap();
    s.ingest(
        request(&new_id(), now),
        &[event(&e2, "two-a"), event(&e5, "two-b")],
        60_000,
    )
    .await
    .unwrap();
    s.ingest(
        request(&new_id(), now),
        &[event(&new_id(), FILLED_KEY)],
        60_000,
    )
    .await
    .unwrap();
    let mut versioned = event(&e3, "v");
    versioned.order = Some(switchyard_plugin_api::Order {
        key: "obj1".into(),
        version: 7,
    });
    s.ingest(request(&new_id(), now), &[versioned], 60_000)
        .await
        .unwrap();
    let mut handshake = event(&e4, "h");
    handshake.handshake = true;
    s.ingest(request(&new_id(), now), &[handshake], 60_000)
        .await
        .unwrap();
    let many: Vec<Event> = (0..bulk)
        .map(|i| event(&new_id(), &format!("bulk-{i}")))
        .collect();
    s.ingest(request(&new_id(), now), &many, 60_000)
        .await
        .unwrap();
    // The catalog's: an event held, what arrived and drifted recorded
    // (twice: the second time, the rows are there), learned, pruned.
    let held = new_id();
    s.ingest(request(&new_id(), now), &[event(&held, "held")], 60_000)
        .await
        .unwrap();
    assert!(s
        .hold_event(held.clone(), "drift".into(), now)
        .await
        .unwrap());
    assert_eq!(
        s.release_held(None, Some("tight".into()), 10)
            .await
            .unwrap(),
        1
    );
    for round in 0..2 {
        let tally = switchyard::store::Tally {
            at_ms: now,
            types: vec![switchyard::store::TypeTally {
                source: "s".into(),
                kind: "s.t".into(),
                count: 3,
                last_event: e1.clone(),
            }],
            drift: vec![switchyard::store::DriftTally {
                source: "s".into(),
                kind: "s.t".into(),
                path: "/a".into(),
                drift: "missing".into(),
                detail: "absent".into(),
                count: 1,
                first_event: format!("{e1}{round}"),
                last_event: e1.clone(),
            }],
            learned: vec![switchyard::store::Learned {
                source: "s".into(),
                kind: "s.u".into(),
                schema: json!({"type": "object"}),
                from: 20 + round,
            }],
            prune_before_ms: Some(now - 60_000),
        };
        let new = s.record_catalog(tally).await.unwrap();
        assert_eq!(new.len(), usize::from(round == 0));
    }
    s.event_types(None).await.unwrap();
    s.schema_drift(Some("s".into()), Some("s.t".into()))
        .await
        .unwrap();
    assert!(!s.pending_events(10).await.unwrap().is_empty());

    let job = |event: &str, i: usize, order: Option<&str>| NewJob {
        id: new_id(),
        rule: "r".into(),
        call_index: i,
        action: "a".into(),
        params: json!({}),
        idempotency_key: format!("{event}:r:{i}"),
        order_key: order.map(str::to_string),
    };
    let routing = |event: &str, jobs: Vec<NewJob>, claim: bool| Routing {
        event_id: event.into(),
        rule_runs: json!([]),
        rules_version: 1,
        jobs,
        routed_at_ms: now,
        claim_with: claim
            .then(|| Envelope::from(serde_json::value::to_raw_value(&json!({})).unwrap())),
    };
    let at_once = s
        .record_routing(routing(
            &e1,
            vec![job(&e1, 0, None), job(&e1, 1, None)],
            true,
        ))
        .await
        .unwrap();
    // Two at once, as the router records a batch's routings (PostgreSQL's
    // groups record them as one statement).
    let (a, b) = tokio::join!(
        s.record_routing(routing(&e2, vec![job(&e2, 0, None)], false)),
        s.record_routing(routing(&e3, vec![job(&e3, 0, Some("obj1"))], false)),
    );
    a.unwrap();
    b.unwrap();
    s.record_routing(routing(&e5, vec![], false)).await.unwrap();
    let claimed = s.claim_jobs(now_ms() + 1000, 10).await.unwrap();
    assert_eq!((at_once.len(), claimed.len()), (2, 2), "{claimed:?}");
    let finish = |id: &str, attempt: u32, finish: Finish| FinishedAttempt {
        job_id: id.into(),
        attempt,
        started_at_ms: now,
        finished_at_ms: now,
        finish,
    };
    let retry = Finish::Retry {
        message: "503".into(),
        next_at_ms: now + 1000,
    };
    let dead = Finish::Dead {
        message: "400".into(),
    };
    // Two at once: a store that records attempts together (PostgreSQL's
    // groups) runs its statement for several.
    let (a, b) = tokio::join!(
        s.finish_attempt(finish(&claimed[0].id, claimed[0].attempt, retry)),
        s.finish_attempt(finish(&claimed[1].id, claimed[1].attempt, dead)),
    );
    a.unwrap();
    b.unwrap();
    let done = Finish::Done { result: None };
    s.finish_attempt(finish(&at_once[0].id, at_once[0].attempt, done))
        .await
        .unwrap();
    s.release_job(at_once[1].id.clone(), now).await.unwrap();
    s.next_due().await.unwrap();
    s.backlog().await.unwrap();
    s.recover().await.unwrap();
    s.save_action_state(ActionState {
        action: "a".into(),
        state: "open".into(),
        until_ms: Some(now),
        failures: 5,
        reason: None,
        updated_at_ms: now,
    })
    .await
    .unwrap();
    s.action_states().await.unwrap();
    s.waiting_for_rate().await.unwrap();
    s.defer_job(at_once[1].id.clone(), now + 1_000).await.ok();
    s.forget_rate_slots("a".into()).await.unwrap();
    if let Some(shared) = s.shared() {
        // The budgets several instances share.
        let now_us = now * 1_000;
        shared
            .reserve_rate("a".into(), String::new(), 1_000, now_us)
            .await
            .unwrap();
        shared
            .take_rate_if_full("a".into(), "k".into(), 1_000, now_us)
            .await
            .unwrap();
        shared.rate_budgets("a".into()).await.unwrap();
    }
    s.ping().await.unwrap();
    // An open events stream's look (`GET /v1/events/stream`, every 250 ms
    // while a client listens): the page after an id, with envelopes,
    // under a source and a type glob.
    let page = s
        .list_events(switchyard::store::EventFilter {
            source: Some("tight".into()),
            kind: Some("tight.*".into()),
            after: Some(switchyard::store::ulid_floor(now - 2_000)),
            limit: 500,
            envelopes: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.iter().all(|e| e.envelope.is_some()));
    // Retention: a whole sweep over the old rows, every phase.
    let pruned = swept(s, now - 1000, now).await;
    assert_eq!(pruned.events, filled, "{pruned:?}");
    assert!(pruned.next.is_none(), "the sweep ended");
}

/// The statements the plans must have seen: one of each kind of write.
pub fn assert_recorded(statements: &[String]) {
    for wanted in [
        "INTO events",
        "INTO jobs",
        "SET state = 'running'",
        "INTO attempts",
        "o.order_key IS NOT NULL",
        "DELETE FROM events",
        "DELETE FROM requests",
        "INTO event_types",
        "INTO schema_drift",
        "UPDATE schema_drift",
        "DELETE FROM schema_drift",
        "DELETE FROM event_types",
        "SET state = 'held'",
        "DELETE FROM dedup",
        "DELETE FROM versions",
    ] {
        assert!(
            statements.iter().any(|s| s.contains(wanted)),
            "no statement with {wanted:?} was recorded: {statements:#?}"
        );
    }
}

/// The statements among `recorded` a plan is asked for.
pub fn plannable(recorded: &[String]) -> Vec<&String> {
    recorded
        .iter()
        .filter(|s| {
            let head = s.trim_start().to_uppercase();
            ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
                .iter()
                .any(|k| head.starts_with(k))
                && !s.contains("pg_advisory")
        })
        .collect()
}
