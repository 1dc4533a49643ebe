//! What the two SQL backends share: the operators' side ([`Operations`]),
//! written once over [`SqlBackend`] (`sql_backend.rs`: the few things a
//! backend gives it). Statements are
//! one text for both dialects, with `$n` placeholders (the embedded store
//! runs them as `?n`, [`numbered_for_sqlite`]); where the dialects differ,
//! [`Dialect`] says how.
//!
//! The pipeline's statements are the backends' own (`sqlite/pipeline.rs`,
//! `postgres/pipeline.rs`, `postgres/jobs.rs`): they are the hot path, and
//! there the backends differ most (a writer thread and a journal; leases,
//! owners and `SKIP LOCKED`).

use std::borrow::Cow;

use super::{
    AttemptRecord, DeadFilter, Dialect, EventDetail, EventFilter, EventSummary, JobRecord,
    Operations, StoreError, StoreFuture, Waiting, Work,
};

pub(crate) use super::sql_backend::{SqlBackend, SqlRow, SqlValue, Statement};

/// The pipeline's statements both backends run in one text (the others
/// are each backend's, by the same names: `sqlite/sql.rs`,
/// `postgres/sql.rs`).
pub(crate) mod shared {
    /// Events waiting for routing and jobs waiting to run.
    pub const BACKLOG: &str = "SELECT (SELECT COUNT(*) FROM events WHERE state = 'pending'),
                                      (SELECT COUNT(*) FROM jobs WHERE state = 'pending')";

    use super::{SqlBackend, SqlValue, Statement};
    use crate::store::{ActionState, Backlog, StoreResult};

    /// Every action's gate as last stored.
    pub const ACTION_STATES: &str = "SELECT action, state, until_ms, failures, reason, updated_at
        FROM action_states ORDER BY action";

    /// Records an action's gate ($1 action .. $6 when).
    pub const SAVE_ACTION_STATE: &str =
        "INSERT INTO action_states (action, state, until_ms, failures, reason, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (action) DO UPDATE SET state = excluded.state,
             until_ms = excluded.until_ms, failures = excluded.failures,
             reason = excluded.reason, updated_at = excluded.updated_at";

    /// Retention: the next window of a table's ids after the sweep's
    /// cursor ($1) and below its floor ($2), at most $3: how many, and the
    /// last.
    pub fn sweep_window(table: &str) -> String {
        format!(
            "SELECT COUNT(*), MAX(id) FROM
                (SELECT id FROM {table} WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3) w"
        )
    }

    /// Retention: the events of a window ($1, $2] that are done with —
    /// every terminal state (routed, stale, a handshake) with no job still
    /// to run. Their jobs and attempts go with them (`ON DELETE CASCADE`).
    ///
    /// The checks for what still needs a row are scalar subqueries, run
    /// per row through their index: even a generic plan (PostgreSQL's for
    /// a prepared statement, blind to the values) reads only the window.
    pub const PRUNE_EVENTS: &str = "DELETE FROM events WHERE id > $1 AND id <= $2
        AND state IN ('routed', 'stale', 'handshake')
        AND NOT (SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id
                                AND j.state IN ('pending', 'running')))";

    /// Retention: the requests of a window ($1, $2] none of whose events
    /// is left (a duplicate delivery's had none).
    pub const PRUNE_REQUESTS: &str = "DELETE FROM requests WHERE id > $1 AND id <= $2
        AND NOT (SELECT EXISTS (SELECT 1 FROM events e WHERE e.request_id = requests.id))";

    pub async fn backlog<B: SqlBackend>(b: &B) -> StoreResult<Backlog> {
        let rows = b.rows(Statement::new(BACKLOG, vec![])).await?;
        Ok(Backlog {
            unrouted_events: rows[0].int(0) as u64,
            pending_jobs: rows[0].int(1) as u64,
        })
    }

    pub async fn action_states<B: SqlBackend>(b: &B) -> StoreResult<Vec<ActionState>> {
        let rows = b.rows(Statement::new(ACTION_STATES, vec![])).await?;
        Ok(rows
            .iter()
            .map(|r| ActionState {
                action: r.text(0),
                state: r.text(1),
                until_ms: r.opt_int(2),
                failures: r.int(3) as u32,
                reason: r.opt_text(4),
                updated_at_ms: r.int(5),
            })
            .collect())
    }

    pub async fn save_action_state<B: SqlBackend>(b: &B, s: ActionState) -> StoreResult<()> {
        let params: Vec<SqlValue> = vec![
            s.action.into(),
            s.state.into(),
            s.until_ms.into(),
            i64::from(s.failures).into(),
            s.reason.into(),
            s.updated_at_ms.into(),
        ];
        b.writes(vec![Statement::new(SAVE_ACTION_STATE, params)], None)
            .await?;
        Ok(())
    }
}

