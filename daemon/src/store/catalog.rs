//! What the store keeps for the event-type catalog, written once for both
//! SQL backends over [`SqlBackend`]: each source's types as they arrive
//! (`event_types`: counts, first and last seen, the last event, a learned
//! schema), the drift found in them (`schema_drift`, one row per source,
//! type, path and kind), and events held for an operator (state `held`).
//!
//! The catalog counts in memory and records here about once a second, one
//! transaction for all it counted: a statement per type and per drift that
//! changed, never one per event. Each statement reads and writes one row
//! by its key; retention deletes rows not seen within it, through an index
//! on `last_seen`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sql_backend::{SqlBackend, SqlRow, SqlValue, Statement};
use super::{Dialect, StoreResult};

const HOUR_MS: i64 = 3_600_000;

/// What arrived of one type since the last record.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeTally {
    pub source: String,
    pub kind: String,
    pub count: u64,
    /// The last event of it.
    pub last_event: String,
}

/// One drift seen since the last record: where events of a type did not
/// match its schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftTally {
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON pointer into the event's data (`/eventData/entityId`);
    /// empty for the type itself (`unknown_type`).
    pub path: String,
    /// `unknown_type`, `missing`, `type_changed`, `added` or `invalid`.
    pub drift: String,
    pub detail: String,
    pub count: u64,
    pub first_event: String,
    pub last_event: String,
}

/// A schema learned for a type the catalog does not describe.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    pub source: String,
    pub kind: String,
    pub schema: Value,
    /// From how many events.
    pub from: u64,
}

/// One record of the catalog's counts, at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub at_ms: i64,
    pub types: Vec<TypeTally>,
    pub drift: Vec<DriftTally>,
    pub learned: Vec<Learned>,
    /// Also forget types and drift not seen since then (retention).
    pub prune_before_ms: Option<i64>,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.drift.is_empty()
            && self.learned.is_empty()
            && self.prune_before_ms.is_none()
    }
}

/// A type as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeRow {
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub total: u64,
    pub hour_start_ms: i64,
    pub this_hour: u64,
    pub last_hour: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub last_event: String,
    pub learned: Option<Value>,
    pub learned_from: u64,
}

impl TypeRow {
    /// How many arrived in the hour before `now_ms`: this clock hour's
    /// count and the part of the last one's still within the hour, as if
    /// it came evenly (a sliding window from two counts).
    pub fn in_last_hour(&self, now_ms: i64) -> u64 {
        let hour = now_ms - now_ms.rem_euclid(HOUR_MS);
        let (this, last) = if self.hour_start_ms >= hour {
            (self.this_hour, self.last_hour)
        } else if self.hour_start_ms == hour - HOUR_MS {
            (0, self.this_hour)
        } else {
            (0, 0)
        };
        let left = 1.0 - (now_ms - hour) as f64 / HOUR_MS as f64;
        this + (last as f64 * left).round() as u64
    }
}

/// A drift as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRow {
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    pub drift: String,
    pub detail: String,
    pub count: u64,
    pub first_event: String,
    pub last_event: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// Adds a type's counts ($1 source, $2 type, $3 count, $4 the clock hour,
/// $5 now, $6 the last event). A count of another hour than the row's
/// moves the row's hour along; one of an earlier hour (a clock stepped
/// back) counts in the row's.
const COUNT_TYPE: &str = "INSERT INTO event_types (source, type, total, hour_start, this_hour,
        last_hour, first_seen, last_seen, last_event)
    VALUES ($1, $2, $3, $4, $3, 0, $5, $5, $6)
    ON CONFLICT (source, type) DO UPDATE SET
        total = event_types.total + excluded.total,
        last_hour = CASE WHEN excluded.hour_start <= event_types.hour_start THEN event_types.last_hour
                         WHEN excluded.hour_start = event_types.hour_start + 3600000 THEN event_types.this_hour
                         ELSE 0 END,
        this_hour = CASE WHEN excluded.hour_start <= event_types.hour_start
                         THEN event_types.this_hour + excluded.this_hour
                         ELSE excluded.this_hour END,
        hour_start = CASE WHEN excluded.hour_start > event_types.hour_start
                          THEN excluded.hour_start ELSE event_types.hour_start END,
        last_seen = CASE WHEN excluded.last_seen > event_types.last_seen
                         THEN excluded.last_seen ELSE event_types.last_seen END,
        last_event = excluded.last_event";

