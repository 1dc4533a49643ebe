//! The pipeline's side of the PostgreSQL store (the [`Pipeline`]
//! implementation): routing, pending events and their takeover, gates,
//! housekeeping; it calls on `ingest.rs` for ingest and `jobs.rs` for the
//! job queue.

use std::sync::LazyLock;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio_postgres::types::Json;

use super::sql;
use super::{notify, PgStore, DB_NOW_MS, LEADER};
use crate::event::Event;
use crate::store::{
    ActionState, Backlog, ClaimedJob, CommitTiming, FinishedAttempt, Ingested, InstanceInfo,
    OnWork, PendingEvent, Pipeline, Pruned, Routing, Shared, StoreError, StoreFuture, StoreResult,
    StoredRequest, Sweep, SweepPhase, Work, SWEEP_WINDOW,
};

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("cannot encode JSON: {e}"))
}

/// An event's routing and its jobs ($1 event, $2 routed at, $3 rule runs,
/// $4 rules version, $5 this instance, $6 the lease, $7.. the jobs as
/// arrays): whether the event was pending, the jobs claimed with it, and
/// how many were stored unclaimed.
pub(super) static ROUTE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ev AS (
            UPDATE events SET state = 'routed', routings = routings + 1, routed_at = $2,
                              rule_runs = $3, rules_version = $4, owner = NULL
            WHERE id = $1 AND state = 'pending'
            RETURNING seq),
        j AS (
            INSERT INTO jobs (id, event_id, rule, call_index, action, params,
                              idempotency_key, state, attempts, next_at, created_at,
                              owner, lease_until, order_key, order_seq)
            SELECT u.id, $1, u.rule, u.call_index, u.action, u.params, u.key,
                   CASE WHEN u.claim THEN 'running' ELSE 'pending' END,
                   CASE WHEN u.claim THEN 1 ELSE 0 END, $2, $2,
                   CASE WHEN u.claim THEN $5 END,
                   CASE WHEN u.claim THEN {DB_NOW_MS} + $6 END,
                   u.order_key, CASE WHEN u.order_key IS NOT NULL THEN ev.seq END
            FROM ev, unnest($7::text[], $8::text[], $9::int4[], $10::text[],
                            $11::jsonb[], $12::text[], $13::bool[], $14::text[])
                 WITH ORDINALITY AS u(id, rule, call_index, action, params, key,
                                      claim, order_key, n)
            ORDER BY u.n
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, state)
        SELECT EXISTS (SELECT 1 FROM ev),
               ARRAY(SELECT id FROM j WHERE state = 'running'),
               (SELECT count(*) FROM j WHERE state = 'pending')"
    )
});

/// Takes this instance's pending events, and those of instances that
/// stopped beating ($1 this instance, $2 how many, $3 the lease).
pub(super) static PENDING_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE events e SET owner = $1
            FROM (SELECT p.id FROM events p
                  WHERE p.state = 'pending'
                    AND (p.owner IS NULL OR p.owner = $1 OR NOT EXISTS (
                         SELECT 1 FROM instances i WHERE i.id = p.owner
                         AND i.heartbeat_at > {DB_NOW_MS} - $3))
                  ORDER BY p.id LIMIT $2 FOR UPDATE SKIP LOCKED) c
            WHERE e.id = c.id
            RETURNING e.id, e.envelope::text, e.routings"
    )
});

/// When the next job not waiting for its order key's turn is due ($1 now).
pub(super) const NEXT_DUE: &str = "SELECT MIN(next_at) FROM jobs
    WHERE state = 'pending' AND (order_key IS NULL OR next_at > $1)";

