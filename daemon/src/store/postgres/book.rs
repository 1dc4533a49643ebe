//! The pipeline's bookkeeping in groups (`group.rs`): the routings and the
//! attempts' records of concurrent callers (a batch of routed events, the
//! dispatcher's finished attempts) in one transaction on the relaxed pool,
//! one commit: a group's routings one statement
//! ([`ROUTE`](super::sql::ROUTE)), its attempts one statement
//! ([`FINISH`](super::sql::FINISH)) — the same statements that record a
//! lone routing or attempt. A group that fails on a statement is done again
//! one entry at a time.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Object, Pool};
use futures_util::future::{try_join, try_join_all};
use tokio_postgres::types::Json;

use super::group::retry_alone;
use super::{map_err, pool_err, run, sql};
use crate::store::{FinishedAttempt, Routing, StoreError, StoreResult};

/// A routing to record, or an attempt's outcome.
pub(super) enum Entry {
    Route(Routing),
    Finish(FinishedAttempt),
}

/// What the database said of an entry.
pub(super) enum Booked {
    /// Whether the event was pending (else it was routed already), the
    /// jobs claimed with it, how many were stored unclaimed; and the
    /// routing handed back.
    Routed {
        marked: bool,
        running: Vec<String>,
        unclaimed: i64,
        routing: Routing,
    },
    /// Whether the job has an order key, or none if this instance no
    /// longer held it (not recorded).
    Finished(Option<bool>),
}

/// What an entry's statement returned, before the entry is handed back.
enum Said {
    Routed(bool, Vec<String>, i64),
    Finished(Option<bool>),
}

/// Who is booking: this instance and its lease.
#[derive(Clone)]
pub(super) struct Booker {
    pub(super) pool: Pool,
    pub(super) instance: String,
    pub(super) lease_ms: i64,
}

impl Booker {
    /// The bookkeeping lanes' work: a group in one transaction, or one by
    /// one if that fails on a statement.
    pub(super) async fn book(self, entries: Vec<Entry>) -> Vec<StoreResult<Booked>> {
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                let e = pool_err(e);
                return entries.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let said = match entries.len() {
            1 => self.each_alone(&client, &entries).await,
            _ => match self.together(&mut client, &entries).await {
                Ok(said) => said.into_iter().map(Ok).collect(),
                Err(e) if retry_alone(&e) => {
                    tracing::debug!(
                        "store: a group of {} routings and attempts failed ({e}); each alone",
                        entries.len()
                    );
                    self.each_alone(&client, &entries).await
                }
                Err(e) => entries.iter().map(|_| Err(e.clone())).collect(),
            },
        };
        entries
            .into_iter()
            .zip(said)
            .map(|(entry, said)| {
                Ok(match (entry, said?) {
                    (Entry::Route(routing), Said::Routed(marked, running, unclaimed)) => {
                        Booked::Routed {
                            marked,
                            running,
                            unclaimed,
                            routing,
                        }
                    }
                    (_, Said::Finished(ordered)) => Booked::Finished(ordered),
                    (Entry::Finish(_), Said::Routed(..)) => {
                        unreachable!("an attempt is not routed")
                    }
                })
            })
            .collect()
    }

    /// A group in one transaction, one commit.
    async fn together(&self, client: &mut Object, entries: &[Entry]) -> StoreResult<Vec<Said>> {
        let tx = client.transaction().await.map_err(map_err)?;
        let said = self.say(&tx, entries).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(said)
    }

    /// Each entry by itself, its statements their own transaction.
    async fn each_alone(
        &self,
        client: &impl GenericClient,
        entries: &[Entry],
    ) -> Vec<StoreResult<Said>> {
        let mut said = Vec::with_capacity(entries.len());
        for one in entries.chunks(1) {
            said.push(self.say(client, one).await.map(|mut s| s.remove(0)));
        }
        said
    }