/// `$n` placeholders as SQLite numbers them (`?n`).
pub(crate) fn numbered_for_sqlite(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let numbered = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if numbered { '?' } else { c });
    }
    Cow::Owned(out)
}

/// `column` contains `param` (as text, case and all).
fn contains(dialect: Dialect, column: &str, param: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("instr({column}, {param}) > 0"),
        Dialect::Postgres => format!("strpos({column}, {param}) > 0"),
    }
}

const JOB_COLUMNS: &str = "id, event_id, rule, call_index, action, params, idempotency_key, \
                           state, attempts, next_at, last_error";

/// Jobs (as `show`, `dead-letters` list them) matching `condition` over
/// `jobs` (binding `params` from `$1`), by id, at most `limit`, with their
/// attempts.
async fn job_records<B: SqlBackend>(
    b: &B,
    condition: &str,
    mut params: Vec<SqlValue>,
    limit: i64,
) -> Result<Vec<JobRecord>, StoreError> {
    let matching = format!(
        "FROM jobs WHERE {condition} ORDER BY id LIMIT ${}",
        params.len() + 1
    );
    params.push(limit.into());
    let rows = b
        .rows(Statement::new(
            format!("SELECT {JOB_COLUMNS} {matching}"),
            params.clone(),
        ))
        .await?;
    let mut jobs: Vec<JobRecord> = rows
        .iter()
        .map(|r| JobRecord {
            id: r.text(0),
            event_id: r.text(1),
            rule: r.text(2),
            call_index: r.int(3) as u32,
            action: r.text(4),
            params: r.json(5),
            idempotency_key: r.text(6),
            state: r.text(7),
            attempts: r.int(8) as u32,
            next_at_ms: r.int(9),
            last_error: r.opt_text(10),
            attempt_log: Vec::new(),
        })
        .collect();
    // The attempts of the jobs listed, in one read.
    let attempts = b
        .rows(Statement::new(
            format!(
                "SELECT job_id, n, started_at, finished_at, outcome, message FROM attempts
                 WHERE job_id IN (SELECT id {matching}) ORDER BY job_id, n"
            ),
            params,
        ))
        .await?;
    for r in attempts {
        let job_id = r.text(0);
        if let Some(job) = jobs.iter_mut().find(|j| j.id == job_id) {
            job.attempt_log.push(AttemptRecord {
                n: r.int(1) as u32,
                started_at_ms: r.int(2),
                finished_at_ms: r.int(3),
                outcome: r.text(4),
                message: r.opt_text(5),
            });
        }
    }
    Ok(jobs)
}

/// The dead letters a filter matches ($1 its action, $2 part of the error).
fn dead_matching(dialect: Dialect) -> String {
    format!(
        "state = 'dead' AND (CAST($1 AS TEXT) IS NULL OR action = $1)
         AND (CAST($2 AS TEXT) IS NULL OR {})",
        contains(dialect, "last_error", "$2")
    )
}

fn filter_params(filter: &DeadFilter) -> Vec<SqlValue> {
    vec![filter.action.clone().into(), filter.error.clone().into()]
}

