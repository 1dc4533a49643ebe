//! The embedded backend: one SQLite database file in WAL mode.
//!
//! One writer thread owns the writing connection and commits in groups (see
//! the module doc of `store`); reads use a small pool of read connections on
//! blocking threads. Several processes may open the same file (the daemon
//! and the CLI): SQLite's locks and a busy timeout keep them apart.
//!
//! The writer thread also owns the journal (`journal/`): a request's
//! record is staged there by its ingest, and each group's records are
//! written and synced in one go before the group's commit. The database
//! itself then commits without a sync of its own for ingests
//! (`synchronous = NORMAL`): what it may lose to a power cut is applied
//! again from the journal at the next open (`ingest::recover`).
//!
//! Checkpoints (copying the WAL into the database file, with their syncs)
//! run on a thread and connection of their own, asked for by the writer
//! every 64 commits, so that no acknowledgement waits for one; past 4,096
//! WAL frames the writer copies the last few itself so that the WAL starts
//! over (a checkpoint beside a writer that never pauses never catches up).
//!
//! Here: opening, the read pool; `writer.rs`: the writer thread with
//! group commit, and the checkpointer. `migrate.rs`: the schema, in numbered migrations
//! (`migrations/`). `ingest.rs`: what becomes of a request's events, its journal record and its rows; `journal_record.rs`: that record's bytes (compressed); `envelopes.rs`: events' envelopes read from those records by SQL (`journal_envelope`); `pipeline.rs`: the
//! pipeline's other transactions ([`Pipeline`]); `operations.rs`: the
//! operators' reads and commands ([`Operations`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    ActionState, Backlog, ClaimedJob, CommitObserver, Dialect, Durability, FinishedAttempt,
    Ingested, PendingEvent, Pipeline, Pruned, RequestRecord, Routing, StoreError, StoreFuture,
    StoreResult, StoredRequest,
};
use journal::JournalOptions;
use writer::{start_checkpointer, writer, Op, Write, WriterState};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Largest size of the database file and the journal together; ingests
    /// beyond fail as "full".
    pub max_size_bytes: Option<u64>,
    /// Where the journal's segments go; by default a `journal` folder beside
    /// the database file.
    pub journal_dir: Option<PathBuf>,
    /// A new journal segment is started past this size.
    pub segment_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            max_size_bytes: None,
            journal_dir: None,
            segment_bytes: JournalOptions::default().segment_bytes,
        }
    }
}

