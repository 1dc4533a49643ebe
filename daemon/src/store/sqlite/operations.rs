//! The operators' side of the SQLite store: the read models of events,
//! jobs and dead letters, replays, redrives and enabling actions (the
//! [`Operations`] implementation).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::*;

pub(super) fn job_records(
    conn: &Connection,
    sql_where: &str,
    arg: &dyn rusqlite::ToSql,
    limit: i64,
) -> StoreResult<Vec<JobRecord>> {
    let sql = format!(
        "SELECT id, event_id, rule, call_index, action, params, idempotency_key, state, attempts,
                next_at, last_error
         FROM jobs WHERE {sql_where} ORDER BY id LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql).map_err(map_err)?;
    let mut jobs = stmt
        .query_map(params![arg, limit], |r| {
            Ok(JobRecord {
                id: r.get(0)?,
                event_id: r.get(1)?,
                rule: r.get(2)?,
                call_index: r.get::<_, i64>(3)? as u32,
                action: r.get(4)?,
                params: parse_json(&r.get::<_, String>(5)?),
                idempotency_key: r.get(6)?,
                state: r.get(7)?,
                attempts: r.get::<_, i64>(8)? as u32,
                next_at_ms: r.get(9)?,
                last_error: r.get(10)?,
                attempt_log: Vec::new(),
            })
        })
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)?;
    let mut log = conn
        .prepare_cached(
            "SELECT n, started_at, finished_at, outcome, message FROM attempts WHERE job_id = ?1 ORDER BY n",
        )
        .map_err(map_err)?;
    for job in &mut jobs {
        job.attempt_log = log
            .query_map(params![job.id], |r| {
                Ok(AttemptRecord {
                    n: r.get::<_, i64>(0)? as u32,
                    started_at_ms: r.get(1)?,
                    finished_at_ms: r.get(2)?,
                    outcome: r.get(3)?,
                    message: r.get(4)?,
                })
            })
            .map_err(map_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)?;
    }
    Ok(jobs)
}

impl Operations for SqliteStore {
    fn list_events(&self, filter: EventFilter) -> StoreFuture<'_, Vec<EventSummary>> {
        self.read(move |conn| {
            let (condition, args) = filter.sql(Dialect::Sqlite);
            let sql = format!(
                "SELECT e.id, e.source, e.type, e.received_at, e.state, e.duplicates,
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id),
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id AND j.state = 'dead')
                 FROM events e WHERE {condition} ORDER BY e.id {} LIMIT {}",
                if filter.oldest_first() { "ASC" } else { "DESC" },
                filter.limit.max(1)
            );
            let mut stmt = conn.prepare(&sql).map_err(map_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok(EventSummary {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        kind: r.get(2)?,
                        received_at_ms: r.get(3)?,
                        state: r.get(4)?,
                        duplicates: r.get::<_, i64>(5)? as u64,
                        jobs: r.get::<_, i64>(6)? as u64,
                        jobs_dead: r.get::<_, i64>(7)? as u64,
                    })
                })
                .map_err(map_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err)?;
            Ok(rows)
        })
    }

    fn count_dead(&self, filter: DeadFilter) -> StoreFuture<'_, u64> {
        self.read(move |conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'dead'
                        AND (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR instr(last_error, ?2) > 0)",
                    params![filter.action, filter.error],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
    }

    fn redrive_matching(
        &self,
        filter: DeadFilter,
        limit: usize,
        now_ms: i64,
    ) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE jobs SET state = 'pending', next_at = ?3, series_start = attempts, finished_at = NULL
                     WHERE id IN (SELECT id FROM jobs WHERE state = 'dead'
                        AND (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR instr(last_error, ?2) > 0)
                        ORDER BY id LIMIT ?4)",
                    params![filter.action, filter.error, now_ms, limit as i64],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
    }

    fn nth_newest_id(&self, bounds: EventFilter, n: usize) -> StoreFuture<'_, Option<String>> {
        self.read(move |conn| {
            let (condition, args) = bounds.bounds().sql(Dialect::Sqlite);
            let sql = format!(
                "SELECT e.id FROM events e WHERE {condition} ORDER BY e.id DESC LIMIT 1 OFFSET {}",
                n.max(1) - 1
            );
            conn.query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| r.get(0))
                .optional()
                .map_err(map_err)
        })
    }

    fn waiting(&self) -> StoreFuture<'_, Waiting> {
        self.read(|conn| {
            let oldest_pending_job_ms = conn
                .query_row(
                    "SELECT MIN(created_at) FROM jobs WHERE state = 'pending'",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map_err(map_err)?;
            let dead: i64 = conn
                .query_row("SELECT COUNT(*) FROM jobs WHERE state = 'dead'", [], |r| {
                    r.get(0)
                })
                .map_err(map_err)?;
            Ok(Waiting {
                oldest_pending_job_ms,
                dead_letters: dead as u64,
            })
        })
    }

    fn enable_action(&self, action: String, now_ms: i64) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO action_states (action, state, until_ms, failures, reason, updated_at)
                 VALUES (?1, 'closed', NULL, 0, NULL, ?2)",
                params![action, now_ms],
            )
            .map_err(map_err)?;
            let n = conn
                .execute(
                    "UPDATE jobs SET next_at = ?2 WHERE action = ?1 AND state = 'pending' AND next_at > ?2",
                    params![action, now_ms],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
    }

    fn show_event(&self, id: String) -> StoreFuture<'_, EventDetail> {
        let journal_dir = self.journal_dir.clone();
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT envelope, state, routings, routed_at, duplicates, rule_runs, request_id,
                            rules_version
                     FROM events WHERE id = ?1",
                    params![id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no event {id}")))?;
            let (envelope, state, routings, routed_at, duplicates, rule_runs, request_id, version) =
                row;
            let request = super::ingest::request_record(conn, &journal_dir, &request_id)?;
            let jobs = job_records(conn, "event_id = ?1", &id, 10_000)?;
            Ok(EventDetail {
                envelope: parse_json(&envelope),
                state,
                routings: routings as u32,
                routed_at_ms: routed_at,
                duplicates: duplicates as u64,
                rule_runs: rule_runs.map(|r| parse_json(&r)).unwrap_or(Value::Null),
                rules_version: version,
                request,
                jobs,
            })
        })
    }

    fn replay(&self, id: String) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE events SET state = 'pending' WHERE id = ?1",
                    params![id],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no event {id}")));
            }
            Ok(())
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<JobRecord>> {
        self.read(move |conn| job_records(conn, "state = 'dead' AND ?1 = ?1", &1i64, limit as i64))
    }

    fn redrive(&self, id: Option<String>, now_ms: i64) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            let n = match &id {
                Some(id) => conn.execute(
                    "UPDATE jobs SET state = 'pending', next_at = ?2, series_start = attempts, finished_at = NULL
                     WHERE id = ?1 AND state = 'dead'",
                    params![id, now_ms],
                ),
                None => conn.execute(
                    "UPDATE jobs SET state = 'pending', next_at = ?1, series_start = attempts, finished_at = NULL
                     WHERE state = 'dead'",
                    params![now_ms],
                ),
            }
            .map_err(map_err)?;
            if n == 0 {
                if let Some(id) = id {
                    return Err(StoreError::NotFound(format!("no dead letter {id}")));
                }
            }
            Ok(n as u64)
        })
    }
}
