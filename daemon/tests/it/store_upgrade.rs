//! The embedded store opened by this release as the previous one left it
//! (`tests/fixtures/store-0.1.0`, written by release 0.1.0: a request per
//! event in the journal, a routed event with a done and a dead job, one
//! with a job waiting for its retry, one pending, an open breaker).

use std::path::Path;

use serde_json::json;
use switchyard::store::{now_ms, NewJob, Operations, Pipeline, Routing, SqliteStore, StoreOptions};

const E1: &str = "01JF0000000000000000000001";
const E2: &str = "01JF0000000000000000000002";
const E3: &str = "01JF0000000000000000000003";

/// A copy of the fixture to open (opening changes it).
fn copy_of_previous_release() -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1.0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("journal")).unwrap();
    for file in ["switchyard.db", "journal/00000000000000000001.log"] {
        std::fs::copy(from.join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn user_version(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_store_of_the_previous_release_opens_with_all_it_held() {
    let dir = copy_of_previous_release();
    let db = dir.path().join("switchyard.db");
    assert_eq!(user_version(&db), 0, "0.1.0 numbered nothing");
    let store = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    assert!(store.recovery().damage.is_empty(), "{:?}", store.recovery());
    assert_eq!(user_version(&db), 5, "migrated to this release's schema");

    // What it held: the request (from the journal), jobs and their log.
    let e1 = store.show_event(E1.into()).await.unwrap();
    assert_eq!(e1.request.body, "{\"invoice\":0}");
    assert_eq!(e1.envelope["id"], E1, "an envelope kept in its row");
    assert_eq!((e1.state.as_str(), e1.rules_version), ("routed", Some(3)));
    let mut states: Vec<(&str, &str)> = e1
        .jobs
        .iter()
        .map(|j| (j.id.as_str(), j.state.as_str()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("01JF000000000000000000J101", "done"),
            ("01JF000000000000000000J102", "dead")
        ]
    );
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("550 mailbox unavailable")
    );
    let gates = store.action_states().await.unwrap();
    assert_eq!(
        (gates[0].action.as_str(), gates[0].state.as_str()),
        ("notify", "open")
    );
    let pending = store.pending_events(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event.id, E3);
    // The job waiting for its retry runs when due, as its second attempt.
    let later = now_ms() + 2 * 3_600_000;
    let retried = store.claim_jobs(later, 10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].event_id.as_str(), retried[0].attempt), (E2, 2));
    // And the new schema works: an ordered job of the pending event.
    store
        .record_routing(Routing {
            event_id: E3.into(),
            rule_runs: json!([]),
            rules_version: 1,
            jobs: vec![NewJob {
                id: switchyard::event::new_id(),
                rule: "r".into(),
                call_index: 0,
                action: "ordered".into(),
                params: json!({"customer": "K"}),
                idempotency_key: format!("{E3}:r:0"),
                order_key: Some("K".into()),
            }],
            routed_at_ms: now_ms(),
            claim_with: None,
        })
        .await
        .unwrap();
    let ordered = store.claim_jobs(later, 10).await.unwrap();
    assert_eq!(ordered.len(), 1);
    assert_eq!(ordered[0].action, "ordered");
    store.close();
    // Opened again: nothing more to apply.
    let again = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    assert_eq!(again.backlog().await.unwrap().unrouted_events, 0);
    again.close();
    assert_eq!(user_version(&db), 5);
}

#[tokio::test]
async fn a_store_of_a_newer_release_is_refused_untouched() {
    let dir = copy_of_previous_release();
    let db = dir.path().join("switchyard.db");
    SqliteStore::open(&db, StoreOptions::default())
        .unwrap()
        .close();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let e = SqliteStore::open(&db, StoreOptions::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("schema version 99"), "{e}");
    assert!(e.to_string().contains("newer Switchyard"), "{e}");
    assert_eq!(user_version(&db), 99);
}
