//! The dedup keys of recent events, held in memory by the writer thread and
//! written to the `dedup` table in bulk, sorted, once enough have gathered.
//!
//! A dedup key is looked up by (source, key): a random place in any index.
//! Written one by one, each key dirtied its own page of the `dedup` B-tree —
//! a 4 KiB WAL frame per webhook, and 4 KiB more at the checkpoint, half of
//! all the store wrote. Held here and written in sorted runs of
//! [`FLUSH_AT`], the keys of a run share their pages.
//!
//! Nothing is lost with the process: each event's row carries its key and
//! its expiry (`events.dedup_key`, `events.dedup_until`), and the `meta` row
//! `dedup_rowid` says up to which event row the keys are in `dedup`; at open
//! the keys of the event rows after it are read back into memory.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::{in_transaction, map_err, meta, set_meta, StoreResult};

/// Keys held before they are written to the `dedup` table together.
pub const FLUSH_AT: usize = 16_384;

#[derive(Default)]
pub struct RecentKeys {
    /// (source, key) → (event id, expires at ms).
    map: HashMap<(String, String), (String, i64)>,
    /// Keys added by the batch not yet committed, to take back if it fails.
    added: Vec<(String, String)>,
}

impl RecentKeys {
    /// The event a key was seen with, if it has not expired by `now_ms`.
    pub fn get(&self, source: &str, key: &str, now_ms: i64) -> Option<&str> {
        self.map
            .get(&(source.to_string(), key.to_string()))
            .filter(|(_, until)| *until > now_ms)
            .map(|(id, _)| id.as_str())
    }

    pub fn add(&mut self, source: &str, key: &str, event_id: &str, until_ms: i64) {
        let k = (source.to_string(), key.to_string());
        self.added.push(k.clone());
        self.map.insert(k, (event_id.to_string(), until_ms));
    }

    /// The batch committed: its keys stay.
    pub fn keep(&mut self) {
        self.added.clear();
    }

    /// The batch failed: its keys go.
    pub fn undo(&mut self) {
        for k in self.added.drain(..) {
            self.map.remove(&k);
        }
    }

    /// Lets go of the keys expired by `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64) -> u64 {
        let before = self.map.len();
        self.map.retain(|_, (_, until)| *until > now_ms);
        (before - self.map.len()) as u64
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Reads back the keys of the event rows written since the last flush.
    pub fn load(conn: &Connection, now_ms: i64) -> StoreResult<RecentKeys> {
        let from = flushed_rowid(conn)?;
        let mut keys = RecentKeys::default();
        let mut stmt = conn
            .prepare(
                "SELECT source, dedup_key, id, dedup_until FROM events
                 WHERE rowid > ?1 AND dedup_key IS NOT NULL AND dedup_until > ?2
                 ORDER BY rowid",
            )
            .map_err(map_err)?;
        let rows = stmt
            .query_map(params![from, now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(map_err)?;
        for row in rows {
            let (source, key, id, until): (String, String, String, i64) = row.map_err(map_err)?;
            keys.map.insert((source, key), (id, until));
        }
        Ok(keys)
    }

    /// Writes the keys still in force to `dedup`, sorted, in one
    /// transaction of its own, and lets go of them once it commits.
    pub fn flush(&mut self, conn: &Connection, now_ms: i64) -> StoreResult<usize> {
        let mut entries: Vec<_> = self
            .map
            .iter()
            .filter(|(_, (_, until))| *until > now_ms)
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        in_transaction(conn, || {
            let mut insert = conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO dedup (source, key, event_id, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for ((source, key), (id, until)) in &entries {
                insert
                    .execute(params![source, key, id, until])
                    .map_err(map_err)?;
            }
            set_meta(conn, "dedup_rowid", last_event_rowid(conn)?)
        })?;
        let written = entries.len();
        self.map.clear();
        Ok(written)
    }
}

/// The last event row whose key is in `dedup`. A store without the mark
/// (new, or made before keys were held in memory) gets it at its last row:
/// every key before is in `dedup` already.
fn flushed_rowid(conn: &Connection) -> StoreResult<i64> {
    if let Some(mark) = meta(conn, "dedup_rowid")? {
        return Ok(mark);
    }
    let mark = last_event_rowid(conn)?;
    set_meta(conn, "dedup_rowid", mark)?;
    Ok(mark)
}

fn last_event_rowid(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("SELECT COALESCE(MAX(rowid), 0) FROM events", [], |r| {
        r.get(0)
    })
    .map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        conn
    }

    fn event_row(conn: &Connection, id: &str, key: &str, until: i64) {
        conn.execute(
            "INSERT INTO requests (id, source, received_at, method, path, query, headers, body, verdict)
             VALUES (?1, 'tight', 0, 'POST', '', '', '[]', x'', 'accepted')",
            params![format!("r-{id}")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (id, request_id, source, type, received_at, envelope, state, dedup_key, dedup_until)
             VALUES (?1, ?2, 'tight', 't', 0, '{}', 'pending', ?3, ?4)",
            params![id, format!("r-{id}"), key, until],
        )
        .unwrap();
    }

    #[test]
    fn keys_are_written_in_bulk_and_the_rest_read_back_from_their_events() {
        let conn = db();
        let mut keys = RecentKeys::load(&conn, 50).unwrap();
        assert_eq!(keys.len(), 0);
        for (id, key, until) in [("e1", "k1", 100), ("e2", "k2", 100), ("e3", "k3", 5)] {
            event_row(&conn, id, key, until);
            keys.add("tight", key, id, until);
        }
        keys.keep();
        assert_eq!(keys.get("tight", "k2", 50), Some("e2"));
        assert_eq!(keys.get("tight", "k3", 50), None, "expired");
        assert_eq!(keys.get("other", "k2", 50), None, "keys are per source");
        // Written: the two still in force, and the mark moves past their rows.
        assert_eq!(keys.flush(&conn, 50).unwrap(), 2);
        assert_eq!(keys.len(), 0);
        let in_table: i64 = conn
            .query_row("SELECT COUNT(*) FROM dedup", [], |r| r.get(0))
            .unwrap();
        assert_eq!(in_table, 2);
        // A key added after the flush lives only in its event's row until
        // the next: it is read back from there.
        event_row(&conn, "e4", "k4", 100);
        let keys = RecentKeys::load(&conn, 50).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get("tight", "k4", 50), Some("e4"));
    }

    #[test]
    fn a_failed_batch_takes_its_keys_back() {
        let mut keys = RecentKeys::default();
        keys.add("tight", "kept", "e1", 100);
        keys.keep();
        keys.add("tight", "lost", "e2", 100);
        keys.undo();
        assert_eq!(keys.get("tight", "kept", 0), Some("e1"));
        assert_eq!(keys.get("tight", "lost", 0), None);
    }
}
