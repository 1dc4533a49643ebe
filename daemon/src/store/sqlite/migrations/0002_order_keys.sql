-- Switchyard's embedded store, migration 2: per-key ordering (`order_by`)
-- kept in the store, as PostgreSQL keeps it (its migration 2): a restart,
-- a retry or a replay keeps the order.

-- A job of an action with `order_by`: its key (the parameter's value) and
-- the rowid of its event (the order events were taken in); its own rowid
-- orders the calls of one event. Such a job is claimed only when no job
-- of its key is running, none before it is due, and every event taken in
-- before its own is routed. Jobs made before this migration have no key:
-- they run as they come.
ALTER TABLE jobs ADD COLUMN order_key TEXT;
ALTER TABLE jobs ADD COLUMN order_seq INTEGER;
CREATE INDEX jobs_ordered ON jobs (action, order_key, order_seq)
    WHERE order_key IS NOT NULL AND state IN ('pending', 'running');
CREATE INDEX jobs_ordered_due ON jobs (next_at)
    WHERE order_key IS NOT NULL AND state = 'pending';
