//! The pipeline's bookkeeping in groups (`group.rs`): the routings and the
//! attempts' records of concurrent callers (a batch of routed events, the
//! dispatcher's finished attempts) in one transaction on the relaxed pool,
//! one commit: a group's routings one statement
//! ([`ROUTE_MANY`](super::sql::ROUTE_MANY)), its attempts one statement
//! ([`FINISH_MANY`](super::sql::FINISH_MANY)), or for one of a kind the
//! statement it was alone ([`ROUTE`](super::sql::ROUTE),
//! [`FINISH`](super::sql::FINISH)). A group that fails on a statement is
//! done again one entry at a time.

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::types::Json;

use super::group::retry_alone;
use super::{map_err, pool_err, run, sql};
use crate::store::{AttemptRow, FinishedAttempt, Routing, StoreResult};

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

impl Entry {
    /// The order a group books in: routings by event, then attempts by job,
    /// so that two instances' groups lock rows in one order.
    fn lock_order(&self) -> (u8, &str) {
        match self {
            Entry::Route(r) => (0, &r.event_id),
            Entry::Finish(a) => (1, &a.job_id),
        }
    }
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
            1 => vec![self.say(&client, &entries[0]).await],
            _ => match self.together(&mut client, &entries).await {
                Ok(said) => said.into_iter().map(Ok).collect(),
                Err(e) if retry_alone(&e) => {
                    tracing::debug!(
                        "store: a group of {} routings and attempts failed ({e}); each alone",
                        entries.len()
                    );
                    let mut said = Vec::with_capacity(entries.len());
                    for entry in &entries {
                        said.push(self.say(&client, entry).await);
                    }
                    said
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

    /// A group in one transaction, one commit: its routings pipelined, its
    /// attempts one statement ([`sql::FINISH_MANY`]) if there are several.
    async fn together(&self, client: &mut Object, entries: &[Entry]) -> StoreResult<Vec<Said>> {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|a, b| entries[*a].lock_order().cmp(&entries[*b].lock_order()));
        let (finishes, routes): (Vec<usize>, Vec<usize>) = order
            .iter()
            .partition(|i| matches!(entries[**i], Entry::Finish(_)));
        let attempts: Vec<&FinishedAttempt> = finishes
            .iter()
            .filter_map(|i| match &entries[*i] {
                Entry::Finish(a) => Some(a),
                Entry::Route(_) => None,
            })
            .collect();
        let routings: Vec<&Routing> = routes
            .iter()
            .filter_map(|i| match &entries[*i] {
                Entry::Route(r) => Some(r),
                Entry::Finish(_) => None,
            })
            .collect();
        let many = attempts.len() > 1;
        // One statement for several routings, unless one event is routed
        // twice in the group (each must see the other's mark).
        let events: std::collections::HashSet<&str> =
            routings.iter().map(|r| r.event_id.as_str()).collect();
        let many_routes = routings.len() > 1 && events.len() == routings.len();
        let tx = client.transaction().await.map_err(map_err)?;
        let singles = (if many_routes { &[][..] } else { &routes[..] })
            .iter()
            .chain(if many { &[][..] } else { &finishes[..] })
            .map(|i| self.say(&tx, &entries[*i]));
        let (said, routed, recorded) = futures_util::future::try_join3(
            futures_util::future::try_join_all(singles),
            async {
                match many_routes {
                    true => self.route_many(&tx, &routings).await.map(Some),
                    false => Ok(None),
                }
            },
            async {
                match many {
                    true => self.finish_many(&tx, &attempts).await,
                    false => Ok(Default::default()),
                }
            },
        )
        .await?;
        tx.commit().await.map_err(map_err)?;
        let mut out: Vec<Option<Said>> = entries.iter().map(|_| None).collect();
        let alone = (if many_routes { &[][..] } else { &routes[..] })
            .iter()
            .chain(if many { &[][..] } else { &finishes[..] });
        for (i, said) in alone.zip(said) {
            out[*i] = Some(said);
        }
        if let Some((marked, running, unclaimed)) = routed {
            for i in &routes {
                if let Entry::Route(r) = &entries[*i] {
                    let own: Vec<String> = r
                        .jobs
                        .iter()
                        .filter(|j| running.contains(&j.id))
                        .map(|j| j.id.clone())
                        .collect();
                    out[*i] = Some(Said::Routed(marked.contains(&r.event_id), own, unclaimed));
                }
            }
        }
        if many {
            for i in &finishes {
                if let Entry::Finish(a) = &entries[*i] {
                    out[*i] = Some(Said::Finished(recorded.get(&a.job_id).copied()));
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Several events' routings as one statement ([`sql::ROUTE_MANY`]):
    /// the events that were pending, the jobs claimed, how many were
    /// stored unclaimed (in all).
    async fn route_many(
        &self,
        client: &impl GenericClient,
        routings: &[&Routing],
    ) -> StoreResult<(
        std::collections::HashSet<String>,
        std::collections::HashSet<String>,
        i64,
    )> {
        let mut events = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut jobs = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut more = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in routings {
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
            &sql::ROUTE_MANY,
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

    /// Several attempts' records as one statement: which jobs were
    /// recorded (this instance held them), and whether each has an order
    /// key.
    async fn finish_many(
        &self,
        client: &impl GenericClient,
        attempts: &[&FinishedAttempt],
    ) -> StoreResult<std::collections::HashMap<String, bool>> {
        let n = attempts.len();
        let mut columns = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut more = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for a in attempts {
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
            sql::FINISH_MANY,
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

    /// One entry's statement.
    async fn say(&self, client: &impl GenericClient, entry: &Entry) -> StoreResult<Said> {
        match entry {
            Entry::Route(routing) => self.route(client, routing).await,
            Entry::Finish(attempt) => self.finish(client, attempt).await,
        }
    }

    /// An event's routing and its jobs, as one statement (see
    /// [`sql::ROUTE`]).
    async fn route(&self, client: &impl GenericClient, routing: &Routing) -> StoreResult<Said> {
        let offered = routing.claim_with.is_some();
        let n = routing.jobs.len();
        let (mut ids, mut rules, mut calls, mut actions) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut params, mut keys, mut claims, mut order_keys) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for job in &routing.jobs {
            ids.push(job.id.as_str());
            rules.push(job.rule.as_str());
            calls.push(job.call_index as i32);
            actions.push(job.action.as_str());
            params.push(Json(&job.params));
            keys.push(job.idempotency_key.as_str());
            claims.push(offered && job.order_key.is_none());
            order_keys.push(job.order_key.as_deref());
        }
        let row = run::query_one(
            client,
            &sql::ROUTE,
            &[
                &routing.event_id,
                &routing.routed_at_ms,
                &Json(&routing.rule_runs),
                &(routing.rules_version as i64),
                &self.instance,
                &self.lease_ms,
                &ids,
                &rules,
                &calls,
                &actions,
                &params,
                &keys,
                &claims,
                &order_keys,
            ],
        )
        .await?;
        Ok(Said::Routed(row.get(0), row.get(1), row.get(2)))
    }

    /// An attempt's record, fenced on the job's owner: recorded only by
    /// the instance the job is leased to, while it runs (see
    /// [`sql::FINISH`]).
    async fn finish(&self, client: &impl GenericClient, a: &FinishedAttempt) -> StoreResult<Said> {
        let AttemptRow {
            outcome,
            message,
            state,
            next_at_ms: next_at,
            finished_at_ms: finished_at,
        } = a.row();
        let recorded = run::query_opt(
            client,
            sql::FINISH,
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
        Ok(Said::Finished(recorded.map(|r| r.get::<_, bool>(0))))
    }
}
