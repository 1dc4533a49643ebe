-- Switchyard's shared store, migration 5: rate limits (`rate` on an
-- action), one budget for all the instances.

-- A job over its action's budget goes back to waiting, due at the slot
-- the budget reserved for it; the slot is noted here, so that whichever
-- instance claims it at that time sends it without asking again. An
-- attempt clears it: a retry asks anew.
ALTER TABLE jobs ADD COLUMN rate_slot BIGINT;
-- The jobs waiting so, per action (`switchyard actions list`): an index
-- of only them.
CREATE INDEX jobs_rate_waiting ON jobs (action) WHERE state = 'pending' AND rate_slot IS NOT NULL;

-- Each budget (an action's, or one key's of it) as GCRA keeps it: the
-- time, in microseconds, at which it is full again.
CREATE TABLE rate_budgets (
    action TEXT NOT NULL,
    key    TEXT NOT NULL,
    tat_us BIGINT NOT NULL,
    PRIMARY KEY (action, key)
);
