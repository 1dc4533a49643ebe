//! Every statement the PostgreSQL store runs for the pipeline and the
//! pruner, recorded as it runs them and planned by the server (a generic
//! plan: what a prepared statement gets whatever its values) against a
//! database holding rows of every kind, analyzed: none may read the whole
//! of a table that grows with traffic (a `Seq Scan` of it). And every
//! reference between tables has an index that starts with it: a delete of
//! the referenced row (retention's) looks there.

use serde_json::{json, Value};

use crate::pg::{fresh_database, query, sql};
use crate::pg_store::{event, request, swept};
use switchyard::event::new_id;
use switchyard::store::postgres::recording;
use switchyard::store::{
    now_ms, ActionState, Envelope, Finish, FinishedAttempt, NewJob, PgOptions, PgStore, Pipeline,
    Routing,
};

const GROWING: &[&str] = &[
    "requests", "events", "jobs", "attempts", "dedup", "versions",
];

/// Months of traffic: old requests with routed events, finished jobs and
/// their attempts, dedup keys (half expired), object versions; analyzed,
/// as autovacuum would have.
fn fill(url: &str, n: i64, old_ms: i64) {
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
             INSERT INTO versions (source, key, version, event_id, updated_at)
               SELECT 'tight', 'obj' || id, 1, id, received_at FROM events;
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
    let now = now_ms();
    fill(&url, 50_000, now - 86_400_000);

    let ((), statements) = recording(async {
        // Ingest: one event, several, a duplicate, a versioned one, a handshake.
        let (e1, e2, e3, e4, e5) = (new_id(), new_id(), new_id(), new_id(), new_id());
        store
            .ingest(request(&new_id()), &[event(&e1, "fresh")], 60_000)
            .await
            .unwrap();
        store
            .ingest(
                request(&new_id()),
                &[event(&e2, "two-a"), event(&e5, "two-b")],
                60_000,
            )
            .await
            .unwrap();
        store
            .ingest(request(&new_id()), &[event(&new_id(), "fresh")], 60_000)
            .await
            .unwrap();
        let mut versioned = event(&e3, "v");
        versioned.order = Some(switchyard_plugin_api::Order {
            key: "obj1".into(),
            version: 7,
        });
        store
            .ingest(request(&new_id()), &[versioned], 60_000)
            .await
            .unwrap();
        let mut handshake = event(&e4, "h");
        handshake.handshake = true;
        store
            .ingest(request(&new_id()), &[handshake], 60_000)
            .await
            .unwrap();
        assert!(!store.pending_events(10).await.unwrap().is_empty());

        // Routing (claimed with it, stored, ordered), claims, attempts.
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
        let at_once = store
            .record_routing(routing(
                &e1,
                vec![job(&e1, 0, None), job(&e1, 1, None)],
                true,
            ))
            .await
            .unwrap();
        store
            .record_routing(routing(&e2, vec![job(&e2, 0, None)], false))
            .await
            .unwrap();
        store
            .record_routing(routing(&e3, vec![job(&e3, 0, Some("obj1"))], false))
            .await
            .unwrap();
        store
            .record_routing(routing(&e5, vec![], false))
            .await
            .unwrap();
        let claimed = store.claim_jobs(now_ms() + 1000, 10).await.unwrap();
        assert!(claimed.len() >= 2, "{claimed:?}");
        let finish = |id: &str, attempt: u32, finish: Finish| FinishedAttempt {
            job_id: id.into(),
            attempt,
            started_at_ms: now,
            finished_at_ms: now,
            finish,
        };
        store
            .finish_attempt(finish(
                &claimed[0].id,
                claimed[0].attempt,
                Finish::Retry {
                    message: "503".into(),
                    next_at_ms: now + 1000,
                },
            ))
            .await
            .unwrap();
        store
            .finish_attempt(finish(
                &claimed[1].id,
                claimed[1].attempt,
                Finish::Dead {
                    message: "400".into(),
                },
            ))
            .await
            .unwrap();
        store
            .finish_attempt(finish(
                &at_once[0].id,
                at_once[0].attempt,
                Finish::Done { result: None },
            ))
            .await
            .unwrap();
        store.release_job(at_once[1].id.clone(), now).await.unwrap();
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
        // Retention: a whole sweep, every phase.
        let pruned = swept(&store, now - 1000, now, 100_000).await;
        assert_eq!(pruned.events, 50_000, "{pruned:?}");
        assert!(pruned.next.is_none());
    })
    .await;

    for wanted in [
        "DELETE FROM events",
        "DELETE FROM requests",
        "DELETE FROM dedup",
        "DELETE FROM versions",
        "INSERT INTO attempts",
    ] {
        assert!(
            statements.iter().any(|s| s.contains(wanted)),
            "no statement with {wanted:?} was recorded: {statements:#?}"
        );
    }
    let mut wrong = Vec::new();
    let mut indexed = 0;
    for statement in &statements {
        let head = statement.trim_start().to_uppercase();
        if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
            .iter()
            .any(|k| head.starts_with(k))
            || statement.contains("pg_advisory")
        {
            continue;
        }
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
