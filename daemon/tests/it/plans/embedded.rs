//! The embedded store's plans: SQLite's `EXPLAIN QUERY PLAN` of each
//! statement the workload ran (see `plans/mod.rs`).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection};
use switchyard::store::{now_ms, record_statements, register_functions, SqliteStore, StoreOptions};

use super::{assert_recorded, plannable, workload, GROWING};

/// Old events (and requests, jobs...) the store holds.
const FILLED: u64 = 20_000;

/// Partial indexes of work waiting (pending events, due and running jobs):
/// scanning one costs in proportion to the work it finds.
const WORK_QUEUES: &[&str] = &[
    "events_pending",
    "jobs_due",
    "jobs_running",
    "jobs_ordered",
    "jobs_ordered_due",
    "jobs_rate_waiting",
    "events_held",
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
    // The schema of a store, then its rows as an older store kept them
    // (before its journal): a new journal starts above them.
    SqliteStore::open(path, StoreOptions::default())
        .unwrap()
        .close();
    std::fs::remove_dir_all(path.parent().unwrap().join("journal")).unwrap();
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch("DELETE FROM meta").unwrap();
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
    fill(&path, FILLED as u128, now_ms() - 86_400_000);
    let recorded = record_statements(&path);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    workload(&store, FILLED, 16_400).await;
    store.close();
    // What opening reads (recovery, the keys held in memory).
    SqliteStore::open(&path, StoreOptions::default())
        .unwrap()
        .close();
    let statements: Vec<String> = recorded.lock().unwrap().iter().cloned().collect();
    assert_recorded(&statements);
    assert!(
        statements
            .iter()
            .any(|s| s.contains("INSERT OR REPLACE INTO dedup")),
        "the keys were written out in bulk"
    );
    let conn = Connection::open(&path).unwrap();
    register_functions(&conn, &dir.path().join("journal")).unwrap();
    let mut wrong = Vec::new();
    for sql in plannable(&statements) {
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
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap());
    let conn = Connection::open(dir.path().join("s.db")).unwrap();
    // The statement that once stopped ingestion, without the index.
    conn.execute_batch("DROP INDEX events_request").unwrap();
    let scans = full_scans(
        &conn,
        "DELETE FROM requests WHERE id > ?1 AND id <= ?2
           AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = requests.id)",
    );
    assert!(scans.contains(&"SCAN e".to_string()), "{scans:?}");
}
