-- Switchyard's embedded store, migration 5: what the catalog learns of
-- each source's event types, and events held for an operator.
--
-- An event of a `strict` source that drifted from its schema waits in the
-- state 'held' (not routed, not pruned) until an operator releases it;
-- `held` says why, and stays when it is released (it is routed then
-- without being held again).
ALTER TABLE events ADD COLUMN held TEXT;
CREATE INDEX events_held ON events(id) WHERE state = 'held';

-- Each source's event types as they arrive: counts (all time, and this
-- and the last hour, from `hour_start`), first and last seen, the last
-- event; a schema learned from the first events of a type the catalog
-- does not describe, for sources that learn (`learned`, from
-- `learned_from` events).
CREATE TABLE event_types (
    source       TEXT NOT NULL,
    type         TEXT NOT NULL,
    total        INTEGER NOT NULL,
    hour_start   INTEGER NOT NULL,
    this_hour    INTEGER NOT NULL,
    last_hour    INTEGER NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    last_event   TEXT NOT NULL,
    learned      TEXT,
    learned_from INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, type)
) WITHOUT ROWID;
-- Retention's: types not seen within it.
CREATE INDEX event_types_seen ON event_types(last_seen);

-- Drift: where events of a type did not match its schema, per (source,
-- type, path, kind), with the first and last event that showed it.
CREATE TABLE schema_drift (
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    path        TEXT NOT NULL,            -- e.g. /eventData/entityId; empty for the type itself
    kind        TEXT NOT NULL,            -- 'unknown_type' | 'missing' | 'type_changed' | 'added' | 'invalid'
    detail      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    first_event TEXT NOT NULL,
    last_event  TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (source, type, path, kind)
) WITHOUT ROWID;
CREATE INDEX schema_drift_seen ON schema_drift(last_seen);
