//! An event's envelope is kept once: in its request's journal record,
//! which holds it beside the body it was made from (compressed together).
//! Its row holds where that record is (`journal_seq`, `journal_offset`)
//! and an empty `envelope`; rows written before (migration 3) hold their
//! envelope themselves.
//!
//! Queries read envelopes through the SQL function `journal_envelope`
//! (registered on every connection), spelled [`ENVELOPE`]: a claim's event,
//! the events waiting for routing, an event shown, a filter on one of its
//! fields. Each connection keeps its journal reader (segment list and
//! file) and the last record it decoded, so the events of one request, or
//! a page of events, do not read a record twice in a row.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::Connection;

use super::journal::{Position, Reader};
use super::journal_record::IngestRecord;

/// An event row's envelope (the row as `e`): its own, or its record's.
macro_rules! journal_envelope {
    () => {
        "journal_envelope(e.envelope, e.id, e.journal_seq, e.journal_offset)"
    };
}
pub(super) use journal_envelope;
pub(crate) const ENVELOPE: &str = journal_envelope!();

/// A connection's reading of the journal.
struct Envelopes {
    reader: Reader,
    /// The last record decoded: its seq and its events' ids and envelopes.
    last: Option<(u64, Vec<(String, String)>)>,
}

impl Envelopes {
    fn envelope(&mut self, id: &str, at: Position) -> Result<String, String> {
        if self.last.as_ref().is_none_or(|(seq, _)| *seq != at.seq) {
            self.last = None;
            let payload = self.reader.read(at).map_err(|e| e.to_string())?;
            let (record, _) = IngestRecord::decode(&payload)?;
            let events = record
                .events
                .into_iter()
                .map(|e| (e.id, e.envelope.get().to_owned()))
                .collect();
            self.last = Some((at.seq, events));
        }
        let (_, events) = self.last.as_ref().expect("decoded above");
        events
            .iter()
            .find(|(event, _)| event == id)
            .map(|(_, envelope)| envelope.clone())
            .ok_or_else(|| format!("journal record {} holds no event {id}", at.seq))
    }
}

/// Registers `journal_envelope(envelope, id, seq, offset)` on `conn`: the
/// envelope when the row holds one (no seq), else the event's envelope
/// from the journal in `dir`; NULL, said in the log, when that record is
/// gone or damaged (a query goes on with the other rows).
pub(super) fn register(conn: &Connection, dir: PathBuf) -> rusqlite::Result<()> {
    let state = Mutex::new(Envelopes {
        reader: Reader::new(&dir),
        last: None,
    });
    conn.create_scalar_function(
        "journal_envelope",
        4,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx: &Context<'_>| -> rusqlite::Result<Option<String>> {
            let (Some(seq), Some(offset)) =
                (ctx.get::<Option<i64>>(2)?, ctx.get::<Option<i64>>(3)?)
            else {
                return ctx.get::<Option<String>>(0);
            };
            let id: String = ctx.get(1)?;
            let at = Position {
                seq: seq as u64,
                offset: offset as u64,
            };
            let mut envelopes = state.lock().unwrap_or_else(|p| p.into_inner());
            match envelopes.envelope(&id, at) {
                Ok(envelope) => Ok(Some(envelope)),
                Err(why) => {
                    tracing::warn!(event = %id, "the event's envelope is not available: {why}");
                    Ok(None)
                }
            }
        },
    )
}
