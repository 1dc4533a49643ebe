-- Switchyard's embedded store, migration 4: rate limits (`rate` on an
-- action). A job over its action's budget goes back to waiting, due at
-- the slot the budget reserved for it; the slot is noted here, so that
-- claimed at it the job goes without asking the budget again. An attempt
-- clears it: a retry asks anew.
ALTER TABLE jobs ADD COLUMN rate_slot INTEGER;
-- The jobs waiting so, per action (`switchyard actions list`): an index
-- of only them.
CREATE INDEX jobs_rate_waiting ON jobs (action) WHERE state = 'pending' AND rate_slot IS NOT NULL;
