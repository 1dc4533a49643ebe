//! Every statement the pipeline and the pruner run, recorded as the store
//! runs them and planned by SQLite against a store holding rows of every
//! kind: none may read the whole of a table that grows with traffic. A
//! store lives for months; a statement whose cost grows with what the
//! store holds rather than with its own work stops ingestion once the
//! store is big (the request step of retention did, once, through a
//! foreign key without an index).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use serde_json::json;

use super::tests::{event, request, swept};
use super::*;
use crate::store::{envelope_of, now_ms, Finish, NewJob};

type Seen = Arc<Mutex<BTreeSet<String>>>;

/// The stores whose statements are recorded, by path.
static TRACED: Mutex<Option<HashMap<PathBuf, Seen>>> = Mutex::new(None);

/// Has `conn` record its statements when its store's path is traced.
pub(super) fn traced(path: &Path, mut conn: Connection) -> Connection {
    let seen = TRACED
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(path).cloned());
    if let Some(seen) = seen {
        conn.trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(move |e: TraceEvent<'_>| {
                if let TraceEvent::Stmt(stmt, _) = e {
                    seen.lock().unwrap().insert(stmt.sql().into_owned());
                }
            }),
        )
        .unwrap();
    }
    conn
}

fn trace(path: &Path) -> Seen {
    let seen = Seen::default();
    TRACED
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(path.to_path_buf(), seen.clone());
    seen
}

/// Tables that grow with traffic (until retention prunes them).
const GROWING: &[&str] = &[
    "requests", "events", "jobs", "attempts", "dedup", "versions",
];

/// Partial indexes of work waiting (pending events, due and running jobs):
/// scanning one costs in proportion to the work it finds.
const WORK_QUEUES: &[&str] = &[
    "events_pending",
    "jobs_due",
    "jobs_running",
    "jobs_ordered",
    "jobs_ordered_due",
];

const KEYWORDS: &[&str] = &[
    "where",
    "set",
    "on",
    "join",
    "left",
    "inner",
    "order",
    "group",
    "limit",
    "values",
    "select",
    "returning",
    "using",
    "natural",
    "cross",
    "default",
    "as",
];

/// The tables a statement names, by the name its plan uses (an alias or
/// the table's own).
fn aliases(sql: &str) -> HashMap<String, String> {
    let words: Vec<String> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        if !matches!(w.as_str(), "from" | "join" | "update" | "into") {
            continue;
        }
        let Some(table) = words.get(i + 1) else {
            continue;
        };
        out.insert(table.clone(), table.clone());
        let mut next = i + 2;
        if words.get(next).map(String::as_str) == Some("as") {
            next += 1;
        }
        if let Some(alias) = words.get(next) {
            if !KEYWORDS.contains(&alias.as_str()) {
                out.insert(alias.clone(), table.clone());
            }
        }
    }
    out
}

/// What is wrong with a statement's plan: each step that reads a whole
/// table that grows (or a whole index of one that is not a work queue).
fn full_scans(conn: &Connection, sql: &str) -> Vec<String> {
    let names = aliases(sql);
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("cannot plan {sql}: {e}"));
    let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
    let details: Vec<String> = stmt
        .query_map(rusqlite::params_from_iter(unbound), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    details
        .into_iter()
        .filter(|d| {
            let Some(rest) = d.strip_prefix("SCAN ") else {
                return false;
            };
            let name = rest.split_whitespace().next().unwrap_or("").to_lowercase();
            let table = names.get(&name).cloned().unwrap_or(name);
            let queue = WORK_QUEUES
                .iter()
                .any(|q| d.ends_with(&format!("INDEX {q}")));
            GROWING.contains(&table.as_str()) && !queue
        })
        .collect()
}