    /// The entries' statements on `client`, pipelined: the routings as one
    /// statement (one each if an event is routed twice: each must see the
    /// other's mark), then the attempts as one. Rows are locked in one
    /// order — events by id, then jobs by id — so that two instances'
    /// groups never wait on each other in a circle.
    async fn say(&self, client: &impl GenericClient, entries: &[Entry]) -> StoreResult<Vec<Said>> {
        let mut routings = Vec::new();
        let mut attempts = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match entry {
                Entry::Route(r) => routings.push((i, r)),
                Entry::Finish(a) => attempts.push((i, a)),
            }
        }
        routings.sort_by(|a, b| a.1.event_id.cmp(&b.1.event_id));
        attempts.sort_by(|a, b| a.1.job_id.cmp(&b.1.job_id));
        let routed_twice = routings
            .windows(2)
            .any(|w| w[0].1.event_id == w[1].1.event_id);
        let statements: Vec<&[(usize, &Routing)]> = match routed_twice {
            true => routings.chunks(1).collect(),
            false if routings.is_empty() => Vec::new(),
            false => vec![&routings[..]],
        };
        let (routed, recorded) = try_join(
            try_join_all(statements.iter().map(|r| self.route(client, r))),
            self.finish(client, &attempts),
        )
        .await?;
        let mut out: Vec<Option<Said>> = entries.iter().map(|_| None).collect();
        for (routings, (marked, running, unclaimed)) in statements.into_iter().zip(routed) {
            for (i, r) in routings {
                let claimed = r
                    .jobs
                    .iter()
                    .filter(|j| running.contains(&j.id))
                    .map(|j| j.id.clone())
                    .collect();
                out[*i] = Some(Said::Routed(
                    marked.contains(&r.event_id),
                    claimed,
                    unclaimed,
                ));
            }
        }
        for (i, a) in &attempts {
            out[*i] = Some(Said::Finished(recorded.get(&a.job_id).copied()));
        }
        out.into_iter()
            .map(|said| said.ok_or_else(|| StoreError::Other("an entry went unbooked".into())))
            .collect()
    }

    /// Events' routings and their jobs as one statement ([`sql::ROUTE`]):
    /// the events that were pending (now routed), the jobs claimed with
    /// them, and how many were stored unclaimed (in all).
    async fn route(
        &self,
        client: &impl GenericClient,
        routings: &[(usize, &Routing)],
    ) -> StoreResult<(HashSet<String>, HashSet<String>, i64)> {
        let mut events = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut jobs = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut more = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (_, r) in routings {
            events.0.push(r.event_id.as_str());
            events.1.push(r.routed_at_ms);
            events.2.push(Json(&r.rule_runs));
            events.3.push(r.rules_version as i64);
            let offered = r.claim_with.is_some();
            for job in &r.jobs {
                jobs.0.push(r.event_id.as_str());
                jobs.1.push(job.id.as_str());
                jobs.2.push(job.rule.as_str());
                jobs.3.push(job.call_index as i32);
                jobs.4.push(job.action.as_str());
                more.0.push(Json(&job.params));
                more.1.push(job.idempotency_key.as_str());
                more.2.push(offered && job.order_key.is_none());
                more.3.push(job.order_key.as_deref());
            }
        }
        let row = run::query_one(
            client,
            &sql::ROUTE,
            &[
                &events.0,
                &events.1,
                &events.2,
                &events.3,
                &jobs.0,
                &jobs.1,
                &jobs.2,
                &jobs.3,
                &jobs.4,
                &more.0,
                &more.1,
                &more.2,
                &more.3,
                &self.instance,
                &self.lease_ms,
            ],
        )
        .await?;
        let marked: Vec<String> = row.get(0);
        let running: Vec<String> = row.get(1);
        Ok((
            marked.into_iter().collect(),
            running.into_iter().collect(),
            row.get(2),
        ))
    }

    /// Attempts' records as one statement ([`sql::FINISH`]), each fenced
    /// on its job's owner: the jobs recorded (this instance held them,
    /// running), each with whether it has an order key. None to record:
    /// no statement.
    async fn finish(
        &self,
        client: &impl GenericClient,
        attempts: &[(usize, &FinishedAttempt)],
    ) -> StoreResult<HashMap<String, bool>> {
        if attempts.is_empty() {
            return Ok(HashMap::new());
        }
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut more = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (_, a) in attempts {
            let row = a.row();
            columns.0.push(a.job_id.as_str());
            columns.1.push(row.state);
            columns.2.push(row.next_at_ms);
            columns.3.push(row.finished_at_ms);
            columns.4.push(row.message);
            more.0.push(a.attempt as i32);
            more.1.push(a.started_at_ms);
            more.2.push(a.finished_at_ms);
            more.3.push(row.outcome);
        }
        let rows = run::query(
            client,
            sql::FINISH,
            &[
                &columns.0,
                &columns.1,
                &columns.2,
                &columns.3,
                &columns.4,
                &more.0,
                &more.1,
                &more.2,
                &more.3,
                &self.instance,
            ],
        )
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