impl PgStore {
    /// An event's routing and its jobs in one statement (one round trip):
    /// the event marked routed only while pending, its jobs added (unique
    /// by idempotency key), those claimed with it leased to this instance
    /// — never an ordered job, which waits its turn in the store.
    async fn routing_tx(&self, routing: Routing) -> StoreResult<Vec<ClaimedJob>> {
        let client = self.relaxed().await?;
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
        let row = sql::query_one(
            &client,
            &ROUTE,
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
        let (marked, running, unclaimed): (bool, Vec<String>, i64) =
            (row.get(0), row.get(1), row.get(2));
        if !marked {
            // Routed already (by this instance before, or by another).
            return Ok(Vec::new());
        }
        if unclaimed > 0 && self.notice_due() {
            notify(&client, Work::Jobs).await?;
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
                let row = sql::query_one(
                    client,
                    &format!(
                        "SELECT count(*), max(id) FROM
                            (SELECT id FROM {table} WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3) w"
                    ),
                    &[&sweep.after, floor, &SWEEP_WINDOW],
                )
                .await?;
                Ok::<_, StoreError>(sweep.window(row.get(0), row.get(1)))
            }
        };
        let more = match sweep.phase {
            SweepPhase::Events => {
                let (upper, more) = window("events").await?;
                pruned.events = sql::execute(
                    &client,
                    "DELETE FROM events WHERE id > $1 AND id <= $2
                       AND state IN ('routed', 'stale', 'handshake')
                       AND NOT (SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id
                                               AND j.state IN ('pending', 'running')))",
                    &[&sweep.after, &upper],
                )
                .await?;
                more
            }
            SweepPhase::Requests => {
                let (upper, more) = window("requests").await?;
                pruned.requests = sql::execute(
                    &client,
                    "DELETE FROM requests WHERE id > $1 AND id <= $2
                       AND NOT (SELECT EXISTS (SELECT 1 FROM events e
                                               WHERE e.request_id = requests.id))",
                    &[&sweep.after, &upper],
                )
                .await?;
                more
            }
            // Request bodies live in their rows here: no journal.
            SweepPhase::Segments => None,
            SweepPhase::DedupKeys => {
                pruned.dedup_keys = sql::execute(
                    &client,
                    "DELETE FROM dedup WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM dedup WHERE expires_at <= $1
                         ORDER BY expires_at LIMIT $2))",
                    &[&sweep.now_ms, &SWEEP_WINDOW],
                )
                .await?;
                Sweep::again_if_full(pruned.dedup_keys)
            }
            SweepPhase::Versions => {
                pruned.versions = sql::execute(
                    &client,
                    "DELETE FROM versions WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM versions WHERE updated_at < $1
                         ORDER BY updated_at LIMIT $2))",
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
            let mut events = encoded.map_err(json_err)?;
            // A handshake is rare: the general path records it.
            if events.len() == 1 && !events[0].0.handshake {
                let (event, envelope) = events.pop().expect("one event");
                return self
                    .ingest_one(request, event, envelope, dedup_window_ms)
                    .await;
            }
            self.ingest_tx(request, events, dedup_window_ms).await
        })
    }

    fn pending_events(&self, limit: usize) -> StoreFuture<'_, Vec<PendingEvent>> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            // This instance's own, and those of instances that stopped
            // beating: taken over.
            let rows = sql::query(
                &client,
                &PENDING_EVENTS,
                &[&self.instance, &(limit as i64), &self.lease_ms],
            )
            .await?;
            let mut out: Vec<(String, PendingEvent)> = Vec::with_capacity(rows.len());
            for r in rows {
                let id: String = r.get(0);
                let envelope: String = r.get(1);
                let routings: i32 = r.get(2);
                match serde_json::from_str::<Event>(&envelope) {
                    Ok(event) => out.push((
                        id,
                        PendingEvent {
                            event,
                            routings: routings as u32,
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
            let row = sql::query_one(&client, NEXT_DUE, &[&crate::store::now_ms()]).await?;
            Ok(row.get(0))
        })
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = sql::query_one(
                &client,
                "SELECT (SELECT COUNT(*) FROM events WHERE state = 'pending'),
                            (SELECT COUNT(*) FROM jobs WHERE state = 'pending')",
                &[],
            )
            .await?;
            Ok(Backlog {
                unrouted_events: row.get::<_, i64>(0) as u64,
                pending_jobs: row.get::<_, i64>(1) as u64,
            })
        })
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
            sql::execute(&client, "SELECT 1", &[]).await?;
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

    fn release_job(&self, job_id: String, next_at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            sql::execute(
                &client,
                "UPDATE jobs SET state = 'pending', next_at = $2,
                                     attempts = GREATEST(attempts - 1, 0),
                                     owner = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'running' AND owner = $3",
                &[&job_id, &next_at_ms, &self.instance],
            )
            .await?;
            Ok(())
        })
    }

    fn save_action_state(&self, state: ActionState) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            sql::execute(
                &client,
                "INSERT INTO action_states (action, state, until_ms, failures, reason, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (action) DO UPDATE SET state = EXCLUDED.state,
                         until_ms = EXCLUDED.until_ms, failures = EXCLUDED.failures,
                         reason = EXCLUDED.reason, updated_at = EXCLUDED.updated_at",
                &[
                    &state.action,
                    &state.state,
                    &state.until_ms,
                    &(state.failures as i32),
                    &state.reason,
                    &state.updated_at_ms,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn action_states(&self) -> StoreFuture<'_, Vec<ActionState>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = sql::query(
                &client,
                "SELECT action, state, until_ms, failures, reason, updated_at
                     FROM action_states ORDER BY action",
                &[],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| ActionState {
                    action: r.get(0),
                    state: r.get(1),
                    until_ms: r.get(2),
                    failures: r.get::<_, i32>(3) as u32,
                    reason: r.get(4),
                    updated_at_ms: r.get(5),
                })
                .collect())
        })
    }
}

impl Shared for PgStore {
    fn leave(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.hand_back())
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
            let rows = sql::query(
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
