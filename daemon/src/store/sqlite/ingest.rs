//! Ingest: what becomes of a request's events (dedup, stale versions), its
//! journal record, and the rows that follow from that record — written as a
//! request comes in, and written again from the journal at start for the
//! records the database lost (a power cut after the journal's sync, before
//! the database's own commit reached the disk).
//!
//! The journal record (`journal_record.rs`) holds the whole request
//! (headers and body are kept only there), the events' envelopes and what
//! became of each, compressed; the database holds the request's row (its seq and offset in the journal), the
//! events and the keys. Applying a record twice is harmless: rows are keyed
//! by the ids the record carries.

use rusqlite::{params, Connection, OptionalExtension};

use super::journal::{self, Damage, Journal, Position};
use super::journal_record::{EncodedEvent, IngestRecord};
use super::keys::RecentKeys;
use super::*;

/// Whether an ordered event's version is not newer than the last accepted
/// for its object: stored, or taken earlier in the same request
/// (`earlier`, by object), which it then becomes if it is newer.
fn is_stale<'a>(
    conn: &Connection,
    ev: &'a EncodedEvent,
    earlier: &mut Vec<(&'a str, i64)>,
) -> StoreResult<bool> {
    let Some(order) = &ev.order else {
        return Ok(false);
    };
    if let Some((_, v)) = earlier.iter().find(|(key, _)| *key == order.key) {
        if order.version <= *v {
            return Ok(true);
        }
    }
    let last: Option<i64> = conn
        .prepare_cached("SELECT version FROM versions WHERE source = ?1 AND key = ?2")
        .map_err(map_err)?
        .query_row(params![ev.source, order.key], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    if last.is_some_and(|v| order.version <= v) {
        return Ok(true);
    }
    earlier.retain(|(key, _)| *key != order.key);
    earlier.push((&order.key, order.version));
    Ok(false)
}

/// What becomes of each event: a duplicate (of an event within the dedup
/// window, or of an earlier one in the same request), stale, or new.
fn decide(
    conn: &Connection,
    keys: &RecentKeys,
    record: &IngestRecord,
) -> StoreResult<Vec<Ingested>> {
    let now = record.received_at_ms;
    let mut results = Vec::with_capacity(record.events.len());
    let mut seen = conn
        .prepare_cached(
            "SELECT event_id FROM dedup WHERE source = ?1 AND key = ?2 AND expires_at > ?3",
        )
        .map_err(map_err)?;
    let mut fresh: Vec<&EncodedEvent> = Vec::new();
    let mut versions = Vec::new();
    for ev in &record.events {
        let prior: Option<String> = match keys.get(&ev.source, &ev.dedup_key, now) {
            Some(id) => Some(id.to_string()),
            None => seen
                .query_row(params![ev.source, ev.dedup_key, now], |r| r.get(0))
                .optional()
                .map_err(map_err)?,
        };
        match prior {
            Some(original) => results.push(Ingested::Duplicate(original)),
            None => match fresh.iter().find(|e| e.dedup_key == ev.dedup_key) {
                // Two events of one request with the same key: the first counts.
                Some(first) => results.push(Ingested::Duplicate(first.id.clone())),
                None => {
                    fresh.push(ev);
                    results.push(if ev.handshake {
                        Ingested::Handshake(ev.id.clone())
                    } else if is_stale(conn, ev, &mut versions)? {
                        Ingested::Stale(ev.id.clone())
                    } else {
                        Ingested::New(ev.id.clone())
                    });
                }
            },
        }
    }
    Ok(results)
}

/// The rows that follow from a decided record at `at` in the journal.
fn apply(conn: &Connection, record: &IngestRecord, at: Position) -> StoreResult<()> {
    let now = record.received_at_ms;
    let fresh = |r: &Ingested| !matches!(r, Ingested::Duplicate(_));
    let verdict = if !record.events.is_empty() && !record.results.iter().any(fresh) {
        "duplicate"
    } else {
        "accepted"
    };
    // The request's row is keyed by its seq (the rowid): the journal's
    // segments are freed by seq ranges no row points into.
    conn.prepare_cached(
        "INSERT OR IGNORE INTO requests
             (rowid, id, source, received_at, method, path, query, headers, body, verdict, journal_offset)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '', x'', ?8, ?9)",
    )
    .map_err(map_err)?
    .execute(params![
        at.seq as i64,
        record.id,
        record.source,
        now,
        record.method,
        record.path,
        record.query,
        verdict,
        at.offset as i64
    ])
    .map_err(map_err)?;
    let mut insert_event = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, request_id, source, type, received_at, envelope, state,
                                          dedup_key, dedup_until, journal_seq, journal_offset)
             VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7, ?8, ?9, ?10)",
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
    let mut bump = conn
        .prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1")
        .map_err(map_err)?;
    for (ev, result) in record.events.iter().zip(&record.results) {
        let state = match result {
            Ingested::Duplicate(original) => {
                bump.execute(params![original]).map_err(map_err)?;
                continue;
            }
            Ingested::Stale(_) => "stale",
            Ingested::Handshake(_) => "handshake",
            Ingested::New(_) => "pending",
        };
        insert_event
            .execute(params![
                ev.id,
                record.id,
                ev.source,
                ev.kind,
                now,
                state,
                ev.dedup_key,
                now + record.dedup_window_ms,
                at.seq as i64,
                at.offset as i64
            ])
            .map_err(map_err)?;
        if let (Some(order), "pending") = (&ev.order, state) {
            set_version
                .execute(params![ev.source, order.key, order.version, ev.id, now])
                .map_err(map_err)?;
        }
    }
    Ok(())
}

