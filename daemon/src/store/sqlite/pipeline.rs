//! The pipeline's side of the SQLite store: the transactions of ingest
//! (dedup, stale versions), routing, claims, attempts and pruning, and the
//! [`Pipeline`] implementation that runs them on the writer thread.

use rusqlite::{params, Connection};

use super::ingest::{free_segments, ingest_tx, EncodedEvent, IngestRecord};
use super::*;
use crate::event::Event;
use crate::store::{
    envelope_of, AttemptRow, CommitObserver, CommitTiming, Shared, Sweep, SweepPhase, SWEEP_WINDOW,
};

/// Takes the routing by value: the claimed jobs it hands back are made of
/// its parts, not copies of them.
pub(super) fn routing_tx(conn: &Connection, routing: Routing) -> StoreResult<Vec<ClaimedJob>> {
    let changed = conn
        .prepare_cached(
            "UPDATE events SET state = 'routed', routings = routings + 1, routed_at = ?2, rule_runs = ?3,
                               rules_version = ?4
             WHERE id = ?1 AND state = 'pending'",
        )
        .map_err(map_err)?
        .execute(params![
            routing.event_id,
            routing.routed_at_ms,
            json_text(&routing.rule_runs),
            routing.rules_version as i64
        ])
        .map_err(map_err)?;
    if changed == 0 {
        // Routed already (by an earlier run of this routing): nothing to add.
        return Ok(Vec::new());
    }
    let (state, attempts) = match routing.claim_with {
        Some(_) => ("running", 1),
        None => ("pending", 0),
    };
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO jobs (id, event_id, rule, call_index, action, params, idempotency_key,
                                         state, attempts, next_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )
        .map_err(map_err)?;
    let mut added_jobs = Vec::new();
    for job in routing.jobs {
        let added = insert
            .execute(params![
                job.id,
                routing.event_id,
                job.rule,
                job.call_index as i64,
                job.action,
                json_text(&job.params),
                job.idempotency_key,
                state,
                attempts,
                routing.routed_at_ms
            ])
            .map_err(map_err)?;
        if added == 1 && routing.claim_with.is_some() {
            added_jobs.push(job);
        }
    }
    let Some(event) = routing.claim_with else {
        return Ok(Vec::new());
    };
    Ok(added_jobs
        .into_iter()
        .map(|job| job.first_attempt(&routing.event_id, &event))
        .collect())
}

pub(super) fn claim_tx(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
) -> StoreResult<Vec<ClaimedJob>> {
    let mut claim = conn
        .prepare_cached(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1
             WHERE id IN (SELECT id FROM jobs WHERE state = 'pending' AND next_at <= ?1
                          ORDER BY next_at, id LIMIT ?2)
             RETURNING id, event_id, rule, action, params, idempotency_key, attempts, series_start",
        )
        .map_err(map_err)?;
    let rows = claim
        .query_map(params![now_ms, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)?;
    let mut envelope = conn
        .prepare_cached("SELECT envelope FROM events WHERE id = ?1")
        .map_err(map_err)?;
    let mut jobs = Vec::with_capacity(rows.len());
    for (id, event_id, rule, action, params_text, key, attempts, series_start) in rows {
        let event: String = envelope
            .query_row(params![event_id], |r| r.get(0))
            .map_err(map_err)?;
        jobs.push(ClaimedJob {
            id,
            event: envelope_of(event),
            event_id,
            rule,
            action,
            params: parse_json(&params_text),
            idempotency_key: key,
            attempt: attempts as u32,
            series_attempt: (attempts - series_start).max(1) as u32,
        });
    }
    // Claimed in due order; RETURNING gives no order guarantee.
    Ok(jobs)
}

pub(super) fn finish_tx(conn: &Connection, a: &FinishedAttempt) -> StoreResult<()> {
    let AttemptRow {
        outcome,
        message,
        state,
        next_at_ms: next_at,
        finished_at_ms: finished_at,
    } = a.row();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO attempts (job_id, n, started_at, finished_at, outcome, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(map_err)?
    .execute(params![
        a.job_id,
        a.attempt as i64,
        a.started_at_ms,
        a.finished_at_ms,
        outcome,
        message
    ])
    .map_err(map_err)?;
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, next_at = COALESCE(?3, next_at), finished_at = ?4,
                         last_error = COALESCE(?5, last_error)
         WHERE id = ?1",
    )
    .map_err(map_err)?
    .execute(params![a.job_id, state, next_at, finished_at, message])
    .map_err(map_err)?;
    Ok(())
}

/// The next window of `table`'s ids after the sweep's cursor and below its
/// floor: its upper bound, and where the phase goes on ([`Sweep::window`]).
fn window(conn: &Connection, table: &str, sweep: &Sweep) -> StoreResult<(String, Option<String>)> {
    let (count, last): (i64, Option<String>) = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*), MAX(id) FROM
                (SELECT id FROM {table} WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3)"
        ))
        .map_err(map_err)?
        .query_row(params![sweep.after, sweep.floor(), SWEEP_WINDOW], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map_err)?;
    Ok(sweep.window(count, last))
}

