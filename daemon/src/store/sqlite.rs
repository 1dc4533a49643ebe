//! The embedded backend: one SQLite database file in WAL mode.
//!
//! One writer thread owns the writing connection and commits in groups (see
//! the module doc of `store`); reads use a small pool of read connections on
//! blocking threads. Several processes may open the same file (the daemon
//! and the CLI): SQLite's locks and a busy timeout keep them apart.

use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    ActionState, AttemptRecord, Backlog, ClaimedJob, EventDetail, EventFilter, EventSummary,
    Finish, FinishedAttempt, Ingested, JobRecord, PendingEvent, Pipeline, Pruned, Queries,
    RequestRecord, Routing, StoreError, StoreFuture, StoreResult, StoredRequest,
};
use crate::event::Event;

const SCHEMA: &str = include_str!("schema.sql");
/// Most writes committed together.
const MAX_BATCH: usize = 1024;
/// Rows removed per prune transaction, so pruning never holds the writer long.
const PRUNE_CHUNK: i64 = 2000;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync before a commit returns (`synchronous = FULL`): an acknowledged
    /// webhook survives a crash of the daemon, the OS or the power.
    #[default]
    Full,
    /// No fsync per commit (`synchronous = NORMAL`): survives a crash of the
    /// daemon; a power loss may take the last commits.
    Relaxed,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Largest size of the database file; writes beyond fail as "full".
    pub max_size_bytes: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            max_size_bytes: None,
        }
    }
}

type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// A queued write.
trait WriteOp: Send {
    /// Whether the caller needs the write on disk before its answer (an
    /// acknowledgement hangs on it), not only safe from a crash of the process.
    fn needs_sync(&self) -> bool;
    /// Runs inside its own savepoint; says whether it succeeded (else the
    /// savepoint is rolled back) and how to answer once the batch commits.
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply);
    /// Answers with an error without running.
    fn fail(self: Box<Self>, error: StoreError);
}

type Op = Box<dyn WriteOp>;

struct Write<F, T> {
    f: F,
    tx: oneshot::Sender<StoreResult<T>>,
    sync: bool,
}

impl<F, T> WriteOp for Write<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn needs_sync(&self) -> bool {
        self.sync
    }

    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply) {
        let Write { f, tx, .. } = *self;
        let result = f(conn);
        let ok = result.is_ok();
        let reply: Reply = Box::new(move |commit: StoreResult<()>| {
            let _ = tx.send(commit.and(result));
        });
        (ok, reply)
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.tx.send(Err(error));
    }
}

pub struct SqliteStore {
    /// Told of each group commit's time, once someone asks to be.
    on_commit: Arc<std::sync::OnceLock<CommitObserver>>,
    path: PathBuf,
    ops: Mutex<Option<std_mpsc::Sender<Op>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    options: StoreOptions,
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound("no such row".into()),
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        },
        _ => StoreError::Other(e.to_string()),
    }
}

