-- Transactional pushes: one row per POST /v1/push, holding the message its
-- deliveries (request_id) are sent with, written in the same transaction.
CREATE TABLE push_requests (
    id         TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    topic      TEXT,
    message    TEXT NOT NULL CHECK (json_valid(message) AND json_type(message) = 'object'),
    created_at TEXT NOT NULL
);
CREATE INDEX push_requests_by_app ON push_requests (app_id, created_at DESC);
CREATE INDEX deliveries_by_request ON deliveries (request_id) WHERE request_id IS NOT NULL;
