-- Switchyard's shared store, migration 3: what retention reads by.

-- A request's events: retention lets a request go once none is left, and
-- deleting a request deletes its events (ON DELETE CASCADE) — without it,
-- each of those scans every event.
CREATE INDEX IF NOT EXISTS events_request ON events (request_id);
-- Versions not updated within retention.
CREATE INDEX IF NOT EXISTS versions_updated ON versions (updated_at);