impl<B: SqlBackend> Operations for B {
    fn list_events(&self, filter: EventFilter) -> StoreFuture<'_, Vec<EventSummary>> {
        let (condition, args) = filter.sql(B::DIALECT);
        let envelopes = filter.envelopes;
        let read = Statement::new(
            format!(
                "SELECT e.id, e.source, e.type, e.received_at, e.state, e.duplicates,
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id),
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id AND j.state = 'dead'){}
                 FROM events e WHERE {condition} ORDER BY e.id {} LIMIT {}",
                if filter.envelopes {
                    format!(", {}", B::DIALECT.envelope())
                } else {
                    String::new()
                },
                if filter.oldest_first() { "ASC" } else { "DESC" },
                filter.limit.max(1)
            ),
            args.into_iter().map(SqlValue::Text).collect(),
        );
        Box::pin(async move {
            Ok(self
                .rows(read)
                .await?
                .iter()
                .map(|r| EventSummary {
                    id: r.text(0),
                    source: r.text(1),
                    kind: r.text(2),
                    received_at_ms: r.int(3),
                    state: r.text(4),
                    duplicates: r.int(5) as u64,
                    jobs: r.int(6) as u64,
                    jobs_dead: r.int(7) as u64,
                    envelope: envelopes.then(|| {
                        serde_json::from_str(&r.text(8)).unwrap_or(serde_json::Value::Null)
                    }),
                })
                .collect())
        })
    }

    fn nth_newest_id(&self, bounds: EventFilter, n: usize) -> StoreFuture<'_, Option<String>> {
        let (condition, args) = bounds.bounds().sql(B::DIALECT);
        let read = Statement::new(
            format!(
                "SELECT e.id FROM events e WHERE {condition} ORDER BY e.id DESC LIMIT 1 OFFSET {}",
                n.max(1) - 1
            ),
            args.into_iter().map(SqlValue::Text).collect(),
        );
        Box::pin(async move { Ok(self.rows(read).await?.first().map(|r| r.text(0))) })
    }

    fn show_event(&self, id: String) -> StoreFuture<'_, EventDetail> {
        Box::pin(async move {
            let rows = self
                .rows(Statement::new(
                    format!(
                        "SELECT {}, e.state, e.routings, e.routed_at, e.duplicates, e.rule_runs,
                                e.rules_version, e.request_id, e.held
                         FROM events e WHERE e.id = $1",
                        B::DIALECT.envelope()
                    ),
                    vec![id.clone().into()],
                ))
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| StoreError::NotFound(format!("no event {id}")))?;
            let request = self.request_record(row.text(7)).await?;
            let jobs = job_records(self, "event_id = $1", vec![id.into()], 10_000).await?;
            Ok(EventDetail {
                envelope: row.json(0),
                state: row.text(1),
                routings: row.int(2) as u32,
                routed_at_ms: row.opt_int(3),
                duplicates: row.int(4) as u64,
                rule_runs: row.json(5),
                rules_version: row.opt_int(6),
                held: row.opt_text(8),
                request,
                jobs,
            })
        })
    }

    fn replay(&self, id: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let replay = self.replay_statement(id.clone());
            if self.writes(vec![replay], Some(Work::Events)).await?[0] == 0 {
                return Err(StoreError::NotFound(format!("no event {id}")));
            }
            Ok(())
        })
    }

    fn schema_drift(
        &self,
        source: Option<String>,
        kind: Option<String>,
    ) -> StoreFuture<'_, Vec<crate::store::DriftRow>> {
        Box::pin(super::catalog::drift(self, source, kind))
    }

    fn release_held(
        &self,
        id: Option<String>,
        source: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let ids = match id {
                Some(id) => vec![id],
                None => super::catalog::held(self, source, limit).await?,
            };
            super::catalog::release(self, ids).await
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<JobRecord>> {
        Box::pin(async move { job_records(self, "state = 'dead'", vec![], limit as i64).await })
    }

    fn waiting_for_rate(&self) -> StoreFuture<'_, Vec<(String, u64)>> {
        Box::pin(async move {
            // Read from the partial index of deferred jobs: as long as
            // what waits, whatever the table holds.
            let rows = self
                .rows(Statement::new(
                    "SELECT action, count(*) FROM jobs
                     WHERE state = 'pending' AND rate_slot IS NOT NULL GROUP BY action",
                    vec![],
                ))
                .await?;
            Ok(rows.iter().map(|r| (r.text(0), r.int(1) as u64)).collect())
        })
    }

    fn redrive(&self, id: Option<String>, now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let redrive = Statement::new(
                "UPDATE jobs SET state = 'pending', next_at = $2, series_start = attempts,
                                 finished_at = NULL
                 WHERE state = 'dead' AND (CAST($1 AS TEXT) IS NULL OR id = $1)",
                vec![id.clone().into(), now_ms.into()],
            );
            let n = self.writes(vec![redrive], Some(Work::Jobs)).await?[0];
            match id {
                Some(id) if n == 0 => Err(StoreError::NotFound(format!("no dead letter {id}"))),
                _ => Ok(n),
            }
        })
    }

    fn enable_action(&self, action: String, now_ms: i64) -> StoreFuture<'_, u64> {
        let close = Statement::new(
            "INSERT INTO action_states (action, state, until_ms, failures, reason, updated_at)
             VALUES ($1, 'closed', NULL, 0, NULL, $2)
             ON CONFLICT (action) DO UPDATE SET state = 'closed', until_ms = NULL,
                 failures = 0, reason = NULL, updated_at = excluded.updated_at",
            vec![action.clone().into(), now_ms.into()],
        );
        let due_now = Statement::new(
            "UPDATE jobs SET next_at = $2 WHERE action = $1 AND state = 'pending' AND next_at > $2",
            vec![action.into(), now_ms.into()],
        );
        Box::pin(async move { Ok(self.writes(vec![close, due_now], Some(Work::Jobs)).await?[1]) })
    }

    fn count_dead(&self, filter: DeadFilter) -> StoreFuture<'_, u64> {
        let read = Statement::new(
            format!(
                "SELECT COUNT(*) FROM jobs WHERE {}",
                dead_matching(B::DIALECT)
            ),
            filter_params(&filter),
        );
        Box::pin(async move { Ok(self.rows(read).await?[0].int(0) as u64) })
    }

    fn redrive_matching(
        &self,
        filter: DeadFilter,
        limit: usize,
        now_ms: i64,
    ) -> StoreFuture<'_, u64> {
        let mut params = filter_params(&filter);
        params.extend([now_ms.into(), (limit as i64).into()]);
        let redrive = Statement::new(
            format!(
                "UPDATE jobs SET state = 'pending', next_at = $3, series_start = attempts,
                                 finished_at = NULL
                 WHERE id IN (SELECT id FROM jobs WHERE {} ORDER BY id LIMIT $4)",
                dead_matching(B::DIALECT)
            ),
            params,
        );
        Box::pin(async move { Ok(self.writes(vec![redrive], Some(Work::Jobs)).await?[0]) })
    }

    fn waiting(&self) -> StoreFuture<'_, Waiting> {
        let read = Statement::new(
            "SELECT (SELECT MIN(created_at) FROM jobs WHERE state = 'pending'),
                    (SELECT COUNT(*) FROM jobs WHERE state = 'dead'),
                    (SELECT COUNT(*) FROM jobs WHERE state = 'running')",
            vec![],
        );
        Box::pin(async move {
            let rows = self.rows(read).await?;
            Ok(Waiting {
                oldest_pending_job_ms: rows[0].opt_int(0),
                dead_letters: rows[0].int(1) as u64,
                running_jobs: rows[0].int(2) as u64,
            })
        })
    }
}
