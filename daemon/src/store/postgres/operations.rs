//! The operators' side of the PostgreSQL store: events, jobs and dead
//! letters as the CLI and admin API show them, replays, redrives and
//! enabling actions (the [`Operations`] implementation). Any instance answers
//! for the whole cluster: they share the tables.

use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::sql;
use super::{map_err, notify, PgStore};
use crate::store::{
    AttemptRecord, DeadFilter, Dialect, EventDetail, EventFilter, EventSummary, JobRecord,
    Operations, RequestRecord, StoreError, StoreFuture, StoreResult, Waiting, Work,
};

fn parse_json(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

async fn job_records(
    client: &deadpool_postgres::Object,
    sql_where: &str,
    arg: &(dyn ToSql + Sync),
    limit: i64,
) -> StoreResult<Vec<JobRecord>> {
    let sql = format!(
        "SELECT id, event_id, rule, call_index, action, params::text, idempotency_key, state,
                attempts, next_at, last_error
         FROM jobs WHERE {sql_where} ORDER BY id LIMIT $2"
    );
    let rows = client.query(&sql, &[arg, &limit]).await.map_err(map_err)?;
    let mut jobs: Vec<JobRecord> = rows
        .iter()
        .map(|r| JobRecord {
            id: r.get(0),
            event_id: r.get(1),
            rule: r.get(2),
            call_index: r.get::<_, i32>(3) as u32,
            action: r.get(4),
            params: parse_json(r.get(5)),
            idempotency_key: r.get(6),
            state: r.get(7),
            attempts: r.get::<_, i32>(8) as u32,
            next_at_ms: r.get(9),
            last_error: r.get(10),
            attempt_log: Vec::new(),
        })
        .collect();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let attempts = sql::query(
        client,
        "SELECT job_id, n, started_at, finished_at, outcome, message FROM attempts
             WHERE job_id = ANY($1) ORDER BY job_id, n",
        &[&ids],
    )
    .await?;
    for r in attempts {
        let job_id: String = r.get(0);
        if let Some(job) = jobs.iter_mut().find(|j| j.id == job_id) {
            job.attempt_log.push(AttemptRecord {
                n: r.get::<_, i32>(1) as u32,
                started_at_ms: r.get(2),
                finished_at_ms: r.get(3),
                outcome: r.get(4),
                message: r.get(5),
            });
        }
    }
    Ok(jobs)
}

impl Operations for PgStore {
    fn list_events(&self, filter: EventFilter) -> StoreFuture<'_, Vec<EventSummary>> {
        Box::pin(async move {
            let client = self.client().await?;
            let (condition, args) = filter.sql(Dialect::Postgres);
            let sql = format!(
                "SELECT e.id, e.source, e.type, e.received_at, e.state, e.duplicates,
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id),
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id AND j.state = 'dead')
                 FROM events e WHERE {condition} ORDER BY e.id {} LIMIT {}",
                if filter.oldest_first() { "ASC" } else { "DESC" },
                filter.limit.max(1)
            );
            let refs: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows = client.query(&sql, &refs).await.map_err(map_err)?;
            Ok(rows
                .iter()
                .map(|r| EventSummary {
                    id: r.get(0),
                    source: r.get(1),
                    kind: r.get(2),
                    received_at_ms: r.get(3),
                    state: r.get(4),
                    duplicates: r.get::<_, i32>(5) as u64,
                    jobs: r.get::<_, i64>(6) as u64,
                    jobs_dead: r.get::<_, i64>(7) as u64,
                })
                .collect())
        })
    }

    fn show_event(&self, id: String) -> StoreFuture<'_, EventDetail> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = sql::query_opt(
                &client,
                "SELECT e.envelope::text, e.state, e.routings, e.routed_at, e.duplicates,
                            e.rule_runs::text, e.rules_version,
                            r.id, r.method, r.path, r.query, r.headers::text, r.body, r.verdict
                     FROM events e JOIN requests r ON r.id = e.request_id
                     WHERE e.id = $1",
                &[&id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no event {id}")))?;
            let headers: String = row.get(11);
            let body: Vec<u8> = row.get(12);
            let request = RequestRecord {
                id: row.get(7),
                method: row.get(8),
                path: row.get(9),
                query: row.get(10),
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: String::from_utf8_lossy(&body).into_owned(),
                verdict: row.get(13),
            };
            let jobs = job_records(&client, "event_id = $1", &id, 10_000).await?;
            Ok(EventDetail {
                envelope: parse_json(row.get(0)),
                state: row.get(1),
                routings: row.get::<_, i32>(2) as u32,
                routed_at_ms: row.get(3),
                duplicates: row.get::<_, i32>(4) as u64,
                rule_runs: parse_json(row.get(5)),
                rules_version: row.get(6),
                request,
                jobs,
            })
        })
    }

    fn replay(&self, id: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            // Routed again by this instance (the one asked).
            let n = sql::execute(
                &client,
                "UPDATE events SET state = 'pending', owner = $2 WHERE id = $1",
                &[&id, &self.instance],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no event {id}")));
            }
            notify(&client, Work::Events).await
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<JobRecord>> {
        Box::pin(async move {
            let client = self.client().await?;
            job_records(&client, "state = 'dead' AND $1", &true, limit as i64).await
        })
    }

    fn redrive(&self, id: Option<String>, now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            let n = sql::execute(
                &client,
                "UPDATE jobs SET state = 'pending', next_at = $2, series_start = attempts,
                                     finished_at = NULL
                     WHERE state = 'dead' AND ($1::text IS NULL OR id = $1)",
                &[&id, &now_ms],
            )
            .await?;
            if n == 0 {
                if let Some(id) = id {
                    return Err(StoreError::NotFound(format!("no dead letter {id}")));
                }
                return Ok(0);
            }
            notify(&client, Work::Jobs).await?;
            Ok(n)
        })
    }

    fn count_dead(&self, filter: DeadFilter) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = sql::query_one(
                &client,
                "SELECT COUNT(*) FROM jobs WHERE state = 'dead'
                    AND ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR strpos(last_error, $2) > 0)",
                &[&filter.action, &filter.error],
            )
            .await?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn redrive_matching(
        &self,
        filter: DeadFilter,
        limit: usize,
        now_ms: i64,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            let n = sql::execute(
                &client,
                "UPDATE jobs SET state = 'pending', next_at = $3, series_start = attempts, finished_at = NULL
                 WHERE id IN (SELECT id FROM jobs WHERE state = 'dead'
                    AND ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR strpos(last_error, $2) > 0)
                    ORDER BY id LIMIT $4)",
                &[&filter.action, &filter.error, &now_ms, &(limit as i64)],
            )
            .await?;
            if n > 0 {
                notify(&client, Work::Jobs).await?;
            }
            Ok(n)
        })
    }

    fn nth_newest_id(&self, bounds: EventFilter, n: usize) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            let client = self.client().await?;
            let (condition, args) = bounds.bounds().sql(Dialect::Postgres);
            let sql = format!(
                "SELECT e.id FROM events e WHERE {condition} ORDER BY e.id DESC LIMIT 1 OFFSET {}",
                n.max(1) - 1
            );
            let refs: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let row = client.query_opt(&sql, &refs).await.map_err(map_err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn waiting(&self) -> StoreFuture<'_, Waiting> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = sql::query_one(
                &client,
                "SELECT (SELECT MIN(created_at) FROM jobs WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM jobs WHERE state = 'dead')",
                &[],
            )
            .await?;
            Ok(Waiting {
                oldest_pending_job_ms: row.get(0),
                dead_letters: row.get::<_, i64>(1) as u64,
            })
        })
    }

    fn enable_action(&self, action: String, now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(map_err)?;
            tx.execute(
                "INSERT INTO action_states (action, state, until_ms, failures, reason, updated_at)
                 VALUES ($1, 'closed', NULL, 0, NULL, $2)
                 ON CONFLICT (action) DO UPDATE SET state = 'closed', until_ms = NULL,
                     failures = 0, reason = NULL, updated_at = EXCLUDED.updated_at",
                &[&action, &now_ms],
            )
            .await
            .map_err(map_err)?;
            let n = sql::execute(
                &tx,
                "UPDATE jobs SET next_at = $2
                     WHERE action = $1 AND state = 'pending' AND next_at > $2",
                &[&action, &now_ms],
            )
            .await?;
            notify(&tx, Work::Jobs).await?;
            tx.commit().await.map_err(map_err)?;
            Ok(n)
        })
    }
}