/// Bytes the store holds: the database's pages and the journal.
fn stored_bytes(conn: &Connection, journal: &Journal) -> StoreResult<u64> {
    let pages: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    Ok(pages.max(0) as u64 + journal.bytes())
}

/// Ingests a request on the writer thread: decides, stages the journal
/// record (written with the group, before the commit) and adds its rows.
pub(super) fn ingest_tx(
    conn: &Connection,
    state: &mut WriterState,
    mut record: IngestRecord,
    body: &[u8],
    max_bytes: Option<u64>,
) -> StoreResult<Vec<Ingested>> {
    if let Some(max) = max_bytes {
        let used = stored_bytes(conn, &state.journal)?;
        if used >= max {
            return Err(StoreError::Unavailable(format!(
                "the store is full ({used} bytes of at most {max})"
            )));
        }
    }
    record.results = decide(conn, &state.keys, &record)?;
    let at = state.journal.stage(&record.encode(body)?);
    apply(conn, &record, at)?;
    let until = record.received_at_ms + record.dedup_window_ms;
    for (ev, result) in record.events.iter().zip(&record.results) {
        if !matches!(result, Ingested::Duplicate(_)) {
            state.keys.add(&ev.source, &ev.dedup_key, &ev.id, until);
        }
    }
    Ok(std::mem::take(&mut record.results))
}

/// The last journal record the database holds, if it has ever held one.
pub(super) fn applied_seq(conn: &Connection) -> StoreResult<Option<u64>> {
    Ok(meta(conn, "journal_seq")?.map(|v| v as u64))
}

pub(super) fn set_applied_seq(conn: &Connection, seq: u64) -> StoreResult<()> {
    set_meta(conn, "journal_seq", seq as i64)
}

/// What opening the store found in its journal.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Records the database did not hold, applied again.
    pub applied: u64,
    /// Damage found and passed over (a torn tail cut off, records skipped).
    pub damage: Vec<Damage>,
    /// Records that could not be read as requests (said in the log).
    pub unreadable: Vec<u64>,
}

