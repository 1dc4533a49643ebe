//! The PostgreSQL store's statements, by the names the embedded store's
//! have (`sqlite/sql.rs`) where they do the same step: read the two side
//! by side. What both run in one text is in `store/sql.rs`. Lease and
//! heartbeat times are the database's clock ([`DB_NOW_MS`]).

use std::sync::LazyLock;

use super::DB_NOW_MS;

/// Events' routings and their jobs, one event or many (arrays: $1.. $4 an
/// element per event — id, routed at, rule runs, rules version; $5.. $13 an element per job — its event, id, rule, call,
/// action, parameters, idempotency key, whether it is claimed, order key;
/// $14 this instance, $15 the lease): the events that were pending (now
/// routed), the jobs claimed with them, and how many were stored
/// unclaimed. The events come in their ids' order: rows are locked in it.
pub(super) static ROUTE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH r AS (
            SELECT * FROM unnest($1::text[], $2::int8[], $3::json[], $4::int8[])
                AS r(event_id, routed_at, rule_runs, rules_version)),
        ev AS (
            UPDATE events SET state = 'routed', routings = routings + 1, routed_at = r.routed_at,
                              rule_runs = r.rule_runs, rules_version = r.rules_version,
                              owner = NULL
            FROM r
            WHERE events.id = r.event_id AND events.state = 'pending'
            RETURNING events.id, events.seq, r.routed_at),
        j AS (
            INSERT INTO jobs (id, event_id, rule, call_index, action, params,
                              idempotency_key, state, attempts, next_at, created_at,
                              owner, lease_until, order_key, order_seq)
            SELECT u.id, u.event_id, u.rule, u.call_index, u.action, u.params, u.key,
                   CASE WHEN u.claim THEN 'running' ELSE 'pending' END,
                   CASE WHEN u.claim THEN 1 ELSE 0 END, ev.routed_at, ev.routed_at,
                   CASE WHEN u.claim THEN $14 END,
                   CASE WHEN u.claim THEN {DB_NOW_MS} + $15 END,
                   u.order_key, CASE WHEN u.order_key IS NOT NULL THEN ev.seq END
            FROM unnest($5::text[], $6::text[], $7::text[], $8::int4[], $9::text[],
                        $10::json[], $11::text[], $12::bool[], $13::text[])
                 WITH ORDINALITY AS u(event_id, id, rule, call_index, action, params, key,
                                      claim, order_key, n)
            JOIN ev ON ev.id = u.event_id
            ORDER BY u.n
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, state)
        SELECT ARRAY(SELECT id FROM ev),
               ARRAY(SELECT id FROM j WHERE state = 'running'),
               (SELECT count(*) FROM j WHERE state = 'pending')"
    )
});

/// Takes this instance's pending events, and those of instances that
/// stopped beating ($1 this instance, $2 how many, $3 the lease).
pub(super) static PENDING_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE events e SET owner = $1
            FROM (SELECT p.id FROM events p
                  WHERE p.state = 'pending'
                    AND (p.owner IS NULL OR p.owner = $1 OR NOT EXISTS (
                         SELECT 1 FROM instances i WHERE i.id = p.owner
                         AND i.heartbeat_at > {DB_NOW_MS} - $3))
                  ORDER BY p.id LIMIT $2 FOR UPDATE SKIP LOCKED) c
            WHERE e.id = c.id
            RETURNING e.id, e.envelope::text, e.routings, e.held IS NOT NULL"
    )
});

/// When the next job not waiting for its order key's turn is due ($1 now).
pub(super) const NEXT_DUE: &str = "SELECT MIN(next_at) FROM jobs
    WHERE state = 'pending' AND (order_key IS NULL OR next_at > $1)";

/// Whether any job of an ordered action is due ($1 now).
pub(super) const ORDERED_DUE: &str = "SELECT EXISTS (SELECT 1 FROM jobs
    WHERE order_key IS NOT NULL AND state = 'pending' AND next_at <= $1)";

/// The columns a claim returns, as [`claimed`] reads them.
pub(super) const CLAIMED: &str =
    "j.id, j.event_id, j.rule, j.action, j.params::text, j.idempotency_key,
     j.attempts, j.series_start, j.next_at,
     (SELECT e.envelope::text FROM events e WHERE e.id = j.event_id), j.order_key, j.rate_slot";

/// Claims due jobs without an order key ($1 now, $2 how many, $3 this
/// instance, $4 the lease).
pub(super) static CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, owner = $3,
                              lease_until = {DB_NOW_MS} + $4
            FROM (SELECT id FROM jobs
                  WHERE state = 'pending' AND next_at <= $1 AND order_key IS NULL
                  ORDER BY next_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) c
            WHERE j.id = c.id
            RETURNING {CLAIMED}"
    )
});

/// Taken before claiming ordered jobs.
pub(super) const TAKE_ORDER_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

/// Claims each order key's next job ($1 now, $2 how many, $3 this instance,
/// $4 the lease): see `claim_ordered`.
pub(super) static CLAIM_ORDERED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, owner = $3,
                              lease_until = {DB_NOW_MS} + $4
            FROM (SELECT o.id FROM jobs o
                  WHERE o.state = 'pending' AND o.order_key IS NOT NULL AND o.next_at <= $1
                    AND o.order_seq < COALESCE(
                        (SELECT MIN(seq) FROM events WHERE state = 'pending'),
                        9223372036854775807)
                    AND NOT EXISTS (
                        SELECT 1 FROM jobs e
                        WHERE e.action = o.action AND e.order_key = o.order_key
                          AND e.state IN ('pending', 'running') AND e.id <> o.id
                          AND (e.state = 'running'
                               OR (e.next_at <= $1
                                   AND (e.order_seq, e.seq) < (o.order_seq, o.seq))))
                  ORDER BY o.order_seq, o.seq LIMIT $2 FOR UPDATE SKIP LOCKED) c
            WHERE j.id = c.id
            RETURNING {CLAIMED}"
    )
});

