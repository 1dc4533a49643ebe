//! The embedded store's schema, in numbered migrations (`migrations/`)
//! applied as PostgreSQL's are (`postgres/migrations/`): each once, in
//! order, in the transaction that records it — here in the database's
//! `user_version`. Never edit one that has shipped: add the next.
//!
//! A store written before migrations were numbered (release 0.1.0, whose
//! schema is migration 1) has tables and a `user_version` of 0: it is
//! taken to be at version 1. A store written by a newer release is
//! refused, not changed.

use rusqlite::Connection;

use super::{in_transaction, map_err};
use crate::store::{StoreError, StoreResult};

/// The migrations, in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_order_keys.sql")),
    (
        3,
        include_str!("migrations/0003_envelopes_in_the_journal.sql"),
    ),
    (4, include_str!("migrations/0004_rate_slots.sql")),
    (5, include_str!("migrations/0005_catalog.sql")),
];

/// Brings the store up to this release's schema. Two processes opening
/// it at once (the daemon, a CLI) apply each migration once: the check
/// and the changes are one write transaction.
pub(super) fn migrate(conn: &Connection) -> StoreResult<()> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    // Up to date (the common case, and a CLI beside a running daemon):
    // no write lock taken.
    if user_version(conn)? == latest {
        return Ok(());
    }
    in_transaction(conn, || {
        let stored = user_version(conn)?;
        let version = match stored {
            0 if has_table(conn, "events")? => 1,
            v => v,
        };
        if version > latest {
            return Err(StoreError::Other(format!(
                "the store is at schema version {version}, written by a newer Switchyard; \
                 this one knows versions up to {latest}: run the newer release, or restore \
                 a backup of the store"
            )));
        }
        for (n, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > version) {
            conn.execute_batch(sql)
                .map_err(|e| StoreError::Other(format!("store migration {n}: {e}")))?;
            tracing::info!(version = n, "store: applied migration");
        }
        if stored != latest {
            conn.pragma_update(None, "user_version", latest)
                .map_err(map_err)?;
        }
        Ok(())
    })
}

fn user_version(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_err)
}

fn has_table(conn: &Connection, name: &str) -> StoreResult<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
    .map_err(map_err)
}
