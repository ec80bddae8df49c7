-- The zones of one campaign occurrence released together share their chunks: a
-- chunk is a range of device ids over all of the release's zones, so a chunk's
-- deliveries are consecutive in every index keyed by device or user instead of
-- scattered over all of them (a zone's devices are spread over the id space).
-- `released_with` names the release's first slot, which the chunks belong to.
-- Slots released before this migration had chunks of their own.
ALTER TABLE slots ADD COLUMN released_with BIGINT REFERENCES slots (id);
UPDATE slots SET released_with = id WHERE released_at IS NOT NULL;
CREATE INDEX slots_released_with ON slots (released_with) WHERE released_with IS NOT NULL;
