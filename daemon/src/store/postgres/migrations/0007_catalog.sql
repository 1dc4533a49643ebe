-- Switchyard's shared store, migration 7: what the catalog learns of
-- each source's event types, and events held for an operator (see the
-- embedded store's migration 5, which this mirrors).
ALTER TABLE events ADD COLUMN held text;
CREATE INDEX events_held ON events (id) WHERE state = 'held';

CREATE TABLE event_types (
    source       text NOT NULL,
    type         text NOT NULL,
    total        bigint NOT NULL,
    hour_start   bigint NOT NULL,
    this_hour    bigint NOT NULL,
    last_hour    bigint NOT NULL,
    first_seen   bigint NOT NULL,
    last_seen    bigint NOT NULL,
    last_event   text NOT NULL,
    learned      text,
    learned_from bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source, type)
);
CREATE INDEX event_types_seen ON event_types (last_seen);

CREATE TABLE schema_drift (
    source      text NOT NULL,
    type        text NOT NULL,
    path        text NOT NULL,
    kind        text NOT NULL,
    detail      text NOT NULL,
    count       bigint NOT NULL,
    first_event text NOT NULL,
    last_event  text NOT NULL,
    first_seen  bigint NOT NULL,
    last_seen   bigint NOT NULL,
    PRIMARY KEY (source, type, path, kind)
);
CREATE INDEX schema_drift_seen ON schema_drift (last_seen);
