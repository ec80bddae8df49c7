-- Idempotency keys of API requests (`Idempotency-Key`). A key is claimed
-- (status and response NULL) before its request runs and holds the answer after,
-- for 24 hours; a retry with the same key and request gets that answer again.
-- (0005 belongs to another change; sqlx applies migrations by version, gaps allowed.)
CREATE TABLE idempotency_keys (
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key          TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of the method, the path and the normalized request body.
    request_hash TEXT NOT NULL,
    status       INTEGER CHECK (status BETWEEN 200 AND 299),
    -- The JSON body as it was sent, replayed byte for byte.
    response     TEXT CHECK (response IS NULL OR json_valid(response)),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (app_id, key),
    CHECK ((status IS NULL) = (response IS NULL))
) STRICT;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (app_id, created_at);
