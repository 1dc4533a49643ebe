//! The pipeline's side of the SQLite store: the transactions of routing,
//! claims (ordered ones too), attempts and retention's steps, and the
//! [`Pipeline`] implementation that runs them on the writer thread (ingest
//! itself is `ingest.rs`).

use std::sync::atomic::AtomicBool;

use rusqlite::{params, Connection};

use super::ingest::{free_segments, ingest_tx};
use super::journal_record::{EncodedEvent, IngestRecord};
use super::sql;
use super::*;
use crate::event::Event;
use crate::store::sql::{numbered_for_sqlite, shared};
use crate::store::{
    envelope_of, AttemptRow, CommitObserver, CommitTiming, Shared, Sweep, SweepPhase, SWEEP_WINDOW,
};

/// Takes the routing by value: the claimed jobs it hands back are made of
/// its parts, not copies of them. A job with an order key is never claimed
/// with its routing: it waits its turn in the store ([`claim_tx`]).
pub(super) fn routing_tx(
    conn: &Connection,
    ordered: &AtomicBool,
    routing: Routing,
) -> StoreResult<Vec<ClaimedJob>> {
    let marked = conn
        .prepare_cached(sql::ROUTE)
        .map_err(map_err)?
        .execute(params![
            routing.event_id,
            routing.routed_at_ms,
            json_text(&routing.rule_runs),
            routing.rules_version as i64
        ])
        .map_err(map_err)?;
    if marked == 0 {
        // Routed already (by an earlier run of this routing): nothing to add.
        return Ok(Vec::new());
    }
    // An ordered job keeps the order its event was taken in: its rowid.
    let mut event_seq = None;
    if routing.jobs.iter().any(|j| j.order_key.is_some()) {
        ordered.store(true, Ordering::Relaxed);
        event_seq = Some(
            conn.prepare_cached(sql::EVENT_SEQ)
                .map_err(map_err)?
                .query_row(params![routing.event_id], |r| r.get::<_, i64>(0))
                .map_err(map_err)?,
        );
    }
    let offered = routing.claim_with.is_some();
    let mut insert = conn.prepare_cached(sql::INSERT_JOB).map_err(map_err)?;
    let mut claimed = Vec::new();
    for job in routing.jobs {
        let claim = offered && job.order_key.is_none();
        let (state, attempts) = if claim {
            ("running", 1)
        } else {
            ("pending", 0)
        };
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
                routing.routed_at_ms,
                job.order_key,
                job.order_key.as_ref().and(event_seq),
            ])
            .map_err(map_err)?;
        if added == 1 && claim {
            claimed.push(job);
        }
    }
    let Some(event) = routing.claim_with else {
        return Ok(Vec::new());
    };
    Ok(claimed
        .into_iter()
        .map(|job| job.first_attempt(&routing.event_id, &event))
        .collect())
}

/// Claims due jobs: first each order key's next (no job of its key
/// running, none before it due, every event taken in before its own
/// routed), then jobs without a key, oldest due first.
pub(super) fn claim_tx(
    conn: &Connection,
    ordered: &AtomicBool,
    now_ms: i64,
    limit: usize,
) -> StoreResult<Vec<ClaimedJob>> {
    let mut jobs = Vec::new();
    // Looked for only while the store may hold ordered jobs (most stores
    // never do): one statement less a claim.
    if ordered.load(Ordering::Relaxed) {
        if exists(conn, sql::ORDERED_DUE, params![now_ms])? {
            claimed(conn, sql::CLAIM_ORDERED, now_ms, limit, &mut jobs)?;
        } else if !exists(conn, sql::ORDERED_WAITING, [])? {
            ordered.store(false, Ordering::Relaxed);
        }
    }
    claimed(conn, sql::CLAIM, now_ms, limit - jobs.len(), &mut jobs)?;
    Ok(jobs)
}

fn exists(conn: &Connection, statement: &str, args: impl rusqlite::Params) -> StoreResult<bool> {
    conn.prepare_cached(statement)
        .map_err(map_err)?
        .query_row(args, |r| r.get(0))
        .map_err(map_err)
}

/// Runs a claim, adding what it claimed to `jobs` in the order they fell
/// due (RETURNING keeps no order).
fn claimed(
    conn: &Connection,
    claim: &str,
    now_ms: i64,
    limit: usize,
    jobs: &mut Vec<ClaimedJob>,
) -> StoreResult<()> {
    if limit == 0 {
        return Ok(());
    }
    let mut rows = conn
        .prepare_cached(claim)
        .map_err(map_err)?
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
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<i64>>(10)?,
            ))
        })
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)?;
    rows.sort_by(|a, b| (a.8, &a.0).cmp(&(b.8, &b.0)));
    let mut envelope = conn.prepare_cached(sql::ENVELOPE).map_err(map_err)?;
    for (
        id,
        event_id,
        rule,
        action,
        params_text,
        key,
        attempts,
        series_start,
        _,
        order_key,
        slot,
    ) in rows
    {
        // No envelope (its journal record damaged, said in the log): the
        // attempt carries null, as for one that is not JSON.
        let event: Option<String> = envelope
            .query_row(params![event_id], |r| r.get(0))
            .map_err(map_err)?;
        jobs.push(ClaimedJob {
            id,
            event: envelope_of(event.unwrap_or_else(|| "null".into())),
            event_id,
            rule,
            action,
            params: parse_json(&params_text),
            idempotency_key: key,
            attempt: attempts as u32,
            series_attempt: (attempts - series_start).max(1) as u32,
            order_key,
            rate_slot: slot,
        });
    }
    Ok(())
}

