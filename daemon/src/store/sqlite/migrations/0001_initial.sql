-- Switchyard's embedded store, migration 1: the schema of release 0.1.0.
-- Times are Unix milliseconds. Every JSON column holds UTF-8 JSON text.

-- One row per accepted delivery, credentials redacted. Its rowid is its
-- record's seq in the journal, which holds its headers and body (rows kept
-- before the journal existed hold them here, with no journal_offset).
CREATE TABLE requests (
    id          TEXT PRIMARY KEY,         -- ULID
    source      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    query       TEXT NOT NULL,            -- redacted
    headers     TEXT NOT NULL,            -- JSON [[name, value], ...], redacted
    body        BLOB NOT NULL,
    verdict     TEXT NOT NULL,            -- 'accepted' | 'duplicate'
    journal_offset INTEGER                -- the record's offset in its journal segment
);
-- No index on received_at: ids are ULIDs, so a time range is an id range.

-- Events, from their arrival to their routing.
CREATE TABLE events (
    id            TEXT PRIMARY KEY,       -- ULID: sorts by arrival
    request_id    TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
    source        TEXT NOT NULL,
    type          TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    envelope      TEXT NOT NULL,          -- the event as JSON
    state         TEXT NOT NULL,          -- 'pending' (to route) | 'routed' | 'stale' | 'handshake' (never routed)
    routings      INTEGER NOT NULL DEFAULT 0,  -- times routed (replays add one)
    routed_at     INTEGER,
    rule_runs     TEXT,                   -- JSON of the last routing's rule runs
    rules_version INTEGER,                -- the rule set version that routed it (per daemon start)
    duplicates    INTEGER NOT NULL DEFAULT 0,
    dedup_key     TEXT,                   -- kept in memory, then written to dedup in bulk (keys.rs)
    dedup_until   INTEGER                 -- when the key stops counting
);
CREATE INDEX events_pending ON events(id) WHERE state = 'pending';
-- A request's events: retention lets a request go once none is left, and
-- deleting a request looks for its events (the foreign key) — without it,
-- each of those reads every event.
CREATE INDEX events_request ON events(request_id);
-- Every index costs each webhook a write; time ranges use the ULID id, and
-- listing by source or type scans (newest first, bounded by the limit).
-- Every table that references another has an index on its reference
-- (a test checks it): a delete of the referenced row looks there.

-- Dedup keys seen within the window, per source: written in sorted runs
-- (the newest are held in memory and in their events' rows, see keys.rs).
CREATE TABLE dedup (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX dedup_expires ON dedup(expires_at);

-- The last version accepted per object, for sources whose events carry one
-- (an event not newer than this is stored as 'stale' and not routed).
CREATE TABLE versions (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
-- Retention's: versions not updated within it.
CREATE INDEX versions_updated ON versions(updated_at);

-- The outbox: one row per action call a rule made.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,     -- ULID
    event_id        TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    rule            TEXT NOT NULL,
    call_index      INTEGER NOT NULL,
    action          TEXT NOT NULL,
    params          TEXT NOT NULL,        -- JSON
    idempotency_key TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,        -- 'pending' | 'running' | 'done' | 'dead'
    attempts        INTEGER NOT NULL DEFAULT 0,  -- attempts ever made
    series_start    INTEGER NOT NULL DEFAULT 0,  -- attempts before the last redrive
    next_at         INTEGER NOT NULL,     -- when a pending job is due
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX jobs_due ON jobs(next_at) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs(id) WHERE state = 'running';
CREATE INDEX jobs_dead ON jobs(id) WHERE state = 'dead';
CREATE INDEX jobs_event ON jobs(event_id);

-- Every attempt at a job.
CREATE TABLE attempts (
    job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL,            -- 'done' | 'retry' | 'dead'
    message     TEXT,
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;

-- Each action's gate: the circuit breaker, or a pause after 410 Gone.
CREATE TABLE action_states (
    action      TEXT PRIMARY KEY,
    state       TEXT NOT NULL,            -- 'closed' | 'open' | 'half-open' | 'disabled'
    until_ms    INTEGER,
    failures    INTEGER NOT NULL,
    reason      TEXT,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- The store's own marks: 'journal_seq', the last journal record applied.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
