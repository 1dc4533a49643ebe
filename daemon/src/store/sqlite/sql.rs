//! The embedded store's statements, by the names the PostgreSQL store's
//! have (`postgres/sql.rs`) where they do the same step: read the two side
//! by side. What both run in one text is in `store/sql.rs`. Placeholders
//! are SQLite's `?n`.

use super::envelopes::journal_envelope;

/// Marks a pending event routed (?1 event, ?2 when, ?3 rule runs, ?4 rules
/// version). No row changed: routed already.
pub(super) const ROUTE: &str = "UPDATE events
    SET state = 'routed', routings = routings + 1, routed_at = ?2, rule_runs = ?3, rules_version = ?4
    WHERE id = ?1 AND state = 'pending'";

/// An event's rowid: the order it was taken in, which its ordered jobs keep.
pub(super) const EVENT_SEQ: &str = "SELECT rowid FROM events WHERE id = ?1";

/// Adds a job of a routing, unique by idempotency key (?11 its order key,
/// ?12 its event's rowid when it has one).
pub(super) const INSERT_JOB: &str = "INSERT OR IGNORE INTO jobs
        (id, event_id, rule, call_index, action, params, idempotency_key,
         state, attempts, next_at, created_at, order_key, order_seq)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)";

/// Events waiting for routing, oldest first (?1 how many).
pub(super) const PENDING_EVENTS: &str = concat!(
    "SELECT ",
    journal_envelope!(),
    ", e.routings, e.held IS NOT NULL FROM events e WHERE e.state = 'pending' ORDER BY e.id LIMIT ?1"
);

/// When the next job not waiting for its order key's turn is due (?1 now).
pub(super) const NEXT_DUE: &str = "SELECT MIN(next_at) FROM jobs
    WHERE state = 'pending' AND (order_key IS NULL OR next_at > ?1)";

/// Whether any job of an ordered action is due (?1 now).
pub(super) const ORDERED_DUE: &str = "SELECT EXISTS (SELECT 1 FROM jobs
    WHERE order_key IS NOT NULL AND state = 'pending' AND next_at <= ?1)";

/// Whether any job of an ordered action waits or runs.
pub(super) const ORDERED_WAITING: &str = "SELECT EXISTS (SELECT 1 FROM jobs
    WHERE order_key IS NOT NULL AND state IN ('pending', 'running'))";

/// Claims due jobs without an order key (?1 now, ?2 how many).
pub(super) const CLAIM: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1
    WHERE id IN (SELECT id FROM jobs WHERE state = 'pending' AND next_at <= ?1
                 AND order_key IS NULL
                 ORDER BY next_at, id LIMIT ?2)
    RETURNING id, event_id, rule, action, params, idempotency_key, attempts, series_start, next_at,
              order_key, rate_slot";

/// Claims each order key's next job (?1 now, ?2 how many): see `pipeline::claim_tx`.
pub(super) const CLAIM_ORDERED: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1
    WHERE id IN (
       SELECT o.id FROM jobs o
       WHERE o.state = 'pending' AND o.order_key IS NOT NULL AND o.next_at <= ?1
         AND o.order_seq < COALESCE(
             (SELECT MIN(p.rowid) FROM events p WHERE p.state = 'pending'),
             9223372036854775807)
         AND NOT EXISTS (
             SELECT 1 FROM jobs e
             WHERE e.action = o.action AND e.order_key = o.order_key
               AND e.state IN ('pending', 'running') AND e.id <> o.id
               AND (e.state = 'running'
                    OR (e.next_at <= ?1 AND (e.order_seq, e.rowid) < (o.order_seq, o.rowid))))
       ORDER BY o.order_seq, o.rowid LIMIT ?2)
    RETURNING id, event_id, rule, action, params, idempotency_key, attempts, series_start, next_at,
              order_key, rate_slot";

/// A claimed job's event, as the attempt carries it.
pub(super) const ENVELOPE: &str = concat!(
    "SELECT ",
    journal_envelope!(),
    " FROM events e WHERE e.id = ?1"
);

/// A job's state after an attempt (?2 state, ?3 when due again, ?4 when
/// finished, ?5 the error).
pub(super) const FINISH: &str = "UPDATE jobs
    SET state = ?2, next_at = COALESCE(?3, next_at), finished_at = ?4,
        last_error = COALESCE(?5, last_error), rate_slot = NULL
    WHERE id = ?1";

/// An attempt's row (?1 job, ?2 its number, ?3 started, ?4 finished,
/// ?5 outcome, ?6 result or error).
pub(super) const RECORD_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts
        (job_id, n, started_at, finished_at, outcome, message)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Puts a claimed job back, due at ?2, without using an attempt. A slot
/// its rate reserved is given up (the wait outlasted it): it asks again.
pub(super) const RELEASE_JOB: &str = "UPDATE jobs
    SET state = 'pending', next_at = ?2, rate_slot = NULL, attempts = MAX(attempts - 1, 0)
    WHERE id = ?1 AND state = 'running'";

/// Puts a claimed job back, due at the slot its action's rate reserved
/// for it (?2), noted on it, without using an attempt.
/// Forgets the slots an action's ($1) rate reserved for its waiting jobs:
/// read from the partial index of them, as long as what waits.
pub(super) const FORGET_RATE_SLOTS: &str = "UPDATE jobs SET rate_slot = NULL
    WHERE action = ?1 AND state = 'pending' AND rate_slot IS NOT NULL";

pub(super) const DEFER_JOB: &str = "UPDATE jobs
    SET state = 'pending', next_at = ?2, rate_slot = ?2, attempts = MAX(attempts - 1, 0)
    WHERE id = ?1 AND state = 'running'";

/// Hands back the jobs a stopped process left running: at start, before
/// any claim, every running job is such a job.
pub(super) const RECOVER: &str = "UPDATE jobs SET state = 'pending' WHERE state = 'running'";

/// Retention: a window of dedup keys expired by ?1 (at most ?2).
pub(super) const PRUNE_DEDUP: &str = "DELETE FROM dedup WHERE (source, key) IN
    (SELECT source, key FROM dedup WHERE expires_at <= ?1 LIMIT ?2)";

/// Retention: a window of object versions not updated since ?1 (at most ?2).
pub(super) const PRUNE_VERSIONS: &str = "DELETE FROM versions WHERE (source, key) IN
    (SELECT source, key FROM versions WHERE updated_at < ?1 LIMIT ?2)";
