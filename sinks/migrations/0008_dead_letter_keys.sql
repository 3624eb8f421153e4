-- Dead letters keyed, so that a restart that refuses a record again (or
-- writes an epoch again) leaves one row: `r{n}` for the n-th record the
-- sources refused, `d{n}` for the dataflow's n-th refusal. Rows written
-- before this migration have none.
ALTER TABLE dead_letters ADD COLUMN key TEXT;
CREATE UNIQUE INDEX dead_letters_key ON dead_letters (key);
