//! The pipeline's side of the PostgreSQL store: ingest with the database's
//! dedup and version guard, routing, leased claims, fenced attempts,
//! housekeeping (the [`Pipeline`] implementation).

use std::time::Duration;

use serde_json::value::RawValue;
use tokio_postgres::types::Json;

use super::{map_err, notify, PgStore, DB_NOW_MS, LEADER};
use crate::event::Event;
use crate::store::{
    ulid_floor, ActionState, Backlog, ClaimedJob, FinishedAttempt, Ingested, OnWork, PendingEvent,
    Pipeline, Pruned, Routing, StoreError, StoreFuture, StoreResult, StoredRequest, Work,
};

/// Rows removed per statement of a prune, so that no prune holds locks long.
const PRUNE_CHUNK: i64 = 2000;

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("cannot encode JSON: {e}"))
}

impl PgStore {
    async fn ingest_tx(
        &self,
        request: StoredRequest,
        events: Vec<(Event, Box<RawValue>)>,
        dedup_window_ms: i64,
    ) -> StoreResult<Vec<Ingested>> {
        let now = request.received_at_ms;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // Decide first (the keys and versions are rows of their own), then
        // write the request with its verdict, then the events.
        let take_key = tx
            .prepare_cached(
                "INSERT INTO dedup (source, key, event_id, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, key) DO UPDATE
                     SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
                     WHERE dedup.expires_at <= $5
                 RETURNING event_id",
            )
            .await
            .map_err(map_err)?;
        let holder = tx
            .prepare_cached("SELECT event_id FROM dedup WHERE source = $1 AND key = $2")
            .await
            .map_err(map_err)?;
        let set_version = tx
            .prepare_cached(
                "INSERT INTO versions (source, key, version, event_id, updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (source, key) DO UPDATE SET
                     version = EXCLUDED.version, event_id = EXCLUDED.event_id,
                     updated_at = EXCLUDED.updated_at
                 WHERE EXCLUDED.version > versions.version
                 RETURNING 1",
            )
            .await
            .map_err(map_err)?;
        let until = now + dedup_window_ms;
        let mut results = Vec::with_capacity(events.len());
        for (ev, _) in &events {
            let taken = tx
                .query_opt(
                    &take_key,
                    &[&ev.source, &ev.dedup_key, &ev.id, &until, &now],
                )
                .await
                .map_err(map_err)?;
            if taken.is_none() {
                let original: Option<String> = tx
                    .query_opt(&holder, &[&ev.source, &ev.dedup_key])
                    .await
                    .map_err(map_err)?
                    .map(|r| r.get(0));
                results.push(Ingested::Duplicate(original.unwrap_or_default()));
                continue;
            }
            let fresh = match &ev.order {
                None => true,
                Some(order) => tx
                    .query_opt(
                        &set_version,
                        &[&ev.source, &order.key, &order.version, &ev.id, &now],
                    )
                    .await
                    .map_err(map_err)?
                    .is_some(),
            };
            results.push(match fresh {
                true => Ingested::New(ev.id.clone()),
                false => Ingested::Stale(ev.id.clone()),
            });
        }
        let all_duplicates =
            !events.is_empty() && results.iter().all(|r| matches!(r, Ingested::Duplicate(_)));
        let verdict = if all_duplicates {
            "duplicate"
        } else {
            "accepted"
        };
        tx.execute(
            "INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &request.id,
                &request.source,
                &now,
                &request.method,
                &request.path,
                &request.query,
                &Json(&request.headers),
                &request.body.as_ref(),
                &verdict,
            ],
        )
        .await
        .map_err(map_err)?;
        let insert_event = tx
            .prepare_cached(
                "INSERT INTO events (id, request_id, source, type, received_at, envelope, state, owner)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await
            .map_err(map_err)?;
        let bump = tx
            .prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = $1")
            .await
            .map_err(map_err)?;
        for ((ev, envelope), result) in events.iter().zip(&results) {
            let state = match result {
                Ingested::Duplicate(original) => {
                    tx.execute(&bump, &[original]).await.map_err(map_err)?;
                    continue;
                }
                Ingested::Stale(_) => "stale",
                Ingested::New(_) => "pending",
            };
            tx.execute(
                &insert_event,
                &[
                    &ev.id,
                    &request.id,
                    &ev.source,
                    &ev.kind,
                    &now,
                    &Json(envelope),
                    &state,
                    &self.instance,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(results)
    }

    async fn routing_tx(&self, routing: Routing) -> StoreResult<Vec<ClaimedJob>> {
        let mut client = self.relaxed().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let marked = tx
            .query_opt(
                "UPDATE events SET state = 'routed', routings = routings + 1, routed_at = $2,
                                   rule_runs = $3, rules_version = $4, owner = NULL
                 WHERE id = $1 AND state = 'pending'
                 RETURNING seq",
                &[
                    &routing.event_id,
                    &routing.routed_at_ms,
                    &Json(&routing.rule_runs),
                    &(routing.rules_version as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        let Some(marked) = marked else {
            // Routed already (by this instance before, or by another).
            tx.commit().await.map_err(map_err)?;
            return Ok(Vec::new());
        };
        let event_seq: i64 = marked.get(0);
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO jobs (id, event_id, rule, call_index, action, params, idempotency_key,
                                   state, attempts, next_at, created_at, owner, lease_until,
                                   order_key, order_seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7,
                         CASE WHEN $8 THEN 'running' ELSE 'pending' END,
                         CASE WHEN $8 THEN 1 ELSE 0 END, $9, $9,
                         CASE WHEN $8 THEN $10 END,
                         CASE WHEN $8 THEN {DB_NOW_MS} + $11 END,
                         $12, $13)
                 ON CONFLICT (idempotency_key) DO NOTHING"
            ))
            .await
            .map_err(map_err)?;
        let mut added_jobs = Vec::new();
        let mut unclaimed = 0;
        for job in routing.jobs {
            // A job of an ordered action waits its turn in the store: it
            // is never claimed with its routing.
            let claim = routing.claim_with.is_some() && job.order_key.is_none();
            let order_seq = job.order_key.as_ref().map(|_| event_seq);
            let added = tx
                .execute(
                    &insert,
                    &[
                        &job.id,
                        &routing.event_id,
                        &job.rule,
                        &(job.call_index as i32),
                        &job.action,
                        &Json(&job.params),
                        &job.idempotency_key,
                        &claim,
                        &routing.routed_at_ms,
                        &self.instance,
                        &self.lease_ms,
                        &job.order_key,
                        &order_seq,
                    ],
                )
                .await
                .map_err(map_err)?;
            match (added, claim) {
                (1, true) => added_jobs.push(job),
                (1, false) => unclaimed += 1,
                _ => {}
            }
        }
        if unclaimed > 0 && self.notice_due() {
            notify(&*tx, Work::Jobs).await?;
        }
        tx.commit().await.map_err(map_err)?;
        let Some(event) = routing.claim_with else {
            return Ok(Vec::new());
        };
        Ok(added_jobs
            .into_iter()
            .map(|job| job.first_attempt(&routing.event_id, &event))
            .collect())
    }

    /// Whether this instance leads (holds the leader's lease), renewing it.
    pub async fn is_leader(&self) -> StoreResult<bool> {
        self.hold_lease(LEADER, Duration::from_millis(self.lease_ms as u64))
            .await
    }

    async fn prune_tx(&self, before_ms: i64, now_ms: i64) -> StoreResult<Pruned> {
        let client = self.client().await?;
        let floor = ulid_floor(before_ms);
        let events = client
            .execute(
                "DELETE FROM events WHERE id IN (
                     SELECT e.id FROM events e
                     WHERE e.id < $1 AND e.state IN ('routed', 'stale')
                       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id
                                       AND j.state IN ('pending', 'running'))
                     LIMIT $2)",
                &[&floor, &PRUNE_CHUNK],
            )
            .await
            .map_err(map_err)?;
        let requests = client
            .execute(
                "DELETE FROM requests WHERE id IN (
                     SELECT r.id FROM requests r
                     WHERE r.id < $1
                       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = r.id)
                     LIMIT $2)",
                &[&floor, &PRUNE_CHUNK],
            )
            .await
            .map_err(map_err)?;
        let dedup_keys = client
            .execute(
                "DELETE FROM dedup WHERE (source, key) IN
                     (SELECT source, key FROM dedup WHERE expires_at <= $1 LIMIT $2)",
                &[&now_ms, &PRUNE_CHUNK],
            )
            .await
            .map_err(map_err)?;
        let versions = client
            .execute(
                "DELETE FROM versions WHERE (source, key) IN
                     (SELECT source, key FROM versions WHERE updated_at < $1 LIMIT $2)",
                &[&before_ms, &PRUNE_CHUNK],
            )
            .await
            .map_err(map_err)?;
        Ok(Pruned {
            events,
            requests,
            dedup_keys,
            versions,
        })
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
            let events = encoded.map_err(json_err)?;
            self.ingest_tx(request, events, dedup_window_ms).await
        })
    }

    fn pending_events(&self, limit: usize) -> StoreFuture<'_, Vec<PendingEvent>> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            // This instance's own, and those of instances that stopped
            // beating: taken over.
            let rows = client
                .query(
                    &format!(
                        "UPDATE events e SET owner = $1
                         FROM (SELECT p.id FROM events p
                               WHERE p.state = 'pending'
                                 AND (p.owner IS NULL OR p.owner = $1 OR NOT EXISTS (
                                      SELECT 1 FROM instances i WHERE i.id = p.owner
                                      AND i.heartbeat_at > {DB_NOW_MS} - $3))
                               ORDER BY p.id LIMIT $2 FOR UPDATE SKIP LOCKED) c
                         WHERE e.id = c.id
                         RETURNING e.id, e.envelope::text, e.routings"
                    ),
                    &[&self.instance, &(limit as i64), &self.lease_ms],
                )
                .await
                .map_err(map_err)?;
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
            let row = client
                // Ordered jobs already due wait for their turn, which a
                // finished attempt or a notice announces: not counted here.
                .query_one(
                    "SELECT MIN(next_at) FROM jobs
                     WHERE state = 'pending' AND (order_key IS NULL OR next_at > $1)",
                    &[&crate::store::now_ms()],
                )
                .await
                .map_err(map_err)?;
            Ok(row.get(0))
        })
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM events WHERE state = 'pending'),
                            (SELECT COUNT(*) FROM jobs WHERE state = 'pending')",
                    &[],
                )
                .await
                .map_err(map_err)?;
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

    fn prune(&self, before_ms: i64, now_ms: i64) -> StoreFuture<'_, Pruned> {
        Box::pin(async move {
            // Retention is the leader's: the others skip it.
            if !self.is_leader().await? {
                return Ok(Pruned::default());
            }
            self.prune_tx(before_ms, now_ms).await
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            client.execute("SELECT 1", &[]).await.map_err(map_err)?;
            Ok(())
        })
    }

    fn leave(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.hand_back())
    }

    fn on_work(&self, wake: OnWork) {
        let Some(config) = self.listen.clone() else {
            return;
        };
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = listener.replace(tokio::spawn(super::listen(config, wake))) {
            old.abort();
        }
    }

    fn release_job(&self, job_id: String, next_at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            client
                .execute(
                    "UPDATE jobs SET state = 'pending', next_at = $2,
                                     attempts = GREATEST(attempts - 1, 0),
                                     owner = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'running' AND owner = $3",
                    &[&job_id, &next_at_ms, &self.instance],
                )
                .await
                .map_err(map_err)?;
            Ok(())
        })
    }

    fn save_action_state(&self, state: ActionState) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.relaxed().await?;
            client
                .execute(
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
                .await
                .map_err(map_err)?;
            Ok(())
        })
    }

    fn action_states(&self) -> StoreFuture<'_, Vec<ActionState>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT action, state, until_ms, failures, reason, updated_at
                     FROM action_states ORDER BY action",
                    &[],
                )
                .await
                .map_err(map_err)?;
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
