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
