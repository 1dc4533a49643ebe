//! What a SQL backend gives the code written once for both (the
//! operators' side in `sql.rs`, the catalog's in `catalog.rs`): values and
//! rows, statements, and [`SqlBackend`] — a read, writes in one durable
//! transaction, the request an event came in, the statement that marks an
//! event for routing again.

use std::borrow::Cow;

use serde_json::Value;

use super::{Dialect, RequestRecord, StoreFuture, Work};

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(v: Option<i64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Int)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Text)
    }
}

/// A row as read, its values by position.
pub(crate) struct SqlRow(pub Vec<SqlValue>);

impl SqlRow {
    fn value(&self, i: usize) -> &SqlValue {
        self.0.get(i).unwrap_or(&SqlValue::Null)
    }

    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.value(i) {
            SqlValue::Null => None,
            SqlValue::Int(v) => Some(v.to_string()),
            SqlValue::Text(s) => Some(s.clone()),
            SqlValue::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        }
    }

    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }

    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match self.value(i) {
            SqlValue::Int(v) => Some(*v),
            SqlValue::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn int(&self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or_default()
    }

    /// A JSON column (`null` if empty or unreadable).
    pub fn json(&self, i: usize) -> Value {
        self.opt_text(i)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }
}

/// A statement and what it binds, `$1` first.
pub(crate) struct Statement {
    pub sql: Cow<'static, str>,
    pub params: Vec<SqlValue>,
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>, params: Vec<SqlValue>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }

    /// Whether its text is fixed (a constant): worth preparing once per
    /// connection. A text built per call (an operator's filters and limits)
    /// varies without end, and is not kept.
    pub fn fixed(&self) -> bool {
        matches!(self.sql, Cow::Borrowed(_))
    }
}

/// What a SQL backend gives the operators' side, which is written once
/// over it ([`Operations`] for every `SqlBackend`).
pub(crate) trait SqlBackend: Send + Sync + 'static {
    const DIALECT: Dialect;

    /// The rows of a read.
    fn rows(&self, read: Statement) -> StoreFuture<'_, Vec<SqlRow>>;

    /// Runs `writes` in one transaction, committed durably, and says how
    /// many rows each changed; tells the processes sharing the store of
    /// `work` with the commit, if the store has any.
    fn writes(&self, writes: Vec<Statement>, work: Option<Work>) -> StoreFuture<'_, Vec<u64>>;

    /// The request an event came in, as kept (redacted).
    fn request_record(&self, request_id: String) -> StoreFuture<'_, RequestRecord>;

    /// Marks an event for routing again (a shared store also says which
    /// instance routes it: the one asked).
    fn replay_statement(&self, event_id: String) -> Statement;
}
