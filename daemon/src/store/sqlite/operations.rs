//! What the embedded store gives the operators' side, which is written
//! once for both backends (`store/sql.rs`): reads on the read pool, writes
//! as one synced write of the writer thread, a request's headers and body
//! read back from the journal.

use rusqlite::types::{ToSqlOutput, Value as Cell, ValueRef};
use rusqlite::{params_from_iter, Connection};

use super::*;
use crate::store::sql::{numbered_for_sqlite, SqlBackend, SqlRow, SqlValue, Statement};
use crate::store::Work;

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Int(v) => ValueRef::Integer(*v),
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
            SqlValue::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

/// Runs `f` on `statement` prepared through the connection's cache, and
/// keeps it there only if its text is fixed: a text built per call (an
/// operator's filters and limits) would push the pipeline's statements out.
fn with_prepared<T>(
    conn: &Connection,
    statement: &Statement,
    f: impl FnOnce(&mut rusqlite::Statement<'_>) -> rusqlite::Result<T>,
) -> StoreResult<T> {
    let mut stmt = conn
        .prepare_cached(&numbered_for_sqlite(&statement.sql))
        .map_err(map_err)?;
    let out = f(&mut stmt).map_err(map_err);
    if !statement.fixed() {
        stmt.discard();
    }
    out
}

fn query(conn: &Connection, read: &Statement) -> StoreResult<Vec<SqlRow>> {
    with_prepared(conn, read, |stmt| {
        let columns = stmt.column_count();
        let rows = stmt.query_map(params_from_iter(&read.params), |r| {
            (0..columns)
                .map(|i| {
                    Ok(match r.get::<_, Cell>(i)? {
                        Cell::Null => SqlValue::Null,
                        Cell::Integer(v) => SqlValue::Int(v),
                        Cell::Real(v) => SqlValue::Text(v.to_string()),
                        Cell::Text(s) => SqlValue::Text(s),
                        Cell::Blob(b) => SqlValue::Bytes(b),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(SqlRow)
        })?;
        rows.collect()
    })
}

impl SqlBackend for SqliteStore {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn rows(&self, read: Statement) -> StoreFuture<'_, Vec<SqlRow>> {
        self.read(move |conn| query(conn, &read))
    }

    /// One process: there is nobody to tell of `work`.
    fn writes(&self, writes: Vec<Statement>, _work: Option<Work>) -> StoreFuture<'_, Vec<u64>> {
        self.write(move |conn| {
            writes
                .iter()
                .map(|w| {
                    with_prepared(conn, w, |stmt| stmt.execute(params_from_iter(&w.params)))
                        .map(|n| n as u64)
                })
                .collect()
        })
    }

    fn request_record(&self, request_id: String) -> StoreFuture<'_, RequestRecord> {
        let journal_dir = self.journal_dir.clone();
        self.read(move |conn| super::ingest::request_record(conn, &journal_dir, &request_id))
    }

    fn replay_statement(&self, event_id: String) -> Statement {
        Statement::new(
            "UPDATE events SET state = 'pending' WHERE id = $1",
            vec![event_id.into()],
        )
    }
}