pub struct SqliteStore {
    /// Told of each group commit's time, once someone asks to be.
    on_commit: Arc<std::sync::OnceLock<CommitObserver>>,
    path: PathBuf,
    ops: Mutex<Option<std_mpsc::Sender<Op>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    options: StoreOptions,
    journal_dir: PathBuf,
    recovery: ingest::Recovery,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The store may hold jobs of ordered actions, waiting or running:
    /// only then do claims look for them (set by a routing that adds one,
    /// cleared by a claim that finds none).
    ordered: Arc<std::sync::atomic::AtomicBool>,
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

/// Where the journal's segments are: by default a `journal` folder beside
/// the database file.
fn journal_dir(path: &Path, options: &StoreOptions) -> PathBuf {
    options.journal_dir.clone().unwrap_or_else(|| {
        path.parent()
            .unwrap_or_else(|| Path::new("."))
            .join("journal")
    })
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
    let conn = record::recorded(path, conn);
    conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
    envelopes::register(&conn, journal_dir(path, options)).map_err(map_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(map_err)?;
    if write {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map_err)?;
        // A statement that may fail after changing several rows (an
        // UPDATE of many) has its pages copied to a statement journal,
        // which SQLite would spill to a temporary file past 64 KiB, a
        // write(2) per page. In memory it is only the pages it touches.
        conn.pragma_update(None, "temp_store", "MEMORY")
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
        migrate::migrate(&conn)?;
        let journal_dir = journal_dir(path, &options);
        let journal_options = JournalOptions {
            sync: options.durability == Durability::Full,
            segment_bytes: options.segment_bytes,
        };
        let (journal, recovery) = ingest::recover(&conn, &journal_dir, journal_options)?;
        let keys = keys::RecentKeys::load(&conn, super::now_ms())?;
        let ordered: bool = conn
            .query_row(sql::ORDERED_WAITING, [], |r| r.get(0))
            .map_err(map_err)?;
        let state = WriterState { journal, keys };
        for damage in &recovery.damage {
            tracing::warn!("{damage}");
        }
        if recovery.applied > 0 {
            tracing::warn!(
                records = recovery.applied,
                "applied journal records the database had lost (its last commits before a crash)"
            );
        }
        // Checkpoints (copying the WAL into the database, with its syncs)
        // run on a thread of their own, off the path an acknowledgement
        // waits on; the writer only asks for one now and then.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(map_err)?;
        let checkpointer = start_checkpointer(path, &options, Arc::new(AtomicI64::new(0)))?;
        let (tx, rx) = std_mpsc::channel::<Op>();
        let durability = options.durability;
        let on_commit: Arc<std::sync::OnceLock<CommitObserver>> = Arc::default();
        let observer = on_commit.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-store".into())
            .spawn(move || writer(conn, state, rx, durability, observer, checkpointer))
            .map_err(|e| StoreError::Other(format!("cannot start the store writer: {e}")))?;
        Ok(SqliteStore {
            on_commit,
            path: path.to_path_buf(),
            ops: Mutex::new(Some(tx)),
            readers: Arc::new(Mutex::new(Vec::new())),
            options,
            journal_dir,
            recovery,
            thread: Mutex::new(Some(thread)),
            ordered: Arc::new(ordered.into()),
        })
    }

    /// What opening found in the journal: records applied again, damage.
    pub fn recovery(&self) -> &ingest::Recovery {
        &self.recovery
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
        let f = move |conn: &Connection, _: &mut WriterState| f(conn);
        self.queue(Box::new(Write { f, tx, sync }), rx)
    }

    /// Queues a write that stages journal records (or tends the journal):
    /// its answer waits for the group's journal write and sync.
    fn journal_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut WriterState) -> StoreResult<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        self.queue(Box::new(Write { f, tx, sync: false }), rx)
    }

    fn queue<T: Send + 'static>(
        &self,
        op: Op,
        rx: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreFuture<'_, T> {
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

    /// Stops the writer after the writes already queued, and waits for it
    /// (it lets go of the journal when it ends). Blocks: not for async code.
    pub fn close(&self) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` in a transaction of its own: committed if it succeeds, rolled
/// back if it or the commit fails. Outside the writer's batches only (the
/// recovery at open, the dedup keys' flush between batches).
fn in_transaction<T>(conn: &Connection, f: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    let done = f().and_then(|v| {
        conn.execute_batch("COMMIT").map_err(map_err)?;
        Ok(v)
    });
    if done.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// One of the store's own marks (the `meta` table).
fn meta(conn: &Connection, key: &str) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .map_err(map_err)?
        .query_row(params![key], |r| r.get(0))
        .optional()
        .map_err(map_err)
}

fn set_meta(conn: &Connection, key: &str, value: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .map_err(map_err)?
    .execute(params![key, value])
    .map_err(map_err)?;
    Ok(())
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

mod envelopes;
pub(crate) use envelopes::ENVELOPE;

/// Gives a connection of one's own to the store's database the SQL
/// functions its statements use (`journal_envelope`, reading from the
/// journal in `journal_dir`): for tools that read it beside the daemon.
pub fn register_functions(conn: &Connection, journal_dir: &Path) -> rusqlite::Result<()> {
    envelopes::register(conn, journal_dir.to_path_buf())
}
mod ingest;
pub mod journal;
mod journal_record;
mod keys;
mod migrate;
mod operations;
mod pipeline;
mod record;
mod sql;
mod writer;

pub use ingest::Recovery;
pub use record::record_statements;
