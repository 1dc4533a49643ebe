//! The writer thread: every write of the embedded store, in groups. It
//! takes what waits in its queue (at most [`MAX_BATCH`]), runs each write
//! in one transaction, writes and syncs the group's journal
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
    /// Runs in the batch's transaction; says whether it succeeded (else
    /// what it staged in the journal is dropped, and the batch rolled back
    /// if it had changed rows) and how to answer once the batch commits.
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
            // A write that failed says its own why; one that ran, the commit's.
            let _ = tx.send(result.and_then(|v| commit.map(|()| v)));
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
        let (replies, broken) = run_batch(&conn, &mut state, batch);
        let commit = match broken {
            None => commit_batch(&conn, &mut state),
            Some(e) => roll_back(&conn, &mut state, e),
        };
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

/// Runs each write of a batch in the open transaction. A write that fails
/// before changing a row (a command for an id that is not there, a full
/// store) fails alone: what it staged in the journal is dropped. One that
/// fails after changing rows cannot be undone alone, so the batch is
/// rolled back whole (its writes answered with the error, those not run
/// yet failed with it): an I/O error or a broken invariant, not the usual
/// way. No savepoint per write: a savepoint has SQLite copy every page a
/// write touches to its sub-journal first, a tenth of the writer's time.
fn run_batch(
    conn: &Connection,
    state: &mut WriterState,
    batch: Vec<Op>,
) -> (Vec<Reply>, Option<StoreError>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    for op in batch {
        if let Some(e) = &broken {
            op.fail(e.clone());
            continue;
        }
        let mark = state.journal.mark();
        let changes = conn.total_changes();
        let (ok, reply) = op.run(conn, state);
        if !ok {
            state.journal.rewind(mark);
            if conn.total_changes() != changes || conn.is_autocommit() {
                broken = Some(StoreError::Unavailable(
                    "a write of the group failed after changing rows; the group was rolled back"
                        .into(),
                ));
            }
        }
        replies.push(reply);
    }
    (replies, broken)
}

/// A batch that cannot be kept (a write broke it, its journal or its
/// commit failed): rolled back, its journal records and dedup keys dropped.
fn roll_back(conn: &Connection, state: &mut WriterState, error: StoreError) -> StoreResult<()> {
    tracing::error!("store: the group was not kept: {error}");
    let _ = exec(conn, "ROLLBACK");
    state.journal.discard();
    state.keys.undo();
    Err(error)
}

/// Writes and syncs the batch's journal records, then commits the
/// transaction that holds their rows; on failure, [`roll_back`].
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
    match commit {
        Ok(()) => {
            state.keys.keep();
            Ok(())
        }
        Err(e) => roll_back(conn, state, e),
    }
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

#[cfg(test)]
mod tests {
    use super::super::journal::JournalOptions;
    use super::*;

    type Answer = oneshot::Receiver<StoreResult<()>>;

    fn setup(dir: &Path) -> (Connection, WriterState) {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        let options = JournalOptions {
            sync: false,
            ..Default::default()
        };
        let (journal, _) = Journal::open(&dir.join("journal"), options, 1).unwrap();
        let state = WriterState {
            journal,
            keys: Default::default(),
        };
        (conn, state)
    }

    /// A write that inserts `rows`, then fails with `fail` if given.
    fn write(rows: &'static [i64], fail: Option<StoreError>) -> (Op, Answer) {
        let (tx, rx) = oneshot::channel();
        let f = move |conn: &Connection, _: &mut WriterState| {
            for v in rows {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map_err(map_err)?;
            }
            fail.map_or(Ok(()), Err)
        };
        (Box::new(Write { f, tx, sync: false }), rx)
    }

    /// Runs `ops` as one batch, as the writer does; the rows kept, and
    /// each write's answer.
    fn batch(
        conn: &Connection,
        state: &mut WriterState,
        ops: Vec<(Op, Answer)>,
    ) -> Vec<StoreResult<()>> {
        let (ops, answers): (Vec<Op>, Vec<Answer>) = ops.into_iter().unzip();
        exec(conn, "BEGIN IMMEDIATE").unwrap();
        let (replies, broken) = run_batch(conn, state, ops);
        let commit = match broken {
            None => commit_batch(conn, state),
            Some(e) => roll_back(conn, state, e),
        };
        for reply in replies {
            reply(commit.clone());
        }
        answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap())
            .collect()
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_write_that_fails_before_changing_a_row_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, mut state) = setup(dir.path());
        let answers = batch(
            &conn,
            &mut state,
            vec![
                write(&[1], None),
                write(&[], Some(StoreError::NotFound("x".into()))),
                write(&[2], None),
            ],
        );
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(StoreError::NotFound(_))));
        assert_eq!(rows(&conn), [1, 2]);
        assert!(conn.is_autocommit(), "committed");
    }

    #[test]
    fn a_write_that_fails_after_changing_rows_rolls_the_batch_back() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, mut state) = setup(dir.path());
        let answers = batch(
            &conn,
            &mut state,
            vec![
                write(&[1], None),
                write(&[3], Some(StoreError::Other("broken".into()))),
                write(&[2], None),
            ],
        );
        assert!(
            matches!(answers[0], Err(StoreError::Unavailable(_))),
            "{answers:?}"
        );
        assert!(matches!(answers[1], Err(StoreError::Other(_))));
        assert!(matches!(answers[2], Err(StoreError::Unavailable(_))));
        assert_eq!(rows(&conn), Vec::<i64>::new(), "nothing of the batch kept");
        // The writer goes on with the next batch.
        let answers = batch(&conn, &mut state, vec![write(&[4], None)]);
        assert!(answers[0].is_ok());
        assert_eq!(rows(&conn), [4]);
    }

    #[test]
    fn a_constraint_that_fails_a_statement_changes_nothing_it_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, mut state) = setup(dir.path());
        // The second write's insert hits the first's key: SQLite undoes
        // the statement, no row changed, the others are kept.
        let answers = batch(
            &conn,
            &mut state,
            vec![write(&[1], None), write(&[1], None), write(&[2], None)],
        );
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert!(answers[1].is_err());
        assert_eq!(rows(&conn), [1, 2]);
    }
}