/// A drift first seen now ($1 source .. $4 kind, $5 detail, $6 count, $7
/// first event, $8 last event, $9 now): one row changed when it is new.
const NEW_DRIFT: &str = "INSERT INTO schema_drift (source, type, path, kind, detail, count,
        first_event, last_event, first_seen, last_seen)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
    ON CONFLICT (source, type, path, kind) DO NOTHING";

/// A drift seen again (the same parameters): counted when the row was not
/// the one [`NEW_DRIFT`] just made (its first event is another), so a
/// record written twice counts once.
const SEEN_DRIFT: &str = "UPDATE schema_drift SET count = count + $6, detail = $5,
        last_event = $8, last_seen = $9
    WHERE source = $1 AND type = $2 AND path = $3 AND kind = $4 AND first_event <> $7";

/// A learned schema ($1 source, $2 type, $3 schema, $4 from how many, $5
/// now), kept when learned from more events than the one stored.
const LEARNED: &str = "INSERT INTO event_types (source, type, total, hour_start, this_hour,
        last_hour, first_seen, last_seen, last_event, learned, learned_from)
    VALUES ($1, $2, 0, 0, 0, 0, $5, $5, '', $3, $4)
    ON CONFLICT (source, type) DO UPDATE SET learned = excluded.learned,
        learned_from = excluded.learned_from
    WHERE event_types.learned_from < excluded.learned_from";

const PRUNE_TYPES: &str = "DELETE FROM event_types WHERE last_seen < $1";
const PRUNE_DRIFT: &str = "DELETE FROM schema_drift WHERE last_seen < $1";

const TYPE_COLUMNS: &str = "source, type, total, hour_start, this_hour, last_hour, first_seen,
    last_seen, last_event, learned, learned_from";
const DRIFT_COLUMNS: &str = "source, type, path, kind, detail, count, first_event, last_event,
    first_seen, last_seen";

/// The most drift rows a read returns.
pub const DRIFT_LIMIT: i64 = 1000;

