-- Outgoing hooks. `webhook_outbox` holds status changes of the messages of apps
-- with a status webhook, written in the same transaction as the change and
-- deleted once POSTed; `fallbacks` holds one fallback per (push, user), so it can
-- never fire twice for one message.
CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY,
    app_id           TEXT NOT NULL,
    delivery_id      INTEGER,
    request_id       TEXT,
    user_id          INTEGER,
    status           TEXT NOT NULL,
    detail           TEXT,
    at               TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    last_error       TEXT,
    CHECK ((state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (app_id, id) WHERE state <> 'dead';

CREATE TABLE fallbacks (
    id               INTEGER PRIMARY KEY,
    app_id           TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    user_id          INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (request_id, user_id),
    CHECK ((state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX fallbacks_due ON fallbacks (next_attempt_at) WHERE state IN ('pending', 'leased');

-- Whether a push falls back, and after how long without a receipt (seconds),
-- decided from the config when it was queued.
ALTER TABLE push_requests ADD COLUMN fallback INTEGER NOT NULL DEFAULT 0 CHECK (fallback IN (0, 1));
ALTER TABLE push_requests ADD COLUMN no_receipt_after_secs INTEGER;
CREATE INDEX push_requests_falling_back ON push_requests (created_at) WHERE fallback;