/// Records attempts, each fenced on its job's owner: only the instance the
/// job is leased to records it, while it runs; one attempt or many
/// (arrays, an element per attempt: $1 job, $2 its new state, $3 when due
/// again, $4 when finished, $5 the message, $6 the attempt, $7 started, $8 ended,
/// $9 the outcome; $10 this instance): the jobs recorded, each with
/// whether it has an order key. The attempts come in their jobs' order:
/// rows are locked in that order.
pub(super) const FINISH: &str = "WITH a AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[],
                             $6::int4[], $7::int8[], $8::int8[], $9::text[])
            AS a(job_id, state, next_at, finished_at, message, n, started_at, ended_at, outcome)),
    j AS (
        UPDATE jobs SET state = a.state, next_at = COALESCE(a.next_at, jobs.next_at),
                        finished_at = a.finished_at,
                        last_error = COALESCE(a.message, jobs.last_error),
                        owner = NULL, lease_until = NULL, rate_slot = NULL
        FROM a
        WHERE jobs.id = a.job_id AND jobs.owner = $10 AND jobs.state = 'running'
        RETURNING jobs.id, jobs.order_key),
    i AS (
        INSERT INTO attempts (job_id, n, started_at, finished_at, outcome, message)
        SELECT a.job_id, a.n, a.started_at, a.ended_at, a.outcome, a.message
        FROM a JOIN j ON j.id = a.job_id
        ON CONFLICT (job_id, n) DO UPDATE SET
            started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
            outcome = EXCLUDED.outcome, message = EXCLUDED.message)
    SELECT id, order_key IS NOT NULL FROM j";

/// Puts a job claimed by this instance ($3) back, due at $2, without
/// using an attempt.
pub(super) const RELEASE_JOB: &str = "UPDATE jobs SET state = 'pending', next_at = $2,
        rate_slot = NULL, attempts = GREATEST(attempts - 1, 0), owner = NULL, lease_until = NULL
    WHERE id = $1 AND state = 'running' AND owner = $3";

/// Puts a job claimed by this instance ($3) back, due at the slot its
/// action's rate reserved for it ($2), noted on it, without using an attempt.
pub(super) const DEFER_JOB: &str = "UPDATE jobs SET state = 'pending', next_at = $2,
        rate_slot = $2, attempts = GREATEST(attempts - 1, 0), owner = NULL, lease_until = NULL
    WHERE id = $1 AND state = 'running' AND owner = $3";

/// Takes a slot of $3 µs from a rate budget ($1 action, $2 key) at $4 (µs):
/// the budget's new time (GCRA, `dispatch/rate.rs`).
pub(super) const RESERVE_RATE: &str = "INSERT INTO rate_budgets (action, key, tat_us)
    VALUES ($1, $2, $4::int8 + $3::int8)
    ON CONFLICT (action, key) DO UPDATE SET tat_us = GREATEST(rate_budgets.tat_us, $4::int8) + $3::int8
    RETURNING tat_us";

/// Takes a slot of $3 µs from a rate budget ($1 action, $2 key) at $4
/// (µs) only when the budget is full (its time not past $4): a row when
/// it did.
pub(super) const TAKE_RATE_IF_FULL: &str = "INSERT INTO rate_budgets (action, key, tat_us)
    VALUES ($1, $2, $4::int8 + $3::int8)
    ON CONFLICT (action, key) DO UPDATE SET tat_us = $4::int8 + $3::int8
        WHERE rate_budgets.tat_us <= $4::int8
    RETURNING tat_us";

/// An action's ($1) budgets, to show.
pub(super) const RATE_BUDGETS: &str = "SELECT key, tat_us FROM rate_budgets WHERE action = $1";

/// Forgets the slots an action's ($1) rate reserved for its waiting jobs
/// (from the partial index of them) ...
pub(super) const FORGET_RATE_SLOTS: &str = "UPDATE jobs SET rate_slot = NULL
    WHERE action = $1 AND state = 'pending' AND rate_slot IS NOT NULL";
/// ... and its budgets, so that the lowered rate counts from now.
pub(super) const FORGET_RATE_BUDGETS: &str = "DELETE FROM rate_budgets WHERE action = $1";

/// Hands back the jobs of instances that stopped beating: their leases
/// ran out (a crashed earlier run of this machine among them). Another
/// instance's running jobs stay its own.
pub(super) static RECOVER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL
         WHERE state = 'running' AND lease_until < {DB_NOW_MS}"
    )
});

/// Retention: a window of dedup keys expired by $1 (at most $2), taken in
/// their index's order by `ctid` (see `PgStore::prune_step`).
pub(super) const PRUNE_DEDUP: &str = "DELETE FROM dedup WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM dedup WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2))";

/// Retention: rate budgets whose time passed before $1 (µs; at most $2):
/// as good as none, until a job asks again.
pub(super) const PRUNE_RATE_BUDGETS: &str = "DELETE FROM rate_budgets WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM rate_budgets WHERE tat_us < $1 ORDER BY tat_us LIMIT $2))";

/// Retention: a window of object versions not updated since $1 (at most $2).
pub(super) const PRUNE_VERSIONS: &str = "DELETE FROM versions WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM versions WHERE updated_at < $1 ORDER BY updated_at LIMIT $2))";