fn open_connection(path: &Path, options: &StoreOptions, write: bool) -> StoreResult<Connection> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Unavailable(format!("cannot open the store {}: {e}", path.display()))
    })?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(map_err)?;
    if write {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map_err)?;
        let sync = match options.durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(map_err)?;
        if let Some(max) = options.max_size_bytes {
            let page_size: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(map_err)?;
            let pages = (max as i64 / page_size.max(512)).max(1);
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(map_err)?;
        }
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts its writer.
    pub fn open(path: &Path, options: StoreOptions) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = open_connection(path, &options, true)?;
        conn.execute_batch(SCHEMA).map_err(map_err)?;
        migrate(&conn)?;
        let (tx, rx) = std_mpsc::channel::<Op>();
        let durability = options.durability;
        let on_commit: Arc<std::sync::OnceLock<CommitObserver>> = Arc::default();
        let observer = on_commit.clone();
        std::thread::Builder::new()
            .name("switchyard-store".into())
            .spawn(move || writer(conn, rx, durability, observer))
            .map_err(|e| StoreError::Other(format!("cannot start the store writer: {e}")))?;
        Ok(SqliteStore {
            on_commit,
            path: path.to_path_buf(),
            ops: Mutex::new(Some(tx)),
            readers: Arc::new(Mutex::new(Vec::new())),
            options,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write that must be on disk before it is answered (with
    /// `durability = "full"`): what an acknowledgement or a user's command
    /// hangs on.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.submit(true, f)
    }

    /// Queues a write that need only survive a crash of the process, not of
    /// the machine: the pipeline's own bookkeeping (routing, claims, attempt
    /// records). Losing the last of these to a power cut only repeats work —
    /// an event is routed again with the same idempotency keys, a job runs
    /// again — and the next synced commit makes them durable too.
    fn write_relaxed<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.submit(false, f)
    }

    fn submit<T: Send + 'static>(
        &self,
        sync: bool,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let op: Op = Box::new(Write { f, tx, sync });
        let sent = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|ops| ops.send(op).is_ok())
            .unwrap_or(false);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Unavailable("the store is closed".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("the store writer stopped".into())))
        })
    }

    /// Runs a read on a pooled read connection, on a blocking thread.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let options = self.options.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let conn = match pooled {
                    Some(c) => c,
                    None => open_connection(&path, &options, false)?,
                };
                let result = f(&conn);
                let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < 8 {
                    pool.push(conn);
                }
                result
            })
            .await
            .map_err(|e| StoreError::Other(format!("read task failed: {e}")))?
        })
    }

    /// Stops the writer after the writes already queued.
    pub fn close(&self) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The writer thread: group commit. A batch holding a write that needs to
/// be on disk commits with an fsync (`synchronous = FULL`, with full
/// durability); a batch of bookkeeping only commits without one (`NORMAL`).
/// Told the time of each group commit.
pub type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

fn writer(
    conn: Connection,
    rx: std_mpsc::Receiver<Op>,
    durability: Durability,
    on_commit: Arc<std::sync::OnceLock<CommitObserver>>,
) {
    let mut synchronous = "";
    // Statements run per batch and per write: parse them once.
    let run =
        |sql: &str| -> rusqlite::Result<()> { conn.prepare_cached(sql)?.execute([]).map(|_| ()) };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let wanted = if durability == Durability::Full && batch.iter().any(|op| op.needs_sync()) {
            "FULL"
        } else {
            "NORMAL"
        };
        if wanted != synchronous && conn.pragma_update(None, "synchronous", wanted).is_ok() {
            synchronous = wanted;
        }
        if let Err(e) = run("BEGIN IMMEDIATE") {
            let err = map_err(e);
            tracing::error!("store: cannot begin a transaction: {err}");
            for op in batch {
                op.fail(err.clone());
            }
            continue;
        }
        let ops = batch.len();
        let started = std::time::Instant::now();
        let mut replies = Vec::with_capacity(batch.len());
        for op in batch {
            if let Err(e) = run("SAVEPOINT op") {
                op.fail(map_err(e));
                continue;
            }
            let (ok, reply) = op.run(&conn);
            let undo = if ok {
                "RELEASE op"
            } else {
                "ROLLBACK TO op; RELEASE op"
            };
            let _ = conn.execute_batch(undo);
            replies.push(reply);
        }
        let commit = if conn.is_autocommit() {
            // SQLite rolled the whole transaction back itself (it does on a
            // full disk or an I/O error): nothing of this batch was kept.
            Err(StoreError::Unavailable(
                "the batch was rolled back after a write failed (disk full or I/O error)".into(),
            ))
        } else {
            run("COMMIT").map_err(map_err)
        };
        if let Err(e) = &commit {
            tracing::error!("store: commit failed: {e}");
            let _ = run("ROLLBACK");
        }
        let took = started.elapsed();
        if let Some(f) = on_commit.get() {
            f(took);
        }
        tracing::trace!(ops, us = took.as_micros() as u64, "store commit");
        for reply in replies {
            reply(commit.clone());
        }
    }
}

