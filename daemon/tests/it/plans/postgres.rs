//! PostgreSQL's plans: the server's generic plan (what a prepared
//! statement gets whatever its values) of each statement the workload ran
//! (see `plans/mod.rs`), against a database holding months of rows,
//! analyzed: none may hold a `Seq Scan` of a growing table.

use serde_json::Value;

use crate::pg::{fresh_database, query, sql};
use switchyard::store::postgres::recording;
use switchyard::store::{now_ms, PgOptions, PgStore};

use super::{assert_recorded, plannable, workload, FILLED_KEY, GROWING};

/// Old events (and requests, jobs...) the database holds.
const FILLED: u64 = 50_000;

/// Months of traffic: old requests with routed events, finished jobs and
/// their attempts, dedup keys (half expired), object versions; analyzed,
/// as autovacuum would have.
fn fill(url: &str, n: i64, old_ms: i64) {
    // The plans are of a store that holds months of rows (analyzed below).
    // The workload's sweep then deletes the old ones; were autovacuum to
    // analyze a table again before the plans are made, they would be of a
    // table nearly empty, where a Seq Scan is right (the check of the rate
    // budgets' statements failed so, now and then).
    for table in GROWING {
        sql(
            url,
            &format!("ALTER TABLE {table} SET (autovacuum_enabled = false)"),
        );
    }
    sql(
        url,
        &format!(
            "INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
               SELECT '00' || lpad(i::text, 24, '0'), 'tight', {old_ms} + i / 100, 'POST', '', '',
                      '[]', '', 'accepted' FROM generate_series(1, {n}) i;
             INSERT INTO events (id, request_id, source, type, received_at, envelope, state, routings)
               SELECT '01' || substr(id, 3), id, 'tight', 'tight.x', received_at, '{{}}', 'routed', 1
               FROM requests;
             INSERT INTO jobs (id, event_id, rule, call_index, action, params, idempotency_key, state,
                               attempts, next_at, created_at)
               SELECT '02' || substr(id, 3), id, 'r', 0, 'a', '{{}}', id, 'done', 1, received_at,
                      received_at FROM events;
             INSERT INTO attempts (job_id, n, started_at, finished_at, outcome)
               SELECT id, 1, created_at, created_at, 'done' FROM jobs;
             INSERT INTO dedup (source, key, event_id, expires_at)
               SELECT 'tight', 'key' || id, id, received_at + (substr(id, 20)::bigint % 2) * 1000000000000
               FROM events;
             INSERT INTO dedup (source, key, event_id, expires_at)
               VALUES ('tight', '{FILLED_KEY}', '01' || lpad('1', 24, '0'), 9000000000000000);
             INSERT INTO versions (source, key, version, event_id, updated_at)
               SELECT 'tight', 'obj' || id, 1, id, received_at FROM events;
             INSERT INTO rate_budgets (action, key, tat_us)
               SELECT 'b' || (i % 100), 'customer' || i, ({old_ms} + i) * 1000
               FROM generate_series(1, {n}) i;
             INSERT INTO schema_drift (source, type, path, kind, detail, count, first_event,
                                       last_event, first_seen, last_seen)
               SELECT 'tight', 'tight.t' || (i % 300), '/p' || i, 'added', '', 1, 'e', 'e',
                      {old_ms} + i, {old_ms} + i
               FROM generate_series(1, 20000) i;
             ANALYZE;"
        ),
    );
}

/// The Seq Scans of growing tables in a plan (EXPLAIN's JSON).
fn seq_scans(plan: &Value, out: &mut Vec<String>) {
    if let Value::Array(items) = plan {
        return items.iter().for_each(|p| seq_scans(p, out));
    }
    if let Some(node) = plan.get("Node Type").and_then(Value::as_str) {
        let relation = plan
            .get("Relation Name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node == "Seq Scan" && GROWING.contains(&relation) {
            out.push(format!("Seq Scan on {relation}"));
        }
        if node.starts_with("Index") || node.starts_with("Bitmap") {
            out.push(format!("(index: {node})"));
        }
    }
    for key in ["Plan", "Plans"] {
        match plan.get(key) {
            Some(Value::Array(items)) => items.iter().for_each(|p| seq_scans(p, out)),
            Some(p @ Value::Object(_)) => seq_scans(p, out),
            _ => {}
        }
    }
}

/// The generic plan of a statement with `$n` parameters, as JSON.
fn generic_plan(url: &str, statement: &str) -> Value {
    let params = (1..=32)
        .rev()
        .find(|n| statement.contains(&format!("${n}")))
        .unwrap_or(0);
    let nulls = vec!["NULL"; params].join(", ");
    let execute = if params == 0 {
        "EXECUTE s".to_string()
    } else {
        format!("EXECUTE s({nulls})")
    };
    let mut plan = String::new();
    query(
        url,
        &format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE s AS {statement};
             EXPLAIN (FORMAT JSON) {execute}"
        ),
        |row| plan.push_str(row[0].as_deref().unwrap_or("")),
    );
    serde_json::from_str(&plan).unwrap_or_else(|e| panic!("{e}: {plan}"))
}

#[tokio::test]
async fn no_statement_of_the_pipeline_or_the_pruner_reads_a_whole_growing_table() {
    let url = fresh_database();
    let store = PgStore::connect(PgOptions::new(url.clone())).await.unwrap();
    fill(&url, FILLED as i64, now_ms() - 86_400_000);
    let ((), statements) = recording(workload(&store, FILLED, 0)).await;
    assert_recorded(&statements);
    for (together, what) in [
        ("FROM a JOIN j", "attempts finishing together"),
        ("AS r(event_id, routed_at", "routings made together"),
    ] {
        assert!(
            statements.iter().any(|s| s.contains(together)),
            "{what} were not recorded as one statement: {statements:#?}"
        );
    }
    let mut wrong = Vec::new();
    let mut indexed = 0;
    for statement in plannable(&statements) {
        let mut scans = Vec::new();
        seq_scans(&generic_plan(&url, statement), &mut scans);
        let before = scans.len();
        scans.retain(|s| !s.starts_with("(index"));
        indexed += usize::from(scans.len() < before);
        if !scans.is_empty() {
            wrong.push(format!(
                "{}\n    {}",
                statement.trim(),
                scans.join("\n    ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "statements that read a whole growing table:\n{}",
        wrong.join("\n")
    );
    // The plans were read: most statements find their rows by an index.
    assert!(indexed >= 10, "only {indexed} plans used an index");
}

#[tokio::test]
async fn every_reference_between_tables_has_an_index() {
    let url = fresh_database();
    drop(PgStore::connect(PgOptions::new(url.clone())).await.unwrap());
    let mut missing = Vec::new();
    let mut checked = 0;
    query(
        &url,
        "SELECT c.conrelid::regclass::text, a.attname,
                EXISTS (SELECT 1 FROM pg_index i
                        WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
         FROM pg_constraint c
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         WHERE c.contype = 'f'",
        |row| {
            checked += 1;
            if row[2].as_deref() != Some("t") {
                missing.push(format!(
                    "{}.{}",
                    row[0].as_deref().unwrap_or("?"),
                    row[1].as_deref().unwrap_or("?")
                ));
            }
        },
    );
    assert!(checked >= 3, "events, jobs and attempts reference others");
    assert!(
        missing.is_empty(),
        "references without an index that starts with them: {missing:?}"
    );
}
