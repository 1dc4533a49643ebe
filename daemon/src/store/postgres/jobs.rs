//! The job queue of the PostgreSQL store: leased claims (with `FOR UPDATE
//! SKIP LOCKED`), ordered claims (`order_by`: one job of a key at a time,
//! in the order the events came, across instances), and attempts recorded
//! only by the instance holding the job.

use super::sql;
use std::sync::LazyLock;

use super::{map_err, notify, PgStore, DB_NOW_MS, ORDER_LOCK};
use crate::store::{envelope_of, AttemptRow, ClaimedJob, FinishedAttempt, StoreResult, Work};

/// The columns a claim returns, as [`claimed`] reads them.
const CLAIMED: &str = "j.id, j.event_id, j.rule, j.action, j.params::text, j.idempotency_key,
     j.attempts, j.series_start, j.next_at,
     (SELECT e.envelope::text FROM events e WHERE e.id = j.event_id)";

/// Claimed jobs from the rows of a claim, in the order they fell due.
fn claimed(rows: Vec<tokio_postgres::Row>) -> Vec<ClaimedJob> {
    let mut jobs: Vec<(i64, ClaimedJob)> = rows
        .into_iter()
        .map(|r| {
            let attempts: i32 = r.get(6);
            let series_start: i32 = r.get(7);
            let params: String = r.get(4);
            (
                r.get::<_, i64>(8),
                ClaimedJob {
                    id: r.get(0),
                    event_id: r.get(1),
                    rule: r.get(2),
                    action: r.get(3),
                    params: serde_json::from_str(&params).unwrap_or_default(),
                    idempotency_key: r.get(5),
                    attempt: attempts as u32,
                    series_attempt: (attempts - series_start).max(1) as u32,
                    event: envelope_of(r.get::<_, Option<String>>(9).unwrap_or_default()),
                },
            )
        })
        .collect();
    // RETURNING keeps no order: due first, as claimed.
    jobs.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    jobs.into_iter().map(|(_, j)| j).collect()
}

/// Claims due jobs without an order key ($1 now, $2 how many, $3 this
/// instance, $4 the lease).
pub(super) static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, owner = $3,
                              lease_until = {DB_NOW_MS} + $4
            FROM (SELECT id FROM jobs
                  WHERE state = 'pending' AND next_at <= $1 AND order_key IS NULL
                  ORDER BY next_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) c
            WHERE j.id = c.id
            RETURNING {CLAIMED}"
    )
});

/// Claims each order key's next job ($1 now, $2 how many, $3 this instance,
/// $4 the lease): see `claim_ordered`.
pub(super) static CLAIM_ORDERED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, owner = $3,
                              lease_until = {DB_NOW_MS} + $4
            FROM (SELECT o.id FROM jobs o
                  WHERE o.state = 'pending' AND o.order_key IS NOT NULL AND o.next_at <= $1
                    AND o.order_seq < COALESCE(
                        (SELECT MIN(seq) FROM events WHERE state = 'pending'),
                        9223372036854775807)
                    AND NOT EXISTS (
                        SELECT 1 FROM jobs e
                        WHERE e.action = o.action AND e.order_key = o.order_key
                          AND e.state IN ('pending', 'running') AND e.id <> o.id
                          AND (e.state = 'running'
                               OR (e.next_at <= $1
                                   AND (e.order_seq, e.seq) < (o.order_seq, o.seq))))
                  ORDER BY o.order_seq, o.seq LIMIT $2 FOR UPDATE SKIP LOCKED) c
            WHERE j.id = c.id
            RETURNING {CLAIMED}"
    )
});

/// Whether any job of an ordered action is due ($1 now).
pub(super) const ORDERED_DUE: &str = "SELECT EXISTS (SELECT 1 FROM jobs
    WHERE order_key IS NOT NULL AND state = 'pending' AND next_at <= $1)";

/// Taken before claiming ordered jobs.
pub(super) const ORDER_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

/// Records an attempt, fenced on the job's owner: says whether the job has
/// an order key, or nothing if this instance no longer holds it.
pub(super) const FINISH: &str = "WITH j AS (
        UPDATE jobs SET state = $2, next_at = COALESCE($3, next_at), finished_at = $4,
                        last_error = COALESCE($5, last_error),
                        owner = NULL, lease_until = NULL
        WHERE id = $1 AND owner = $6 AND state = 'running'
        RETURNING id, order_key),
    a AS (
        INSERT INTO attempts (job_id, n, started_at, finished_at, outcome, message)
        SELECT id, $7, $8, $9, $10, $5 FROM j
        ON CONFLICT (job_id, n) DO UPDATE SET
            started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
            outcome = EXCLUDED.outcome, message = EXCLUDED.message)
    SELECT order_key IS NOT NULL FROM j";

impl PgStore {
    pub(super) async fn claim_tx(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
        let mut jobs = self.claim_ordered(now_ms, limit).await?;
        let client = self.relaxed().await?;
        let rows = sql::query(
            &client,
            &CLAIM,
            &[
                &now_ms,
                &((limit - jobs.len()) as i64),
                &self.instance,
                &self.lease_ms,
            ],
        )
        .await?;
        jobs.extend(claimed(rows));
        Ok(jobs)
    }

    /// Claims due jobs of ordered actions, each only if it is its key's
    /// next: no job of the key running, none before it due, and every event
    /// taken in before its own routed (a later event's job never overtakes
    /// one still to be made). Under a transaction-scoped advisory lock, so
    /// that instances claim ordered jobs one at a time, each seeing what the
    /// one before claimed; skipped with one cheap look when none is due.
    async fn claim_ordered(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
        let mut client = self.relaxed().await?;
        let due: bool = sql::query_one(&client, ORDERED_DUE, &[&now_ms])
            .await?
            .get(0);
        if !due || limit == 0 {
            return Ok(Vec::new());
        }
        let tx = client.transaction().await.map_err(map_err)?;
        sql::execute(&tx, ORDER_LOCK_SQL, &[&ORDER_LOCK]).await?;
        let rows = sql::query(
            &tx,
            &CLAIM_ORDERED,
            &[&now_ms, &(limit as i64), &self.instance, &self.lease_ms],
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(claimed(rows))
    }

    pub(super) async fn finish_tx(&self, a: FinishedAttempt) -> StoreResult<()> {
        let AttemptRow {
            outcome,
            message,
            state,
            next_at_ms: next_at,
            finished_at_ms: finished_at,
        } = a.row();
        let client = self.relaxed().await?;
        // Fenced: recorded only by the instance the job is leased to, while
        // it runs. A job handed back from this instance (its heartbeat
        // stopped too long) belongs to whoever took it since.
        let recorded = sql::query_opt(
            &client,
            FINISH,
            &[
                &a.job_id,
                &state,
                &next_at,
                &finished_at,
                &message,
                &self.instance,
                &(a.attempt as i32),
                &a.started_at_ms,
                &a.finished_at_ms,
                &outcome,
            ],
        )
        .await?;
        match recorded.map(|r| r.get::<_, bool>(0)) {
            None => tracing::warn!(
                job_id = %a.job_id,
                "an attempt finished after its job was handed to another instance; not recorded"
            ),
            // The next job of its key may run now, perhaps on another instance.
            Some(true) if self.notice_due() => notify(&client, Work::Jobs).await?,
            Some(_) => {}
        }
        Ok(())
    }
}