fn count(n: u64) -> SqlValue {
    SqlValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Records a tally in one transaction: the drift it saw for the first
/// time comes back (to be announced).
pub(crate) async fn record<B: SqlBackend>(b: &B, tally: Tally) -> StoreResult<Vec<DriftTally>> {
    let now = tally.at_ms;
    let hour = now - now.rem_euclid(HOUR_MS);
    let mut writes = Vec::new();
    for t in &tally.types {
        writes.push(Statement::new(
            COUNT_TYPE,
            vec![
                t.source.clone().into(),
                t.kind.clone().into(),
                count(t.count),
                hour.into(),
                now.into(),
                t.last_event.clone().into(),
            ],
        ));
    }
    for d in &tally.drift {
        let params = vec![
            d.source.clone().into(),
            d.kind.clone().into(),
            d.path.clone().into(),
            d.drift.clone().into(),
            d.detail.clone().into(),
            count(d.count),
            d.first_event.clone().into(),
            d.last_event.clone().into(),
            now.into(),
        ];
        writes.push(Statement::new(NEW_DRIFT, params.clone()));
        writes.push(Statement::new(SEEN_DRIFT, params));
    }
    for l in &tally.learned {
        writes.push(Statement::new(
            LEARNED,
            vec![
                l.source.clone().into(),
                l.kind.clone().into(),
                l.schema.to_string().into(),
                count(l.from),
                now.into(),
            ],
        ));
    }
    if let Some(before) = tally.prune_before_ms {
        writes.push(Statement::new(PRUNE_TYPES, vec![before.into()]));
        writes.push(Statement::new(PRUNE_DRIFT, vec![before.into()]));
    }
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let changed = b.writes(writes, None).await?;
    let first_drift = tally.types.len();
    Ok(tally
        .drift
        .into_iter()
        .enumerate()
        .filter(|(i, _)| changed.get(first_drift + 2 * i) == Some(&1))
        .map(|(_, d)| d)
        .collect())
}

fn type_row(r: &SqlRow) -> TypeRow {
    TypeRow {
        source: r.text(0),
        kind: r.text(1),
        total: r.int(2).max(0) as u64,
        hour_start_ms: r.int(3),
        this_hour: r.int(4).max(0) as u64,
        last_hour: r.int(5).max(0) as u64,
        first_seen_ms: r.int(6),
        last_seen_ms: r.int(7),
        last_event: r.text(8),
        learned: r.opt_text(9).and_then(|t| serde_json::from_str(&t).ok()),
        learned_from: r.int(10).max(0) as u64,
    }
}

/// The types of a source (or of every source), by source and name.
pub(crate) async fn types<B: SqlBackend>(
    b: &B,
    source: Option<String>,
) -> StoreResult<Vec<TypeRow>> {
    let read = match source {
        Some(s) => Statement::new(
            format!("SELECT {TYPE_COLUMNS} FROM event_types WHERE source = $1 ORDER BY type"),
            vec![s.into()],
        ),
        None => Statement::new(
            format!("SELECT {TYPE_COLUMNS} FROM event_types ORDER BY source, type"),
            vec![],
        ),
    };
    Ok(b.rows(read).await?.iter().map(type_row).collect())
}

/// The drift of a source (and type), newest first, at most
/// [`DRIFT_LIMIT`].
pub(crate) async fn drift<B: SqlBackend>(
    b: &B,
    source: Option<String>,
    kind: Option<String>,
) -> StoreResult<Vec<DriftRow>> {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(s) = source {
        params.push(SqlValue::Text(s));
        conditions.push(format!("source = ${}", params.len()));
    }
    if let Some(k) = kind {
        params.push(SqlValue::Text(k));
        conditions.push(format!("type = ${}", params.len()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let read = Statement::new(
        format!(
            "SELECT {DRIFT_COLUMNS} FROM schema_drift {filter}
             ORDER BY last_seen DESC, source, type, path LIMIT {DRIFT_LIMIT}"
        ),
        params,
    );
    Ok(b.rows(read)
        .await?
        .iter()
        .map(|r| DriftRow {
            source: r.text(0),
            kind: r.text(1),
            path: r.text(2),
            drift: r.text(3),
            detail: r.text(4),
            count: r.int(5).max(0) as u64,
            first_event: r.text(6),
            last_event: r.text(7),
            first_seen_ms: r.int(8),
            last_seen_ms: r.int(9),
        })
        .collect())
}

/// Holds a pending event for an operator ($1 event, $2 why, $3 when); a
/// shared store's event is no one's then.
fn hold_statement(dialect: Dialect, event_id: String, why: String, at_ms: i64) -> Statement {
    let sql = match dialect {
        Dialect::Sqlite => {
            "UPDATE events SET state = 'held', held = $2, routed_at = $3
             WHERE id = $1 AND state = 'pending'"
        }
        Dialect::Postgres => {
            "UPDATE events SET state = 'held', held = $2, routed_at = $3, owner = NULL
             WHERE id = $1 AND state = 'pending'"
        }
    };
    Statement::new(sql, vec![event_id.into(), why.into(), at_ms.into()])
}

/// Holds a pending event: whether it was pending.
pub(crate) async fn hold<B: SqlBackend>(
    b: &B,
    event_id: String,
    why: String,
    at_ms: i64,
) -> StoreResult<bool> {
    let changed = b
        .writes(vec![hold_statement(B::DIALECT, event_id, why, at_ms)], None)
        .await?;
    Ok(changed.first() == Some(&1))
}

/// The held events' ids, oldest first (at most `limit`), of a source.
pub(crate) async fn held<B: SqlBackend>(
    b: &B,
    source: Option<String>,
    limit: usize,
) -> StoreResult<Vec<String>> {
    let limit = limit.clamp(1, 10_000) as i64;
    let read = match source {
        Some(s) => Statement::new(
            format!(
                "SELECT id FROM events WHERE state = 'held' AND source = $1 ORDER BY id LIMIT {limit}"
            ),
            vec![s.into()],
        ),
        None => Statement::new(
            format!("SELECT id FROM events WHERE state = 'held' ORDER BY id LIMIT {limit}"),
            vec![],
        ),
    };
    Ok(b.rows(read).await?.iter().map(|r| r.text(0)).collect())
}

/// Releases held events to be routed (as they are, not held again):
/// how many were held.
pub(crate) async fn release<B: SqlBackend>(b: &B, ids: Vec<String>) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let writes = ids
        .into_iter()
        .map(|id| {
            let mut s = b.replay_statement(id);
            s.sql = format!("{} AND state = 'held'", s.sql).into();
            s
        })
        .collect();
    let changed = b.writes(writes, Some(super::Work::Events)).await?;
    Ok(changed.iter().sum())
}