/// Rows of every kind, as months of traffic leave them: old requests with
/// routed events, their finished jobs and attempts, dedup keys (half of
/// them expired) and object versions.
fn fill(path: &Path, n: u128, old_ms: i64) {
    let mut conn = Connection::open(path).unwrap();
    super::migrate::migrate(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut request = tx
            .prepare(
                "INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
                 VALUES (?1, 'tight', ?2, 'POST', '', '', '[]', x'', 'accepted')",
            )
            .unwrap();
        let mut event = tx
            .prepare(
                "INSERT INTO events (id, request_id, source, type, received_at, envelope, state, routings)
                 VALUES (?1, ?2, 'tight', 'tight.x', ?3, '{}', 'routed', 1)",
            )
            .unwrap();
        let mut job = tx
            .prepare(
                "INSERT INTO jobs (id, event_id, rule, call_index, action, params, idempotency_key,
                                   state, attempts, next_at, created_at)
                 VALUES (?1, ?2, 'r', 0, 'a', '{}', ?1, 'done', 1, ?3, ?3)",
            )
            .unwrap();
        let mut attempt = tx
            .prepare(
                "INSERT INTO attempts (job_id, n, started_at, finished_at, outcome)
                 VALUES (?1, 1, ?2, ?2, 'done')",
            )
            .unwrap();
        let mut key = tx
            .prepare("INSERT INTO dedup (source, key, event_id, expires_at) VALUES ('tight', ?1, ?2, ?3)")
            .unwrap();
        let mut version = tx
            .prepare(
                "INSERT INTO versions (source, key, version, event_id, updated_at)
                 VALUES ('tight', ?1, 1, ?2, ?3)",
            )
            .unwrap();
        for i in 0..n {
            let at = old_ms + (i / 100) as i64;
            let ulid = |k: u128| ulid::Ulid::from_parts(at as u64, i * 4 + k).to_string();
            let (r, e, j) = (ulid(0), ulid(1), ulid(2));
            request.execute(params![r, at]).unwrap();
            event.execute(params![e, r, at]).unwrap();
            job.execute(params![j, e, at]).unwrap();
            attempt.execute(params![j, at]).unwrap();
            let expires = if i % 2 == 0 {
                at
            } else {
                at + 1_000_000_000_000
            };
            key.execute(params![format!("key{i}"), e, expires]).unwrap();
            version.execute(params![format!("obj{i}"), e, at]).unwrap();
        }
    }
    tx.commit().unwrap();
}

