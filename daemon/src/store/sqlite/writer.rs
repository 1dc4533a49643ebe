//! The writer thread: every write of the embedded store, in groups. It
//! takes what waits in its queue (at most [`MAX_BATCH`]), runs each write
//! in a savepoint of one transaction, writes and syncs the group's journal
//! records once, and commits once; then answers each write. Beside it, the
//! checkpointer's thread copies the WAL into the database when asked.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::journal::Journal;
use super::{ingest, keys, map_err, open_connection, StoreOptions};
use crate::store::{CommitObserver, Durability, StoreError, StoreResult};

/// Commits between two checkpoints (on the checkpointer's thread).
const CHECKPOINT_EVERY: u32 = 64;
/// WAL frames past which the checkpointer starts the WAL over.
const WAL_RESTART_FRAMES: i64 = 4096;
/// Most writes committed together.
const MAX_BATCH: usize = 1024;

pub(super) type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// A queued write.
pub(super) trait WriteOp: Send {
    /// Whether the caller needs the write on disk before its answer (an
    /// acknowledgement hangs on it), not only safe from a crash of the process.
    fn needs_sync(&self) -> bool;
    /// Runs inside its own savepoint; says whether it succeeded (else the
    /// savepoint is rolled back, and what it staged in the journal dropped)
    /// and how to answer once the batch commits.
    fn run(self: Box<Self>, conn: &Connection, state: &mut WriterState) -> (bool, Reply);
    /// Answers with an error without running.
    fn fail(self: Box<Self>, error: StoreError);
}

pub(super) type Op = Box<dyn WriteOp>;

/// A queued write: a closure run on the writer thread with its connection
/// and what it holds beside it (the journal, the recent keys).
pub(super) struct Write<F, T> {
    pub f: F,
    pub tx: oneshot::Sender<StoreResult<T>>,
    /// Whether the database's commit must be synced for it: an operator's
    /// command. Ingests are synced by the journal's group instead.
    pub sync: bool,
}

impl<F, T> WriteOp for Write<F, T>
where
    F: FnOnce(&Connection, &mut WriterState) -> StoreResult<T> + Send + 'static,
    T: Send + 'static,
{
    fn needs_sync(&self) -> bool {
        self.sync
    }

    fn run(self: Box<Self>, conn: &Connection, state: &mut WriterState) -> (bool, Reply) {
        let Write { f, tx, .. } = *self;
        let result = f(conn, state);
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

/// What the writer thread holds beside its connection: the journal, and the
/// dedup keys of recent events (`keys.rs`).
pub(super) struct WriterState {
    pub journal: Journal,
    pub keys: keys::RecentKeys,
}

/// The writer thread: group commit. A batch holding a write that needs to
/// be on disk commits with an fsync (`synchronous = FULL`, with full
/// durability); a batch of bookkeeping only commits without one (`NORMAL`).
pub(super) fn writer(
    conn: Connection,
    mut state: WriterState,
    rx: std_mpsc::Receiver<Op>,
    durability: Durability,
    on_commit: Arc<std::sync::OnceLock<CommitObserver>>,
    checkpointer: Checkpointer,
) {
    let Checkpointer {
        ask: checkpoints,
        wal_frames,
        thread: checkpoint_thread,
    } = checkpointer;
    let mut synchronous = "";
    let mut since_checkpoint = 0u32;
    while let Ok(first) = rx.recv() {
        let batch = take_batch(&rx, first);
        let wanted = if durability == Durability::Full && batch.iter().any(|op| op.needs_sync()) {
            "FULL"
        } else {
            "NORMAL"
        };
        if wanted != synchronous && conn.pragma_update(None, "synchronous", wanted).is_ok() {
            synchronous = wanted;
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            let err = map_err(e);
            tracing::error!("store: cannot begin a transaction: {err}");
            for op in batch {
                op.fail(err.clone());
            }
            continue;
        }
        let ops = batch.len();
        let started = std::time::Instant::now();
        let replies = run_batch(&conn, &mut state, batch);
        let commit = commit_batch(&conn, &mut state);
        let took = started.elapsed();
        if let Some(f) = on_commit.get() {
            f(took);
        }
        tracing::trace!(ops, us = took.as_micros() as u64, "store commit");
        for reply in replies {
            reply(commit.clone());
        }
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY {
            // A full queue means one is asked for already.
            let _ = checkpoints.try_send(());
            since_checkpoint = 0;
        }
        between_batches(&conn, &mut state, &wal_frames);
    }
    // The checkpointer's connection closes before the writer's: the last
    // to close folds the WAL into the database.
    drop(checkpoints);
    let _ = checkpoint_thread.join();
}

/// Runs a statement the writer runs per batch or per write, parsed once.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// `first` and every write waiting behind it, at most [`MAX_BATCH`].
fn take_batch(rx: &std_mpsc::Receiver<Op>, first: Op) -> Vec<Op> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
    batch
}

/// Runs each write of a batch in a savepoint of the open transaction: one
/// that fails is rolled back alone, with what it staged in the journal.
/// The answers wait for the commit.
fn run_batch(conn: &Connection, state: &mut WriterState, batch: Vec<Op>) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(batch.len());
    for op in batch {
        if let Err(e) = exec(conn, "SAVEPOINT op") {
            op.fail(map_err(e));
            continue;
        }
        let mark = state.journal.mark();
        let (ok, reply) = op.run(conn, state);
        if !ok {
            state.journal.rewind(mark);
            let _ = exec(conn, "ROLLBACK TO op");
        }
        let _ = exec(conn, "RELEASE op");
        replies.push(reply);
    }
    replies
}

