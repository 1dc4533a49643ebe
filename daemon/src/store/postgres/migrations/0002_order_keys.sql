-- Switchyard's shared store, migration 2: per-key ordering (`order_by`)
-- across instances.

-- The order events were taken in, as the database saw their inserts: a
-- delivery acknowledged before the next was sent has the smaller number,
-- whichever instance took either.
ALTER TABLE events ADD COLUMN seq bigserial;
CREATE INDEX events_pending_seq ON events (seq) WHERE state = 'pending';

-- A job of an action with `order_by`: its key (the parameter's value), the
-- `seq` of its event, and its own insert order (calls of one event).
-- Such a job is claimed only when no job of its key is running, none
-- before it is due, and every event taken in before its own is routed.
ALTER TABLE jobs ADD COLUMN order_key text;
ALTER TABLE jobs ADD COLUMN order_seq bigint;
ALTER TABLE jobs ADD COLUMN seq bigserial;
CREATE INDEX jobs_ordered ON jobs (action, order_key, order_seq, seq)
    WHERE order_key IS NOT NULL AND state IN ('pending', 'running');
CREATE INDEX jobs_ordered_due ON jobs (next_at)
    WHERE order_key IS NOT NULL AND state = 'pending';