#[tokio::test]
async fn no_statement_of_the_pipeline_or_the_pruner_reads_a_whole_growing_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let now = now_ms();
    let old = now - 86_400_000;
    // Rows from before the journal: it starts above them.
    fill(&path, 20_000, old);
    let seen = trace(&path);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();

    // Ingest: new, a duplicate of a key in the dedup table, a versioned
    // event (stale check and version), a handshake.
    let id = crate::event::new_id;
    let (e1, e2, e3, e4) = (id(), id(), id(), id());
    store
        .ingest(request(&id(), now), &[event(&e1, "fresh")], 60_000)
        .await
        .unwrap();
    let dup_key = "key2";
    store
        .ingest(request(&id(), now), &[event(&e2, dup_key)], 60_000)
        .await
        .unwrap();
    let mut versioned = event(&e3, "v");
    versioned.order = Some(switchyard_plugin_api::Order {
        key: "obj1".into(),
        version: 7,
    });
    store
        .ingest(request(&id(), now), &[versioned], 60_000)
        .await
        .unwrap();
    let mut handshake = event(&e4, "h");
    handshake.handshake = true;
    store
        .ingest(request(&id(), now), &[handshake], 60_000)
        .await
        .unwrap();

    // Routing, claims, attempts.
    assert!(!store.pending_events(10).await.unwrap().is_empty());
    let job = |event: &str, i: usize| NewJob {
        id: id(),
        rule: "r".into(),
        call_index: i,
        action: "a".into(),
        params: json!({}),
        idempotency_key: format!("{event}:r:{i}"),
        order_key: None,
    };
    let routing = |event: &str, claim: bool| Routing {
        event_id: event.into(),
        rule_runs: json!([]),
        rules_version: 1,
        // The second call's action is ordered (`order_by`): its own claim.
        jobs: vec![
            job(event, 0),
            NewJob {
                order_key: Some("K".into()),
                ..job(event, 1)
            },
        ],
        routed_at_ms: now,
        claim_with: claim.then(|| envelope_of("{}".into())),
    };
    let claimed_at_once = store.record_routing(routing(&e1, true)).await.unwrap();
    store.record_routing(routing(&e3, false)).await.unwrap();
    let claimed = store.claim_jobs(now, 10).await.unwrap();
    // One of key K at a time: e1's, and e3's unordered job.
    assert_eq!((claimed_at_once.len(), claimed.len()), (1, 2));
    let finish = |c: &ClaimedJob, finish: Finish| FinishedAttempt {
        job_id: c.id.clone(),
        attempt: c.attempt,
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
    store
        .finish_attempt(finish(&claimed[0], retry))
        .await
        .unwrap();
    store
        .finish_attempt(finish(&claimed_at_once[0], dead))
        .await
        .unwrap();
    store.release_job(claimed[1].id.clone(), now).await.unwrap();
    store.next_due().await.unwrap();
    store.backlog().await.unwrap();
    store.recover().await.unwrap();
    store
        .save_action_state(ActionState {
            action: "a".into(),
            state: "open".into(),
            until_ms: Some(now),
            failures: 5,
            reason: None,
            updated_at_ms: now,
        })
        .await
        .unwrap();
    store.action_states().await.unwrap();
    store.ping().await.unwrap();

    // Retention: a whole sweep over the old rows, every phase.
    let pruned = swept(&store, now - 1000, now, 10_000).await;
    assert_eq!(pruned.events, 20_000, "{pruned:?}");
    assert!(pruned.next.is_none(), "the sweep ended");
    // The dedup keys' flush, and what opening reads (recovery, keys).
    {
        let conn = open_connection(&path, &StoreOptions::default(), true).unwrap();
        let mut keys = keys::RecentKeys::default();
        keys.add("tight", "k", "e", now + 1000);
        keys.keep();
        keys.flush(&conn, now).unwrap();
    }
    store.close();
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    store.ping().await.unwrap();
    store.close();

    let statements = seen.lock().unwrap().clone();
    for wanted in [
        "INSERT OR IGNORE INTO events",
        "INSERT OR IGNORE INTO jobs",
        "UPDATE jobs SET state = 'running'",
        "o.order_key IS NOT NULL",
        "INSERT OR REPLACE INTO attempts",
        "DELETE FROM events",
        "DELETE FROM requests",
        "DELETE FROM dedup",
        "DELETE FROM versions",
        "SELECT event_id FROM dedup",
        "SELECT version FROM versions",
    ] {
        assert!(
            statements.iter().any(|s| s.contains(wanted)),
            "no statement with {wanted:?} was recorded"
        );
    }
    let conn = Connection::open(&path).unwrap();
    let mut wrong = Vec::new();
    for sql in &statements {
        let head = sql.trim_start().to_uppercase();
        if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
            .iter()
            .any(|k| head.starts_with(k))
        {
            continue;
        }
        let scans = full_scans(&conn, sql);
        if !scans.is_empty() {
            wrong.push(format!("{}\n    {}", sql.trim(), scans.join("\n    ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "statements that read a whole growing table:\n{}",
        wrong.join("\n")
    );
}

/// A delete of a referenced row looks for the rows that reference it: each
/// reference needs an index that starts with it, or each delete reads the
/// whole referencing table.
#[test]
fn every_reference_between_tables_has_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    SqliteStore::open(&path, StoreOptions::default())
        .unwrap()
        .close();
    let conn = Connection::open(&path).unwrap();
    let strings = |sql: &str, col: usize| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(col))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    let tables = strings(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        0,
    );
    let mut checked = 0;
    for table in &tables {
        // (id, seq, table, from, to, ...): the first column of each key.
        let references: Vec<String> = {
            let mut stmt = conn
                .prepare(&format!("PRAGMA foreign_key_list({table})"))
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, String>(3)?)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows.into_iter()
                .filter(|(seq, _)| *seq == 0)
                .map(|(_, from)| from)
                .collect()
        };
        let leading: Vec<String> = strings(&format!("PRAGMA index_list({table})"), 1)
            .iter()
            .filter_map(|index| {
                strings(&format!("PRAGMA index_info({index})"), 2)
                    .into_iter()
                    .next()
            })
            .collect();
        for column in references {
            checked += 1;
            assert!(
                leading.contains(&column),
                "{table}.{column} references another table but no index starts with it"
            );
        }
    }
    assert!(checked >= 3, "events, jobs and attempts reference others");
}

#[test]
fn plans_name_tables_by_their_aliases() {
    let a = aliases("DELETE FROM requests WHERE NOT EXISTS (SELECT 1 FROM events e WHERE x)");
    assert_eq!(a.get("e").map(String::as_str), Some("events"));
    assert_eq!(a.get("requests").map(String::as_str), Some("requests"));
    let conn = Connection::open_in_memory().unwrap();
    super::migrate::migrate(&conn).unwrap();
    // The statement that once stopped ingestion, without the index.
    conn.execute_batch("DROP INDEX events_request").unwrap();
    let scans = full_scans(
        &conn,
        "DELETE FROM requests WHERE id > ?1 AND id <= ?2
           AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = requests.id)",
    );
    assert!(scans.contains(&"SCAN e".to_string()), "{scans:?}");
}