/// Brings a store made by an earlier version up to this schema.
fn migrate(conn: &Connection) -> StoreResult<()> {
    let has = |table: &str, column: &str| -> StoreResult<bool> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .map_err(map_err)?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(1))
            .map_err(map_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)?;
        Ok(names.iter().any(|n| n == column))
    };
    if !has("events", "rules_version")? {
        conn.execute_batch("ALTER TABLE events ADD COLUMN rules_version INTEGER")
            .map_err(map_err)?;
    }
    Ok(())
}

/// The smallest ULID of a millisecond: ids below it were made before it.
fn ulid_floor(ms: i64) -> String {
    ulid::Ulid::from_parts(ms.max(0) as u64, 0).to_string()
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// What the writer needs of an event: its keys and its envelope, encoded
/// on the caller's thread.
struct EncodedEvent {
    id: String,
    source: String,
    kind: String,
    dedup_key: String,
    envelope: String,
    order: Option<switchyard_plugin_api::Order>,
}

impl EncodedEvent {
    fn new(e: &Event) -> StoreResult<EncodedEvent> {
        Ok(EncodedEvent {
            id: e.id.clone(),
            source: e.source.clone(),
            kind: e.kind.clone(),
            dedup_key: e.dedup_key.clone(),
            envelope: serde_json::to_string(e).map_err(|err| StoreError::Other(err.to_string()))?,
            order: e.order.clone(),
        })
    }
}

/// Whether an ordered event's version is not newer than the last accepted
/// for its object.
fn is_stale(conn: &Connection, ev: &EncodedEvent) -> StoreResult<bool> {
    let Some(order) = &ev.order else {
        return Ok(false);
    };
    let last: Option<i64> = conn
        .prepare_cached("SELECT version FROM versions WHERE source = ?1 AND key = ?2")
        .map_err(map_err)?
        .query_row(params![ev.source, order.key], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    Ok(last.is_some_and(|v| order.version <= v))
}

fn ingest_tx(
    conn: &Connection,
    request: &StoredRequest,
    headers: &str,
    events: &[EncodedEvent],
    dedup_window_ms: i64,
) -> StoreResult<Vec<Ingested>> {
    let now = request.received_at_ms;
    let mut results = Vec::with_capacity(events.len());
    let mut seen = conn
        .prepare_cached(
            "SELECT event_id FROM dedup WHERE source = ?1 AND key = ?2 AND expires_at > ?3",
        )
        .map_err(map_err)?;
    let mut fresh: Vec<&EncodedEvent> = Vec::new();
    for ev in events {
        let prior: Option<String> = seen
            .query_row(params![ev.source, ev.dedup_key, now], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        match prior {
            Some(original) => results.push(Ingested::Duplicate(original)),
            None => match fresh.iter().find(|e| e.dedup_key == ev.dedup_key) {
                // Two events of one request with the same key: the first counts.
                Some(first) => results.push(Ingested::Duplicate(first.id.clone())),
                None => {
                    fresh.push(ev);
                    results.push(match is_stale(conn, ev)? {
                        true => Ingested::Stale(ev.id.clone()),
                        false => Ingested::New(ev.id.clone()),
                    });
                }
            },
        }
    }
    let verdict = if fresh.is_empty() && !events.is_empty() {
        "duplicate"
    } else {
        "accepted"
    };
    conn.prepare_cached(
        "INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .map_err(map_err)?
    .execute(params![
        request.id,
        request.source,
        now,
        request.method,
        request.path,
        request.query,
        headers,
        request.body.as_ref(),
        verdict
    ])
    .map_err(map_err)?;
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (id, request_id, source, type, received_at, envelope, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(map_err)?;
    let mut set_version = conn
        .prepare_cached(
            "INSERT INTO versions (source, key, version, event_id, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (source, key) DO UPDATE SET
                version = excluded.version, event_id = excluded.event_id,
                updated_at = excluded.updated_at
             WHERE excluded.version > versions.version",
        )
        .map_err(map_err)?;
    let stale: Vec<&str> = results
        .iter()
        .filter_map(|r| match r {
            Ingested::Stale(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut insert_key = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO dedup (source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(map_err)?;
    for ev in &fresh {
        let is_stale = stale.contains(&ev.id.as_str());
        insert_event
            .execute(params![
                ev.id,
                request.id,
                ev.source,
                ev.kind,
                now,
                ev.envelope,
                if is_stale { "stale" } else { "pending" }
            ])
            .map_err(map_err)?;
        if let (Some(order), false) = (&ev.order, is_stale) {
            set_version
                .execute(params![ev.source, order.key, order.version, ev.id, now])
                .map_err(map_err)?;
        }
        insert_key
            .execute(params![
                ev.source,
                ev.dedup_key,
                ev.id,
                now + dedup_window_ms
            ])
            .map_err(map_err)?;
    }
    let mut bump = conn
        .prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1")
        .map_err(map_err)?;
    for r in &results {
        if let Ingested::Duplicate(id) = r {
            bump.execute(params![id]).map_err(map_err)?;
        }
    }
    Ok(results)
}

fn routing_tx(conn: &Connection, routing: &Routing) -> StoreResult<Vec<ClaimedJob>> {
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
    let mut claimed = Vec::new();
    for job in &routing.jobs {
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
        if let (1, Some(event)) = (added, &routing.claim_with) {
            claimed.push(ClaimedJob {
                id: job.id.clone(),
                event: event.clone(),
                rule: job.rule.clone(),
                action: job.action.clone(),
                params: job.params.clone(),
                idempotency_key: job.idempotency_key.clone(),
                attempt: 1,
                series_attempt: 1,
            });
        }
    }
    Ok(claimed)
}

fn claim_tx(conn: &Connection, now_ms: i64, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
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
            event: parse_json(&event),
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

fn finish_tx(conn: &Connection, a: &FinishedAttempt) -> StoreResult<()> {
    let (outcome, message, state, next_at, finished_at) = match &a.finish {
        Finish::Done { result } => (
            "done",
            result.as_deref(),
            "done",
            None,
            Some(a.finished_at_ms),
        ),
        Finish::Retry {
            message,
            next_at_ms,
        } => (
            "retry",
            Some(message.as_str()),
            "pending",
            Some(*next_at_ms),
            None,
        ),
        Finish::Dead { message } => (
            "dead",
            Some(message.as_str()),
            "dead",
            None,
            Some(a.finished_at_ms),
        ),
    };
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

fn prune_tx(conn: &Connection, before_ms: i64, now_ms: i64) -> StoreResult<Pruned> {
    let events = conn
        .execute(
            "DELETE FROM events WHERE id IN (
                SELECT e.id FROM events e
                WHERE e.id < ?1 AND e.state IN ('routed', 'stale')
                  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id
                                  AND j.state IN ('pending', 'running'))
                LIMIT ?2)",
            params![ulid_floor(before_ms), PRUNE_CHUNK],
        )
        .map_err(map_err)? as u64;
    let requests = conn
        .execute(
            "DELETE FROM requests WHERE id IN (
                SELECT r.id FROM requests r
                WHERE r.id < ?1
                  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.request_id = r.id)
                LIMIT ?2)",
            params![ulid_floor(before_ms), PRUNE_CHUNK],
        )
        .map_err(map_err)? as u64;
    let dedup_keys = conn
        .execute(
            "DELETE FROM dedup WHERE (source, key) IN
                (SELECT source, key FROM dedup WHERE expires_at <= ?1 LIMIT ?2)",
            params![now_ms, PRUNE_CHUNK],
        )
        .map_err(map_err)? as u64;
    let versions = conn
        .execute(
            "DELETE FROM versions WHERE (source, key) IN
                (SELECT source, key FROM versions WHERE updated_at < ?1 LIMIT ?2)",
            params![before_ms, PRUNE_CHUNK],
        )
        .map_err(map_err)? as u64;
    Ok(Pruned {
        events,
        requests,
        dedup_keys,
        versions,
    })
}

fn job_records(
    conn: &Connection,
    sql_where: &str,
    arg: &dyn rusqlite::ToSql,
    limit: i64,
) -> StoreResult<Vec<JobRecord>> {
    let sql = format!(
        "SELECT id, event_id, rule, call_index, action, params, idempotency_key, state, attempts,
                next_at, last_error
         FROM jobs WHERE {sql_where} ORDER BY id LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql).map_err(map_err)?;
    let mut jobs = stmt
        .query_map(params![arg, limit], |r| {
            Ok(JobRecord {
                id: r.get(0)?,
                event_id: r.get(1)?,
                rule: r.get(2)?,
                call_index: r.get::<_, i64>(3)? as u32,
                action: r.get(4)?,
                params: parse_json(&r.get::<_, String>(5)?),
                idempotency_key: r.get(6)?,
                state: r.get(7)?,
                attempts: r.get::<_, i64>(8)? as u32,
                next_at_ms: r.get(9)?,
                last_error: r.get(10)?,
                attempt_log: Vec::new(),
            })
        })
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)?;
    let mut log = conn
        .prepare_cached(
            "SELECT n, started_at, finished_at, outcome, message FROM attempts WHERE job_id = ?1 ORDER BY n",
        )
        .map_err(map_err)?;
    for job in &mut jobs {
        job.attempt_log = log
            .query_map(params![job.id], |r| {
                Ok(AttemptRecord {
                    n: r.get::<_, i64>(0)? as u32,
                    started_at_ms: r.get(1)?,
                    finished_at_ms: r.get(2)?,
                    outcome: r.get(3)?,
                    message: r.get(4)?,
                })
            })
            .map_err(map_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)?;
    }
    Ok(jobs)
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
        let headers = serde_json::to_string(&request.headers).unwrap_or_else(|_| "[]".into());
        match encoded {
            Ok(events) => self
                .write(move |conn| ingest_tx(conn, &request, &headers, &events, dedup_window_ms)),
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
        self.write_relaxed(move |conn| routing_tx(conn, &routing))
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

    fn prune(&self, before_ms: i64, now_ms: i64) -> StoreFuture<'_, Pruned> {
        self.write_relaxed(move |conn| prune_tx(conn, before_ms, now_ms))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.write_relaxed(|_| Ok(()))
    }

    /// Set once; later calls are ignored.
    fn observe_commits(&self, f: CommitObserver) {
        let _ = self.on_commit.set(f);
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

impl Queries for SqliteStore {
    fn list_events(&self, filter: EventFilter) -> StoreFuture<'_, Vec<EventSummary>> {
        self.read(move |conn| {
            let mut sql = String::from(
                "SELECT e.id, e.source, e.type, e.received_at, e.state, e.duplicates,
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id),
                        (SELECT COUNT(*) FROM jobs j WHERE j.event_id = e.id AND j.state = 'dead')
                 FROM events e WHERE 1 = 1",
            );
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(source) = &filter.source {
                args.push(Box::new(source.clone()));
                sql.push_str(&format!(" AND e.source = ?{}", args.len()));
            }
            if let Some(kind) = &filter.kind {
                if let Some(prefix) = kind.strip_suffix('*') {
                    args.push(Box::new(format!("{prefix}%")));
                    sql.push_str(&format!(" AND e.type LIKE ?{}", args.len()));
                } else {
                    args.push(Box::new(kind.clone()));
                    sql.push_str(&format!(" AND e.type = ?{}", args.len()));
                }
            }
            if let Some(since) = filter.since_ms {
                args.push(Box::new(ulid_floor(since)));
                sql.push_str(&format!(" AND e.id >= ?{}", args.len()));
            }
            if let Some(until) = filter.until_ms {
                args.push(Box::new(ulid_floor(until)));
                sql.push_str(&format!(" AND e.id < ?{}", args.len()));
            }
            args.push(Box::new(filter.limit.max(1) as i64));
            sql.push_str(&format!(" ORDER BY e.id DESC LIMIT ?{}", args.len()));
            let mut stmt = conn.prepare(&sql).map_err(map_err)?;
            let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref()).collect();
            let rows = stmt
                .query_map(refs.as_slice(), |r| {
                    Ok(EventSummary {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        kind: r.get(2)?,
                        received_at_ms: r.get(3)?,
                        state: r.get(4)?,
                        duplicates: r.get::<_, i64>(5)? as u64,
                        jobs: r.get::<_, i64>(6)? as u64,
                        jobs_dead: r.get::<_, i64>(7)? as u64,
                    })
                })
                .map_err(map_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err)?;
            Ok(rows)
        })
    }

    fn enable_action(&self, action: String, now_ms: i64) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO action_states (action, state, until_ms, failures, reason, updated_at)
                 VALUES (?1, 'closed', NULL, 0, NULL, ?2)",
                params![action, now_ms],
            )
            .map_err(map_err)?;
            let n = conn
                .execute(
                    "UPDATE jobs SET next_at = ?2 WHERE action = ?1 AND state = 'pending' AND next_at > ?2",
                    params![action, now_ms],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
    }

    fn show_event(&self, id: String) -> StoreFuture<'_, EventDetail> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT envelope, state, routings, routed_at, duplicates, rule_runs, request_id,
                            rules_version
                     FROM events WHERE id = ?1",
                    params![id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<i64>>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no event {id}")))?;
            let (envelope, state, routings, routed_at, duplicates, rule_runs, request_id, version) =
                row;
            let request = conn
                .query_row(
                    "SELECT id, method, path, query, headers, body, verdict FROM requests WHERE id = ?1",
                    params![request_id],
                    |r| {
                        let headers: String = r.get(4)?;
                        let body: Vec<u8> = r.get(5)?;
                        Ok(RequestRecord {
                            id: r.get(0)?,
                            method: r.get(1)?,
                            path: r.get(2)?,
                            query: r.get(3)?,
                            headers: serde_json::from_str(&headers).unwrap_or_default(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                            verdict: r.get(6)?,
                        })
                    },
                )
                .map_err(map_err)?;
            let jobs = job_records(conn, "event_id = ?1", &id, 10_000)?;
            Ok(EventDetail {
                envelope: parse_json(&envelope),
                state,
                routings: routings as u32,
                routed_at_ms: routed_at,
                duplicates: duplicates as u64,
                rule_runs: rule_runs.map(|r| parse_json(&r)).unwrap_or(Value::Null),
                rules_version: version,
                request,
                jobs,
            })
        })
    }

    fn replay(&self, id: String) -> StoreFuture<'_, ()> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE events SET state = 'pending' WHERE id = ?1",
                    params![id],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no event {id}")));
            }
            Ok(())
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<JobRecord>> {
        self.read(move |conn| job_records(conn, "state = 'dead' AND ?1 = ?1", &1i64, limit as i64))
    }

    fn redrive(&self, id: Option<String>, now_ms: i64) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            let n = match &id {
                Some(id) => conn.execute(
                    "UPDATE jobs SET state = 'pending', next_at = ?2, series_start = attempts, finished_at = NULL
                     WHERE id = ?1 AND state = 'dead'",
                    params![id, now_ms],
                ),
                None => conn.execute(
                    "UPDATE jobs SET state = 'pending', next_at = ?1, series_start = attempts, finished_at = NULL
                     WHERE state = 'dead'",
                    params![now_ms],
                ),
            }
            .map_err(map_err)?;
            if n == 0 {
                if let Some(id) = id {
                    return Err(StoreError::NotFound(format!("no dead letter {id}")));
                }
            }
            Ok(n as u64)
        })
    }
}

#[cfg(test)]
mod tests;
