-- Who held a chunk's lease before the current holder: a takeover (attempt > 1)
-- is logged with the instance it was taken from (issue 22).
ALTER TABLE slot_chunks ADD COLUMN previous_owner TEXT;
