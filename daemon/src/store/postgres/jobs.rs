//! The job queue of the PostgreSQL store: leased claims (with `FOR UPDATE
//! SKIP LOCKED`), ordered claims (`order_by`: one job of a key at a time,
//! in the order the events came, across instances), and attempts recorded
//! only by the instance holding the job.

use super::run;

use super::book::{Booked, Entry};
use super::{map_err, notify, sql, PgStore, ORDER_LOCK};
use crate::store::{envelope_of, ClaimedJob, FinishedAttempt, StoreError, StoreResult, Work};

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
                    order_key: r.get(10),
                    rate_slot: r.get(11),
                },
            )
        })
        .collect();
    // RETURNING keeps no order: due first, as claimed.
    jobs.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    jobs.into_iter().map(|(_, j)| j).collect()
}

impl PgStore {
    pub(super) async fn claim_tx(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
        let mut jobs = self.claim_ordered(now_ms, limit).await?;
        let client = self.relaxed().await?;
        let rows = run::query(
            &client,
            &sql::CLAIM,
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
        let due: bool = run::query_one(&client, sql::ORDERED_DUE, &[&now_ms])
            .await?
            .get(0);
        if !due || limit == 0 {
            return Ok(Vec::new());
        }
        let tx = client.transaction().await.map_err(map_err)?;
        run::execute(&tx, sql::TAKE_ORDER_LOCK, &[&ORDER_LOCK]).await?;
        let rows = run::query(
            &tx,
            &sql::CLAIM_ORDERED,
            &[&now_ms, &(limit as i64), &self.instance, &self.lease_ms],
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(claimed(rows))
    }

    /// An attempt's record, in the next bookkeeping group (`book.rs`),
    /// fenced: recorded only by the instance the job is leased to, while it
    /// runs. A job handed back from this instance (its heartbeat stopped
    /// too long) belongs to whoever took it since.
    pub(super) async fn finish_tx(&self, a: FinishedAttempt) -> StoreResult<()> {
        let job_id = a.job_id.clone();
        let Booked::Finished(recorded) = self.book.submit(Entry::Finish(a)).await? else {
            return Err(StoreError::Other(
                "an attempt was booked as a routing".into(),
            ));
        };
        match recorded {
            None => tracing::warn!(
                job_id = %job_id,
                "an attempt finished after its job was handed to another instance; not recorded"
            ),
            // The next job of its key may run now, perhaps on another instance.
            Some(true) if self.notice_due() => notify(&self.relaxed().await?, Work::Jobs).await?,
            Some(_) => {}
        }
        Ok(())
    }
}