/// Opens the journal beside the database and applies the records the
/// database does not hold yet.
pub(super) fn recover(
    conn: &Connection,
    dir: &Path,
    options: journal::JournalOptions,
) -> StoreResult<(Journal, Recovery)> {
    let applied = applied_seq(conn)?;
    // A new journal starts above every request row there is: rows kept
    // before the journal existed hold their body themselves.
    let above: i64 = conn
        .query_row("SELECT COALESCE(MAX(rowid), 0) FROM requests", [], |r| {
            r.get(0)
        })
        .map_err(map_err)?;
    let first = applied.unwrap_or(0).max(above.max(0) as u64) + 1;
    let unavailable = |e: std::io::Error| {
        StoreError::Unavailable(format!("cannot open the journal {}: {e}", dir.display()))
    };
    let (journal, mut damage) = Journal::open(dir, options, first).map_err(unavailable)?;
    let from = applied.map_or(0, |s| s + 1);
    // After a clean stop the database holds every record: the last segment,
    // scanned by opening it, need not be read again.
    let (records, more) = if from >= journal.next_seq() {
        (Vec::new(), Vec::new())
    } else {
        journal::read_from(dir, from).map_err(unavailable)?
    };
    // The last segment's damage was found by opening it; the rest is new.
    for d in more {
        if !damage.contains(&d) && !matches!(d, Damage::TornTail { .. }) {
            damage.push(d);
        }
    }
    let mut report = Recovery {
        damage,
        ..Recovery::default()
    };
    if records.is_empty() {
        return Ok((journal, report));
    }
    in_transaction(conn, || {
        let mut last = None;
        for r in &records {
            last = Some(r.position.seq);
            match IngestRecord::decode(&r.payload) {
                Ok((record, _)) => {
                    apply(conn, &record, r.position)?;
                    report.applied += 1;
                }
                Err(why) => {
                    tracing::warn!(seq = r.position.seq, "journal record not applied: {why}");
                    report.unreadable.push(r.position.seq);
                }
            }
        }
        match last {
            Some(seq) => set_applied_seq(conn, seq),
            None => Ok(()),
        }
    })?;
    Ok((journal, report))
}

/// The request of an event as kept: from the journal, or (rows kept before
/// the journal) from its own row.
pub(super) fn request_record(
    conn: &Connection,
    journal_dir: &Path,
    request_id: &str,
) -> StoreResult<RequestRecord> {
    let (seq, offset, row) = conn
        .query_row(
            "SELECT rowid, journal_offset, id, method, path, query, headers, body, verdict
             FROM requests WHERE id = ?1",
            params![request_id],
            |r| {
                let headers: String = r.get(6)?;
                let body: Vec<u8> = r.get(7)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    RequestRecord {
                        id: r.get(2)?,
                        method: r.get(3)?,
                        path: r.get(4)?,
                        query: r.get(5)?,
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        verdict: r.get(8)?,
                    },
                ))
            },
        )
        .map_err(map_err)?;
    let Some(offset) = offset else {
        return Ok(row);
    };
    let at = Position {
        seq: seq as u64,
        offset: offset as u64,
    };
    let read = journal::read_at(journal_dir, at).map_err(|e| e.to_string());
    match read.and_then(|payload| {
        IngestRecord::decode(&payload)
            .map(|(record, body)| record.request(&body, row.verdict.clone()))
    }) {
        Ok(request) => Ok(request),
        // The event and its routing are in the database; only what came in
        // raw is gone. Shown as such rather than hiding the event.
        Err(why) => {
            tracing::warn!(request = request_id, "the request's journal record: {why}");
            Ok(RequestRecord {
                body: format!("(not available: {why})"),
                ..row
            })
        }
    }
}

/// Removes the journal's sealed segments that no request row points into
/// (their requests were pruned); returns how many.
pub(super) fn free_segments(conn: &Connection, journal: &mut Journal) -> StoreResult<u64> {
    let mut used = conn
        .prepare_cached("SELECT 1 FROM requests WHERE rowid BETWEEN ?1 AND ?2 LIMIT 1")
        .map_err(map_err)?;
    let applied = applied_seq(conn)?.unwrap_or(0);
    let mut freed = 0;
    for (first, last) in journal.sealed_segments() {
        if last > applied
            || used
                .exists(params![first as i64, last as i64])
                .map_err(map_err)?
        {
            continue;
        }
        match journal.remove_segment(first) {
            Ok(()) => freed += 1,
            Err(e) => tracing::warn!("cannot remove journal segment {first}: {e}"),
        }
    }
    Ok(freed)
}
