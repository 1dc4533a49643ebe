//! The pipeline's side of the PostgreSQL store (the [`Pipeline`]
//! implementation): routing, pending events and their takeover, gates,
//! housekeeping; it calls on `ingest.rs` for ingest and `jobs.rs` for the
//! job queue.

use std::time::Duration;

use serde_json::value::RawValue;

use super::book::{Booked, Entry};
use super::{ingest, run, sql};
use super::{notify, PgStore, DB_NOW_MS, LEADER};
use crate::event::Event;
use crate::store::sql::shared;
use crate::store::{
    ActionState, Backlog, ClaimedJob, CommitTiming, FinishedAttempt, Ingested, InstanceInfo,
    OnWork, PendingEvent, Pipeline, Pruned, Routing, Shared, StoreError, StoreFuture, StoreResult,
    StoredRequest, Sweep, SweepPhase, Work, SWEEP_WINDOW,
};

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("cannot encode JSON: {e}"))
}

impl PgStore {
    /// An event's routing and its jobs, in the next bookkeeping group
    /// (`book.rs`): the event marked routed only while pending, its jobs
    /// added (unique by idempotency key), those claimed with it leased to
    /// this instance — never an ordered job, which waits its turn in the
    /// store.
    async fn routing_tx(&self, routing: Routing) -> StoreResult<Vec<ClaimedJob>> {
        let Booked::Routed {
            marked,
            running,
            unclaimed,
            routing,
        } = self.book.submit(Entry::Route(routing)).await?
        else {
            return Err(StoreError::Other(
                "a routing was booked as an attempt".into(),
            ));
        };
        if !marked {
            // Routed already (by this instance before, or by another).
            return Ok(Vec::new());
        }
        if unclaimed > 0 && self.notice_due() {
            notify(&self.relaxed().await?, Work::Jobs).await?;
        }
        let Some(event) = routing.claim_with else {
            return Ok(Vec::new());
        };
        let running: std::collections::HashSet<String> = running.into_iter().collect();
        Ok(routing
            .jobs
            .into_iter()
            .filter(|job| running.contains(&job.id))
            .map(|job| job.first_attempt(&routing.event_id, &event))
            .collect())
    }

    /// Whether this instance leads (holds the leader's lease), renewing it.
    pub async fn is_leader(&self) -> StoreResult<bool> {
        self.hold_lease(LEADER, Duration::from_millis(self.lease_ms as u64))
            .await
    }

    /// One step of a retention sweep (see [`Sweep`]): each statement its
    /// own transaction, over at most a window of rows.
    ///
    /// Written so that even a generic plan (what a prepared statement gets
    /// once the server stops planning it per call, blind to the values)
    /// reads only the window: the checks for what still needs a row are
    /// scalar subqueries, run per row through their index (as anti-joins
    /// the planner may hash the whole referencing table); the expired
    /// keys and versions are taken in their index's order, by `ctid`.
    async fn prune_step(&self, sweep: &Sweep) -> StoreResult<Pruned> {
        let client = self.client().await?;
        let floor = sweep.floor();
        let mut pruned = Pruned::default();
        // The next window of ids after the cursor, below the floor.
        let window = |table: &'static str| {
            let client = &client;
            let floor = &floor;
            async move {
                let row = run::query_one(
                    client,
                    &shared::sweep_window(table),
                    &[&sweep.after, floor, &SWEEP_WINDOW],
                )
                .await?;
                Ok::<_, StoreError>(sweep.window(row.get(0), row.get(1)))
            }
        };
        let more = match sweep.phase {
            SweepPhase::Events => {
                let (upper, more) = window("events").await?;
                pruned.events =
                    run::execute(&client, shared::PRUNE_EVENTS, &[&sweep.after, &upper]).await?;
                more
            }
            SweepPhase::Requests => {
                let (upper, more) = window("requests").await?;
                pruned.requests =
                    run::execute(&client, shared::PRUNE_REQUESTS, &[&sweep.after, &upper]).await?;
                more
            }
            // Request bodies live in their rows here: no journal.
            SweepPhase::Segments => None,
            SweepPhase::DedupKeys => {
                pruned.dedup_keys =
                    run::execute(&client, sql::PRUNE_DEDUP, &[&sweep.now_ms, &SWEEP_WINDOW])
                        .await?;
                // Beside them, rate budgets unused for a minute.
                let unused_us = (sweep.now_ms - 60_000) * 1_000;
                let budgets = run::execute(
                    &client,
                    sql::PRUNE_RATE_BUDGETS,
                    &[&unused_us, &SWEEP_WINDOW],
                )
                .await?;
                Sweep::again_if_full(pruned.dedup_keys.max(budgets))
            }
            SweepPhase::Versions => {
                pruned.versions = run::execute(
                    &client,
                    sql::PRUNE_VERSIONS,
                    &[&sweep.before_ms, &SWEEP_WINDOW],
                )
                .await?;
                Sweep::again_if_full(pruned.versions)
            }
        };
        pruned.next = sweep.then(more);
        Ok(pruned)
    }
}

