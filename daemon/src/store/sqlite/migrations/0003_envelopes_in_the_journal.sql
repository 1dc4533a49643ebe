-- Switchyard's embedded store, migration 3: an event's envelope is kept
-- once, in its request's journal record (beside the body it was made
-- from, compressed with it), rather than again in its row. The row says
-- where that record is; its `envelope` is left empty. Rows written before
-- keep their envelope and no position. Queries read either through the
-- SQL function `journal_envelope` (`sqlite/envelopes.rs`).
ALTER TABLE events ADD COLUMN journal_seq INTEGER;
ALTER TABLE events ADD COLUMN journal_offset INTEGER;