/// Writes and syncs the batch's journal records, then commits the
/// transaction that holds their rows; on failure rolls back and forgets
/// the batch's dedup keys.
fn commit_batch(conn: &Connection, state: &mut WriterState) -> StoreResult<()> {
    // The group's journal records go to disk before the commit that
    // holds their rows: the database never holds what the journal lacks.
    let journal = &mut state.journal;
    let journaled = if !journal.has_staged() || conn.is_autocommit() {
        journal.discard();
        Ok(())
    } else {
        let last = journal.next_seq() - 1;
        ingest::set_applied_seq(conn, last).and_then(|()| {
            journal
                .commit()
                .map_err(|e| StoreError::Unavailable(format!("cannot write the journal: {e}")))
        })
    };
    let commit = if let Err(e) = journaled {
        journal.discard();
        Err(e)
    } else if conn.is_autocommit() {
        // SQLite rolled the whole transaction back itself (it does on a
        // full disk or an I/O error): nothing of this batch was kept.
        Err(StoreError::Unavailable(
            "the batch was rolled back after a write failed (disk full or I/O error)".into(),
        ))
    } else {
        exec(conn, "COMMIT").map_err(map_err)
    };
    if let Err(e) = &commit {
        tracing::error!("store: commit failed: {e}");
        let _ = exec(conn, "ROLLBACK");
        state.keys.undo();
    } else {
        state.keys.keep();
    }
    commit
}

/// Between batches: the WAL started over once it has grown past its
/// bound, the recent dedup keys written once there are enough of them.
fn between_batches(conn: &Connection, state: &mut WriterState, wal_frames: &AtomicI64) {
    // A checkpoint on another connection never catches a writer that
    // keeps writing, and the WAL starts over only once one has: past a
    // bound, the writer copies the last frames itself (the checkpointer
    // copied the rest), and its next transaction starts the WAL over.
    if wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
        wal_frames.store(0, Ordering::Relaxed);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("store: checkpoint failed (tried again later): {e}");
        }
    }
    if state.keys.len() >= keys::FLUSH_AT {
        match state.keys.flush(conn, crate::store::now_ms()) {
            Ok(n) => tracing::debug!(keys = n, "dedup keys written"),
            Err(e) => tracing::warn!("cannot write the dedup keys yet: {e}"),
        }
    }
}

/// The checkpointer: a connection of its own that copies the WAL into the
/// database when the writer asks (a passive checkpoint: the writer goes on
/// meanwhile), and says how long the WAL has grown.
pub(super) fn start_checkpointer(
    path: &Path,
    options: &StoreOptions,
    wal_frames: Arc<AtomicI64>,
) -> StoreResult<Checkpointer> {
    let conn = open_connection(path, options, true)?;
    let (tx, rx) = std_mpsc::sync_channel::<()>(1);
    let frames = wal_frames.clone();
    let thread = std::thread::Builder::new()
        .name("switchyard-ckpt".into())
        .spawn(move || {
            let frames_seen = frames;
            let checkpoint = |mode: &str| -> rusqlite::Result<i64> {
                conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
            };
            while rx.recv().is_ok() {
                match checkpoint("PASSIVE") {
                    Ok(frames) => frames_seen.store(frames, Ordering::Relaxed),
                    Err(e) => tracing::warn!("store: checkpoint failed (tried again later): {e}"),
                }
            }
        })
        .map_err(|e| StoreError::Other(format!("cannot start the checkpointer: {e}")))?;
    Ok(Checkpointer {
        ask: tx,
        wal_frames,
        thread,
    })
}

/// The writer's side of the checkpointer.
pub(super) struct Checkpointer {
    ask: std_mpsc::SyncSender<()>,
    /// The WAL's length in frames, as the last checkpoint found it.
    wal_frames: Arc<AtomicI64>,
    thread: std::thread::JoinHandle<()>,
}
