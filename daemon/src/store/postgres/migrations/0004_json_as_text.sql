-- Switchyard's shared store, migration 4: JSON as text.

-- JSON kept as the text it came as (json), not decomposed (jsonb):
-- PostgreSQL's jsonb cannot hold the character U+0000, which a webhook's
-- JSON may carry ("\u0000") — such a request was refused with a 503 on
-- every retry, and an event routed with it stayed pending — while the
-- embedded store keeps it. json keeps any JSON text, costs no conversion
-- on the way in and out (the store only ever reads these whole), and is
-- no larger. The tables are rewritten once, at this migration.
ALTER TABLE requests ALTER COLUMN headers TYPE json USING headers::json;
ALTER TABLE events ALTER COLUMN envelope TYPE json USING envelope::json,
                   ALTER COLUMN rule_runs TYPE json USING rule_runs::json;
ALTER TABLE jobs ALTER COLUMN params TYPE json USING params::json;
