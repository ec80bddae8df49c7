-- Frequency caps: a recipient over a topic's cap gets a `suppressed` delivery row
-- (its outcome, queryable like any other) instead of a send.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN (
    'queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed',
    'token_invalid', 'expired', 'suppressed', 'cancelled'));
ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_status_check;
ALTER TABLE delivery_events ADD CONSTRAINT delivery_events_status_check CHECK (status IN (
    'queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed',
    'token_invalid', 'expired', 'suppressed', 'cancelled', 'fallback_sent', 'fallback_failed'));

-- Scheduler lag: when a slot's first send left, next to when it was due.
ALTER TABLE slots ADD COLUMN first_sent_at TIMESTAMPTZ;

-- Chunks are leased by their place in their release first (`seq` counts from 0 in
-- every release), so a slot that comes due while a large campaign is being sent
-- starts at once instead of queueing behind that campaign's backlog.
ALTER TABLE slot_chunks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
DROP INDEX slot_chunks_pending;
CREATE INDEX slot_chunks_pending ON slot_chunks (seq, id) WHERE state = 'pending';