impl Pipeline for PgStore {
    fn ingest(
        &self,
        request: StoredRequest,
        events: &[Event],
        dedup_window_ms: i64,
    ) -> StoreFuture<'_, Vec<Ingested>> {
        let encoded: Result<Vec<(Event, Box<RawValue>)>, _> = events
            .iter()
            .map(|e| serde_json::value::to_raw_value(e).map(|raw| (e.clone(), raw)))
            .collect();
        Box::pin(async move {
            let intake = ingest::Intake {
                request,
                events: encoded.map_err(json_err)?,
                dedup_window_ms,
            };
            self.ingest.submit(intake).await
        })
    }

    fn pending_events(&self, limit: usize) -> StoreFuture<'_, Vec<PendingEvent>> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            // This instance's own, and those of instances that stopped
            // beating: taken over.
            let rows = run::query(
                &client,
                &sql::PENDING_EVENTS,
                &[&self.instance, &(limit as i64), &self.lease_ms],
            )
            .await?;
            let mut out: Vec<(String, PendingEvent)> = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.get(0);
                let envelope: String = r.get(1);
                let routings: i32 = r.get(2);
                let released: bool = r.get(3);
                match serde_json::from_str::<Event>(&envelope) {
                    Ok(event) => out.push((
                        id,
                        PendingEvent {
                            event,
                            routings: routings as u32,
                            released,
                        },
                    )),
                    Err(e) => {
                        tracing::error!(event_id = %id, "store: unreadable event envelope skipped: {e}")
                    }
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out.into_iter().map(|(_, p)| p).collect())
        })
    }

    fn record_routing(&self, routing: Routing) -> StoreFuture<'_, Vec<ClaimedJob>> {
        Box::pin(self.routing_tx(routing))
    }

    fn claim_jobs(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<ClaimedJob>> {
        Box::pin(self.claim_tx(now_ms, limit))
    }

    fn finish_attempt(&self, attempt: FinishedAttempt) -> StoreFuture<'_, ()> {
        Box::pin(self.finish_tx(attempt))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let client = self.client().await?;
            // Ordered jobs already due wait for their turn, which a finished
            // attempt or a notice announces: not counted here.
            let row = run::query_one(&client, sql::NEXT_DUE, &[&crate::store::now_ms()]).await?;
            Ok(row.get(0))
        })
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        Box::pin(shared::backlog(self))
    }

    fn recover(&self) -> StoreFuture<'_, u64> {
        // Jobs of instances that stopped beating (a crashed earlier run of
        // this machine among them) are handed back; the others' running
        // jobs are theirs.
        Box::pin(async move {
            let client = self.client().await?;
            super::rescue(&client, self.lease_ms).await
        })
    }

    fn prune(&self, sweep: Sweep) -> StoreFuture<'_, Pruned> {
        Box::pin(async move {
            // Retention is the leader's: the others skip it.
            if !self.is_leader().await? {
                return Ok(Pruned::default());
            }
            self.prune_step(&sweep).await
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            run::execute(&client, "SELECT 1", &[]).await?;
            Ok(())
        })
    }

    fn shared(&self) -> Option<&dyn Shared> {
        Some(self)
    }

    /// Commits come from a pool of connections: none to time.
    fn commit_timing(&self) -> Option<&dyn CommitTiming> {
        None
    }

    fn defer_job(&self, job_id: String, slot_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            run::execute(
                &client,
                sql::DEFER_JOB,
                &[&job_id, &slot_ms, &self.instance],
            )
            .await?;
            Ok(())
        })
    }

    fn forget_rate_slots(&self, action: String) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            let n = run::execute(&client, sql::FORGET_RATE_SLOTS, &[&action]).await?;
            run::execute(&client, sql::FORGET_RATE_BUDGETS, &[&action]).await?;
            Ok(n)
        })
    }

    fn release_job(&self, job_id: String, next_at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            run::execute(
                &client,
                sql::RELEASE_JOB,
                &[&job_id, &next_at_ms, &self.instance],
            )
            .await?;
            Ok(())
        })
    }

    fn save_action_state(&self, state: ActionState) -> StoreFuture<'_, ()> {
        Box::pin(shared::save_action_state(self, state))
    }

    fn action_states(&self) -> StoreFuture<'_, Vec<ActionState>> {
        Box::pin(shared::action_states(self))
    }

    fn record_catalog(
        &self,
        tally: crate::store::Tally,
    ) -> StoreFuture<'_, Vec<crate::store::DriftTally>> {
        Box::pin(crate::store::catalog::record(self, tally))
    }

    fn hold_event(&self, event_id: String, why: String, at_ms: i64) -> StoreFuture<'_, bool> {
        Box::pin(crate::store::catalog::hold(self, event_id, why, at_ms))
    }

    fn event_types(&self, source: Option<String>) -> StoreFuture<'_, Vec<crate::store::TypeRow>> {
        Box::pin(crate::store::catalog::types(self, source))
    }
}

