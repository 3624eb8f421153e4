-- Each source's committed position per partition (Kafka offsets, stream
-- entry ids), written in the same transaction as the epoch's rows.
ALTER TABLE pipeline_progress ADD COLUMN IF NOT EXISTS source_positions JSONB;
