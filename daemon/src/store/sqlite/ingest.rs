//! Ingest: what becomes of a request's events (dedup, stale versions), its
//! journal record, and the rows that follow from that record — written as a
//! request comes in, and written again from the journal at start for the
//! records the database lost (a power cut after the journal's sync, before
//! the database's own commit reached the disk).
//!
//! The journal record holds the whole request (headers and body are kept
//! only there), the events' envelopes and what became of each; the
//! database holds the request's row (its seq and offset in the journal), the
//! events and the keys. Applying a record twice is harmless: rows are keyed
//! by the ids the record carries.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::journal::{self, Damage, Journal, Position};
use super::keys::RecentKeys;
use super::*;
use crate::event::Event;

/// The first byte of an ingest record's payload (other kinds may follow).
const INGEST: u8 = 1;

/// What the writer needs of an event: its keys and its envelope, encoded
/// on the caller's thread.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EncodedEvent {
    id: String,
    source: String,
    kind: String,
    dedup_key: String,
    /// The event as JSON, held in the record as it is (records written
    /// before held it as a JSON string: both read back the same).
    #[serde(deserialize_with = "envelope_json")]
    envelope: Box<RawValue>,
    order: Option<switchyard_plugin_api::Order>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    handshake: bool,
}

/// JSON kept as it is, whether written as JSON or (older records) as a
/// string holding JSON.
fn envelope_json<'de, D: Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    if !raw.get().starts_with('"') {
        return Ok(raw);
    }
    let text: String = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
    RawValue::from_string(text).map_err(serde::de::Error::custom)
}

impl EncodedEvent {
    pub(super) fn new(e: &Event) -> StoreResult<EncodedEvent> {
        Ok(EncodedEvent {
            id: e.id.clone(),
            source: e.source.clone(),
            kind: e.kind.clone(),
            dedup_key: e.dedup_key.clone(),
            envelope: serde_json::value::to_raw_value(e)
                .map_err(|err| StoreError::Other(err.to_string()))?,
            order: e.order.clone(),
            handshake: e.handshake,
        })
    }
}

/// A request as its journal record holds it (the body follows the JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct IngestRecord {
    id: String,
    source: String,
    received_at_ms: i64,
    method: String,
    path: String,
    query: String,
    /// `[[name, value], ...]`, redacted: JSON in the record (records
    /// written before held it as a JSON string: both read back the same).
    #[serde(deserialize_with = "envelope_json")]
    headers: Box<RawValue>,
    events: Vec<EncodedEvent>,
    /// What became of each event, in order: decided once, when it came in.
    results: Vec<Ingested>,
    dedup_window_ms: i64,
    /// The record's JSON but for `results` and its closing brace, written
    /// on the caller's thread (the headers escaped, the envelopes copied):
    /// the writer thread, which every ingest waits for, only adds the
    /// results. Empty for a record read back from the journal.
    #[serde(skip)]
    head: Vec<u8>,
}

/// The fields of an [`IngestRecord`] known before the writer decides,
/// borrowed, in the record's JSON form.
#[derive(Serialize)]
struct Head<'a> {
    id: &'a str,
    source: &'a str,
    received_at_ms: i64,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a RawValue,
    events: &'a [EncodedEvent],
    dedup_window_ms: i64,
}

impl IngestRecord {
    pub(super) fn new(
        request: &StoredRequest,
        events: Vec<EncodedEvent>,
        dedup_window_ms: i64,
    ) -> IngestRecord {
        let mut record = IngestRecord {
            id: request.id.clone(),
            source: request.source.clone(),
            received_at_ms: request.received_at_ms,
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            headers: serde_json::value::to_raw_value(&request.headers)
                .unwrap_or_else(|_| RawValue::from_string("[]".into()).expect("JSON")),
            events,
            results: Vec::new(),
            dedup_window_ms,
            head: Vec::new(),
        };
        let head = Head {
            id: &record.id,
            source: &record.source,
            received_at_ms: record.received_at_ms,
            method: &record.method,
            path: &record.path,
            query: &record.query,
            headers: &record.headers,
            events: &record.events,
            dedup_window_ms: record.dedup_window_ms,
        };
        if let Ok(mut json) = serde_json::to_vec(&head) {
            if json.pop() == Some(b'}') {
                record.head = json;
            }
        }
        record
    }

