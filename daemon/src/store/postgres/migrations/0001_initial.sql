-- Switchyard's shared store, migration 1. Times are Unix milliseconds
-- (bigint); lease times are the database's clock, so instances on machines
-- whose clocks differ still agree on when a lease ran out.

-- One row per accepted delivery, credentials redacted, kept whole.
CREATE TABLE requests (
    id          text PRIMARY KEY,          -- ULID
    source      text NOT NULL,
    received_at bigint NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    query       text NOT NULL,             -- redacted
    headers     jsonb NOT NULL,            -- [[name, value], ...], redacted
    body        bytea NOT NULL,
    verdict     text NOT NULL              -- 'accepted' | 'duplicate'
);

-- Events, from arrival to routing. `owner` is the instance that routes a
-- pending event (the one that took it in); when that instance stops
-- beating, another takes its pending events over.
CREATE TABLE events (
    id            text PRIMARY KEY,        -- ULID: sorts by arrival
    request_id    text NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
    source        text NOT NULL,
    type          text NOT NULL,
    received_at   bigint NOT NULL,
    envelope      jsonb NOT NULL,
    state         text NOT NULL,           -- 'pending' | 'routed' | 'stale'
    routings      integer NOT NULL DEFAULT 0,
    routed_at     bigint,
    rule_runs     jsonb,
    rules_version bigint,
    duplicates    integer NOT NULL DEFAULT 0,
    owner         text
);
CREATE INDEX events_pending ON events (id) WHERE state = 'pending';

-- Dedup keys within their window: the primary key makes a delivery that
-- reaches two instances at once one event.
CREATE TABLE dedup (
    source     text NOT NULL,
    key        text NOT NULL,
    event_id   text NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX dedup_expires ON dedup (expires_at);

-- The last version accepted per object (the stale-event guard).
CREATE TABLE versions (
    source     text NOT NULL,
    key        text NOT NULL,
    version    bigint NOT NULL,
    event_id   text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (source, key)
);

-- The outbox. A running job is leased to one instance (`owner`) until
-- `lease_until`; its attempt is recorded only by that owner.
CREATE TABLE jobs (
    id              text PRIMARY KEY,      -- ULID
    event_id        text NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    rule            text NOT NULL,
    call_index      integer NOT NULL,
    action          text NOT NULL,
    params          jsonb NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    state           text NOT NULL,         -- 'pending' | 'running' | 'done' | 'dead'
    attempts        integer NOT NULL DEFAULT 0,
    series_start    integer NOT NULL DEFAULT 0,
    next_at         bigint NOT NULL,
    last_error      text,
    created_at      bigint NOT NULL,
    finished_at     bigint,
    owner           text,
    lease_until     bigint
);
CREATE INDEX jobs_due ON jobs (next_at, id) WHERE state = 'pending';
CREATE INDEX jobs_running ON jobs (owner) WHERE state = 'running';
CREATE INDEX jobs_dead ON jobs (id) WHERE state = 'dead';
CREATE INDEX jobs_event ON jobs (event_id);

CREATE TABLE attempts (
    job_id      text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    n           integer NOT NULL,
    started_at  bigint NOT NULL,
    finished_at bigint NOT NULL,
    outcome     text NOT NULL,             -- 'done' | 'retry' | 'dead'
    message     text,
    PRIMARY KEY (job_id, n)
);

-- Each action's gate (breaker, or a pause after 410 Gone), shared.
CREATE TABLE action_states (
    action     text PRIMARY KEY,
    state      text NOT NULL,
    until_ms   bigint,
    failures   integer NOT NULL,
    reason     text,
    updated_at bigint NOT NULL
);

-- The instances sharing this database, and when each last beat.
CREATE TABLE instances (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    version      text NOT NULL,
    started_at   bigint NOT NULL,
    heartbeat_at bigint NOT NULL
);

-- Named leases with a time to live (the leader's is 'leader'): a row, not
-- a session lock, so that it survives connection poolers.
CREATE TABLE leases (
    name   text PRIMARY KEY,
    owner  text NOT NULL,
    until  bigint NOT NULL
);
