-- Transactional pushes: one row per POST /v1/push, holding the message its
-- deliveries (request_id) are sent with. Deliveries stay a log without foreign
-- keys (0004); a request's rows are written in the same transaction as it.
CREATE TABLE push_requests (
    id         TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    topic      TEXT,
    message    JSONB NOT NULL CHECK (jsonb_typeof(message) = 'object'),
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX push_requests_by_app ON push_requests (app_id, created_at DESC);
CREATE INDEX deliveries_by_request ON deliveries (request_id) WHERE request_id IS NOT NULL;
