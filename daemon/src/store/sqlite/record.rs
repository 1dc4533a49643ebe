//! Statement recording for the plan tests (`tests/it/plans/`): every
//! statement run on the connections of a store whose path is being
//! recorded, as SQLite saw it. Nothing is recorded otherwise; a connection
//! opened for a path no one records is left as it is.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::Connection;

/// The statements seen so far (their text, each once).
pub type Recorded = Arc<Mutex<BTreeSet<String>>>;

static RECORDING: Mutex<Option<HashMap<PathBuf, Recorded>>> = Mutex::new(None);

/// Records the statements of the store at `path`, on every connection
/// opened from now on.
#[doc(hidden)]
pub fn record_statements(path: &Path) -> Recorded {
    let recorded = Recorded::default();
    RECORDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(path.to_path_buf(), recorded.clone());
    recorded
}

/// `conn`, recording its statements if its store's path is recorded.
pub(super) fn recorded(path: &Path, mut conn: Connection) -> Connection {
    let recorded = RECORDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(path).cloned());
    if let Some(recorded) = recorded {
        conn.trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(move |e: TraceEvent<'_>| {
                if let TraceEvent::Stmt(stmt, _) = e {
                    let sql = stmt.sql().into_owned();
                    recorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(sql);
                }
            }),
        )
        .ok();
    }
    conn
}