/// One step of a retention sweep (see [`Sweep`]), inside the writer's batch.
pub(super) fn prune_step(
    conn: &Connection,
    state: &mut WriterState,
    sweep: &Sweep,
) -> StoreResult<Pruned> {
    let mut pruned = Pruned::default();
    let more = match sweep.phase {
        SweepPhase::Events => {
            let (upper, more) = window(conn, "events", sweep)?;
            // Jobs and their attempts go with their event (ON DELETE
            // CASCADE, through jobs_event and the attempts' key).
            pruned.events = conn
                .prepare_cached(
                    "DELETE FROM events WHERE id > ?1 AND id <= ?2
                       AND state IN ('routed', 'stale', 'handshake')
                       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id
                                       AND j.state IN ('pending', 'running'))",
                )
                .map_err(map_err)?
                .execute(params![sweep.after, upper])
                .map_err(map_err)? as u64;
            more
        }
        SweepPhase::Requests => {
            let (upper, more) = window(conn, "requests", sweep)?;
            pruned.requests = conn
                .prepare_cached(
                    "DELETE FROM requests WHERE id > ?1 AND id <= ?2
                       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = requests.id)",
                )
                .map_err(map_err)?
                .execute(params![sweep.after, upper])
                .map_err(map_err)? as u64;
            more
        }
        SweepPhase::Segments => {
            // The requests' deletes of the steps before are committed.
            pruned.segments = free_segments(conn, &mut state.journal)?;
            if pruned.segments > 0 {
                tracing::info!(
                    segments = pruned.segments,
                    "removed journal segments no event needs"
                );
            }
            None
        }
        SweepPhase::DedupKeys => {
            pruned.dedup_keys = state.keys.expire(sweep.now_ms);
            let n = conn
                .prepare_cached(
                    "DELETE FROM dedup WHERE (source, key) IN
                        (SELECT source, key FROM dedup WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .map_err(map_err)?
                .execute(params![sweep.now_ms, SWEEP_WINDOW])
                .map_err(map_err)?;
            pruned.dedup_keys += n as u64;
            Sweep::again_if_full(n as u64)
        }
        SweepPhase::Versions => {
            let n = conn
                .prepare_cached(
                    "DELETE FROM versions WHERE (source, key) IN
                        (SELECT source, key FROM versions WHERE updated_at < ?1 LIMIT ?2)",
                )
                .map_err(map_err)?
                .execute(params![sweep.before_ms, SWEEP_WINDOW])
                .map_err(map_err)?;
            pruned.versions = n as u64;
            Sweep::again_if_full(pruned.versions)
        }
    };
    pruned.next = sweep.then(more);
    Ok(pruned)
}