    /// `[INGEST][json length u32][json][body]`: the head written on the
    /// caller's thread with the results added, or (a record read back) the
    /// whole record serialized here.
    fn encode(&self, body: &[u8]) -> StoreResult<Vec<u8>> {
        let error = |e: serde_json::Error| StoreError::Other(e.to_string());
        let mut out = Vec::with_capacity(5 + self.head.len() + 64 + body.len());
        out.push(INGEST);
        out.extend_from_slice(&[0; 4]);
        if self.head.is_empty() {
            serde_json::to_writer(&mut out, self).map_err(error)?;
        } else {
            out.extend_from_slice(&self.head);
            out.extend_from_slice(b",\"results\":");
            serde_json::to_writer(&mut out, &self.results).map_err(error)?;
            out.push(b'}');
        }
        let len = (out.len() - 5) as u32;
        out[1..5].copy_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        Ok(out)
    }

    /// The record and its body, from a payload.
    pub(super) fn decode(payload: &[u8]) -> Result<(IngestRecord, &[u8]), String> {
        let (&kind, rest) = payload.split_first().ok_or("an empty record")?;
        if kind != INGEST {
            return Err(format!("a record of unknown kind {kind}"));
        }
        let len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("a record cut short")?;
        let json = rest.get(4..4 + len).ok_or("a record cut short")?;
        let record = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        Ok((record, &rest[4 + len..]))
    }

    /// The request as the admin API shows it.
    pub(super) fn request(&self, body: &[u8], verdict: String) -> RequestRecord {
        RequestRecord {
            id: self.id.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: serde_json::from_str(self.headers.get()).unwrap_or_default(),
            body: String::from_utf8_lossy(body).into_owned(),
            verdict,
        }
    }
}

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
                                          dedup_key, dedup_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                ev.envelope.get(),
                state,
                ev.dedup_key,
                now + record.dedup_window_ms
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
            .map(|(record, body)| record.request(body, row.verdict.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: &str, body: &[u8]) -> Vec<u8> {
        let mut out = vec![INGEST];
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_record_written_from_its_head_reads_back_as_one_serialized_whole() {
        let request = StoredRequest {
            id: "r1".into(),
            source: "tight".into(),
            received_at_ms: 7,
            method: "POST".into(),
            path: "/".into(),
            query: "a=\"b\"".into(),
            headers: vec![("x-quote".into(), "say \"hi\"".into())],
            body: bytes::Bytes::from_static(b"{}"),
        };
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "01J", "source": "tight", "provider": "tight", "type": "tight.a",
            "received_at": "2026-01-01T00:00:00Z", "time": "2026-01-01T00:00:00Z", "dedup_key": "k", "data": {"q": "\"x\""}
        }))
        .unwrap();
        let mut record = IngestRecord::new(&request, vec![EncodedEvent::new(&event).unwrap()], 9);
        assert!(!record.head.is_empty());
        record.results = vec![Ingested::New("01J".into())];
        let from_head = record.encode(b"body").unwrap();
        let (decoded, body) = IngestRecord::decode(&from_head).unwrap();
        assert_eq!(body, b"body");
        // The same bytes as the record serialized whole.
        let whole = decoded.encode(body).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&from_head[5..from_head.len() - 4])
                .unwrap(),
            serde_json::from_slice::<serde_json::Value>(&whole[5..whole.len() - 4]).unwrap()
        );
        assert_eq!(decoded.results.len(), 1);
        assert_eq!(decoded.headers.get(), record.headers.get());
        assert_eq!(decoded.request(b"", String::new()).headers, request.headers);
        assert_eq!(
            decoded.events[0].envelope.get(),
            record.events[0].envelope.get()
        );
    }

    #[test]
    fn an_envelope_reads_back_the_same_written_as_json_or_as_an_older_record_string() {
        let envelope = r#"{"id":"01J","type":"a.b","data":{"quote":"\"x\""}}"#;
        let record = |envelope: &str| {
            format!(
                r#"{{"id":"r","source":"s","received_at_ms":1,"method":"POST","path":"/","query":"",
                "headers":"[[\"x-a\",\"1\"]]","events":[{{"id":"01J","source":"s","kind":"a.b","dedup_key":"k",
                "envelope":{envelope},"order":null}}],"results":[],"dedup_window_ms":0}}"#
            )
        };
        let as_json = payload(&record(envelope), b"body");
        let as_string = payload(&record(&serde_json::to_string(envelope).unwrap()), b"body");
        for bytes in [&as_json, &as_string] {
            let (decoded, body) = IngestRecord::decode(bytes).unwrap();
            assert_eq!(body, b"body");
            assert_eq!(decoded.events[0].envelope.get(), envelope);
            // Headers written as a string of JSON (as records before held
            // them) read back as they were.
            let shown = decoded.request(body, String::new()).headers;
            assert_eq!(shown, [("x-a".to_string(), "1".to_string())]);
            // Written again, it is written as JSON, not as a string.
            let again = decoded.encode(body).unwrap();
            let text = String::from_utf8_lossy(&again);
            assert!(
                text.contains(&format!(r#""envelope":{envelope}"#)),
                "{text}"
            );
        }
    }
}