impl Shared for PgStore {
    fn leave(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.hand_back())
    }

    fn reserve_rate(
        &self,
        action: String,
        key: String,
        step_us: i64,
        now_us: i64,
    ) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            let row = run::query_one(
                &client,
                sql::RESERVE_RATE,
                &[&action, &key, &step_us, &now_us],
            )
            .await?;
            Ok(row.get(0))
        })
    }

    fn take_rate_if_full(
        &self,
        action: String,
        key: String,
        step_us: i64,
        now_us: i64,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            let row = run::query_opt(
                &client,
                sql::TAKE_RATE_IF_FULL,
                &[&action, &key, &step_us, &now_us],
            )
            .await?;
            Ok(row.is_some())
        })
    }

    fn rate_budgets(&self, action: String) -> StoreFuture<'_, Vec<(String, i64)>> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            let rows = run::query(&client, sql::RATE_BUDGETS, &[&action]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn on_work(&self, wake: OnWork) {
        let Some((config, tls)) = self.listen.clone() else {
            return;
        };
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = listener.replace(tokio::spawn(super::listen(config, tls, wake))) {
            old.abort();
        }
    }

    fn instances(&self) -> StoreFuture<'_, Vec<InstanceInfo>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = run::query(
                &client,
                &format!(
                    "SELECT i.id, i.host, i.version, i.started_at, i.heartbeat_at,
                                i.heartbeat_at > {DB_NOW_MS} - $1,
                                EXISTS (SELECT 1 FROM leases l WHERE l.name = $2
                                        AND l.owner = i.id AND l.until > {DB_NOW_MS}),
                                (SELECT count(*) FROM jobs j
                                 WHERE j.owner = i.id AND j.state = 'running')
                         FROM instances i ORDER BY i.started_at, i.id"
                ),
                &[&self.lease_ms, &LEADER],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let id: String = r.get(0);
                    InstanceInfo {
                        this: id == self.instance,
                        id,
                        host: r.get(1),
                        version: r.get(2),
                        started_at_ms: r.get(3),
                        heartbeat_at_ms: r.get(4),
                        alive: r.get(5),
                        leader: r.get(6),
                        running_jobs: r.get::<_, i64>(7) as u64,
                    }
                })
                .collect())
        })
    }
}