impl Pipeline for SqliteStore {
    fn ingest(
        &self,
        request: StoredRequest,
        events: &[Event],
        dedup_window_ms: i64,
    ) -> StoreFuture<'_, Vec<Ingested>> {
        // Encode here, on the caller's thread: the writer thread is the one
        // every write waits for.
        let encoded: StoreResult<Vec<EncodedEvent>> =
            events.iter().map(EncodedEvent::new).collect();
        let max_bytes = self.options.max_size_bytes;
        match encoded {
            Ok(events) => {
                let record = IngestRecord::new(&request, events, dedup_window_ms);
                self.journal_write(move |conn, state| {
                    ingest_tx(conn, state, record, &request.body, max_bytes)
                })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn pending_events(&self, limit: usize) -> StoreFuture<'_, Vec<PendingEvent>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT envelope, routings FROM events WHERE state = 'pending' ORDER BY id LIMIT ?1",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (envelope, routings) = row.map_err(map_err)?;
                match serde_json::from_str::<Event>(&envelope) {
                    Ok(event) => out.push(PendingEvent {
                        event,
                        routings: routings as u32,
                    }),
                    Err(e) => tracing::error!("store: unreadable event envelope skipped: {e}"),
                }
            }
            Ok(out)
        })
    }

    fn record_routing(&self, routing: Routing) -> StoreFuture<'_, Vec<ClaimedJob>> {
        self.write_relaxed(move |conn| routing_tx(conn, routing))
    }

    fn claim_jobs(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<ClaimedJob>> {
        self.write_relaxed(move |conn| claim_tx(conn, now_ms, limit))
    }

    fn finish_attempt(&self, attempt: FinishedAttempt) -> StoreFuture<'_, ()> {
        self.write_relaxed(move |conn| finish_tx(conn, &attempt))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT MIN(next_at) FROM jobs WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)
        })
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        self.read(|conn| {
            let unrouted: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE state = 'pending'",
                    [],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let pending: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'pending'",
                    [],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            Ok(Backlog {
                unrouted_events: unrouted as u64,
                pending_jobs: pending as u64,
            })
        })
    }

    fn recover(&self) -> StoreFuture<'_, u64> {
        self.write(|conn| {
            conn.execute(
                "UPDATE jobs SET state = 'pending' WHERE state = 'running'",
                [],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
    }

    fn prune(&self, sweep: Sweep) -> StoreFuture<'_, Pruned> {
        self.journal_write(move |conn, state| {
            let started = std::time::Instant::now();
            let pruned = prune_step(conn, state, &sweep);
            tracing::debug!(
                phase = ?sweep.phase,
                us = started.elapsed().as_micros() as u64,
                "sweep step"
            );
            pruned
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.write_relaxed(|_| Ok(()))
    }

    /// One process: no other instance to hear from or hand work to.
    fn shared(&self) -> Option<&dyn Shared> {
        None
    }

    fn commit_timing(&self) -> Option<&dyn CommitTiming> {
        Some(self)
    }

    fn release_job(&self, job_id: String, next_at_ms: i64) -> StoreFuture<'_, ()> {
        self.write_relaxed(move |conn| {
            conn.prepare_cached(
                "UPDATE jobs SET state = 'pending', next_at = ?2, attempts = MAX(attempts - 1, 0)
                 WHERE id = ?1 AND state = 'running'",
            )
            .map_err(map_err)?
            .execute(params![job_id, next_at_ms])
            .map_err(map_err)?;
            Ok(())
        })
    }

    fn save_action_state(&self, state: ActionState) -> StoreFuture<'_, ()> {
        self.write_relaxed(move |conn| {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO action_states (action, state, until_ms, failures, reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map_err)?
            .execute(params![
                state.action,
                state.state,
                state.until_ms,
                state.failures,
                state.reason,
                state.updated_at_ms
            ])
            .map_err(map_err)?;
            Ok(())
        })
    }

    fn action_states(&self) -> StoreFuture<'_, Vec<ActionState>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT action, state, until_ms, failures, reason, updated_at
                     FROM action_states ORDER BY action",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ActionState {
                        action: r.get(0)?,
                        state: r.get(1)?,
                        until_ms: r.get(2)?,
                        failures: r.get(3)?,
                        reason: r.get(4)?,
                        updated_at_ms: r.get(5)?,
                    })
                })
                .map_err(map_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err)?;
            Ok(rows)
        })
    }
}

impl CommitTiming for SqliteStore {
    /// Set once; later calls are ignored.
    fn observe_commits(&self, f: CommitObserver) {
        let _ = self.on_commit.set(f);
    }
}