pub(super) fn finish_tx(conn: &Connection, a: &FinishedAttempt) -> StoreResult<()> {
    let AttemptRow {
        outcome,
        message,
        state,
        next_at_ms: next_at,
        finished_at_ms: finished_at,
    } = a.row();
    conn.prepare_cached(sql::RECORD_ATTEMPT)
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
    conn.prepare_cached(sql::FINISH)
        .map_err(map_err)?
        .execute(params![a.job_id, state, next_at, finished_at, message])
        .map_err(map_err)?;
    Ok(())
}

/// The next window of `table`'s ids after the sweep's cursor and below its
/// floor: its upper bound, and where the phase goes on ([`Sweep::window`]).
fn window(conn: &Connection, table: &str, sweep: &Sweep) -> StoreResult<(String, Option<String>)> {
    let (count, last): (i64, Option<String>) = conn
        .prepare_cached(&numbered_for_sqlite(&shared::sweep_window(table)))
        .map_err(map_err)?
        .query_row(params![sweep.after, sweep.floor(), SWEEP_WINDOW], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map_err)?;
    Ok(sweep.window(count, last))
}

/// Deletes the rows of a window ($1, $2] that `statement` (shared, with
/// `$n` placeholders) says are done with.
fn prune_window(conn: &Connection, statement: &str, after: &str, upper: &str) -> StoreResult<u64> {
    conn.prepare_cached(&numbered_for_sqlite(statement))
        .map_err(map_err)?
        .execute(params![after, upper])
        .map(|n| n as u64)
        .map_err(map_err)
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
            pruned.events = prune_window(conn, shared::PRUNE_EVENTS, &sweep.after, &upper)?;
            more
        }
        SweepPhase::Requests => {
            let (upper, more) = window(conn, "requests", sweep)?;
            pruned.requests = prune_window(conn, shared::PRUNE_REQUESTS, &sweep.after, &upper)?;
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
                .prepare_cached(sql::PRUNE_DEDUP)
                .map_err(map_err)?
                .execute(params![sweep.now_ms, SWEEP_WINDOW])
                .map_err(map_err)?;
            pruned.dedup_keys += n as u64;
            Sweep::again_if_full(n as u64)
        }
        SweepPhase::Versions => {
            let n = conn
                .prepare_cached(sql::PRUNE_VERSIONS)
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
            let mut stmt = conn.prepare_cached(sql::PENDING_EVENTS).map_err(map_err)?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (envelope, routings, released) = row.map_err(map_err)?;
                // None: its journal record is damaged (said in the log).
                let envelope = envelope.unwrap_or_default();
                match serde_json::from_str::<Event>(&envelope) {
                    Ok(event) => out.push(PendingEvent {
                        event,
                        routings: routings as u32,
                        released,
                    }),
                    Err(e) => tracing::error!("store: unreadable event envelope skipped: {e}"),
                }
            }
            Ok(out)
        })
    }

    fn record_routing(&self, routing: Routing) -> StoreFuture<'_, Vec<ClaimedJob>> {
        let ordered = self.ordered.clone();
        self.write_relaxed(move |conn| routing_tx(conn, &ordered, routing))
    }

    fn claim_jobs(&self, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<ClaimedJob>> {
        let ordered = self.ordered.clone();
        self.write_relaxed(move |conn| claim_tx(conn, &ordered, now_ms, limit))
    }

    fn finish_attempt(&self, attempt: FinishedAttempt) -> StoreFuture<'_, ()> {
        self.write_relaxed(move |conn| finish_tx(conn, &attempt))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<i64>> {
        // Ordered jobs already due wait for their turn, which a finished
        // attempt announces: not counted here.
        let now = crate::store::now_ms();
        self.read(move |conn| {
            conn.prepare_cached(sql::NEXT_DUE)
                .map_err(map_err)?
                .query_row(params![now], |r| r.get(0))
                .map_err(map_err)
        })
    }

    fn backlog(&self) -> StoreFuture<'_, Backlog> {
        Box::pin(shared::backlog(self))
    }

    fn recover(&self) -> StoreFuture<'_, u64> {
        self.write(|conn| {
            conn.execute(sql::RECOVER, [])
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
            conn.prepare_cached(sql::RELEASE_JOB)
                .map_err(map_err)?
                .execute(params![job_id, next_at_ms])
                .map_err(map_err)?;
            Ok(())
        })
    }

    fn defer_job(&self, job_id: String, slot_ms: i64) -> StoreFuture<'_, ()> {
        self.write_relaxed(move |conn| {
            conn.prepare_cached(sql::DEFER_JOB)
                .map_err(map_err)?
                .execute(params![job_id, slot_ms])
                .map_err(map_err)?;
            Ok(())
        })
    }

    fn forget_rate_slots(&self, action: String) -> StoreFuture<'_, u64> {
        self.write_relaxed(move |conn| {
            let n = conn
                .prepare_cached(sql::FORGET_RATE_SLOTS)
                .map_err(map_err)?
                .execute(params![action])
                .map_err(map_err)?;
            Ok(n as u64)
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

impl CommitTiming for SqliteStore {
    /// Set once; later calls are ignored.
    fn observe_commits(&self, f: CommitObserver) {
        let _ = self.on_commit.set(f);
    }
}
