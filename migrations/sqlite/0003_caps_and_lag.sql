-- Frequency caps: a recipient over a topic's cap gets a `suppressed` delivery row
-- (its outcome, queryable like any other) instead of a send.
--
-- SQLite cannot alter a CHECK, so both tables are rebuilt. Dropping `deliveries`
-- would cascade into `delivery_events` (foreign keys are on and cannot be turned
-- off inside the migration's transaction), so both are copied aside first and the
-- events table is dropped before the table it references.
CREATE TEMP TABLE deliveries_copy AS SELECT * FROM deliveries;
CREATE TEMP TABLE delivery_events_copy AS SELECT * FROM delivery_events;
DROP TABLE delivery_events;
DROP TABLE deliveries;

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    app_id           TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    campaign_id      INTEGER REFERENCES campaigns (id) ON DELETE CASCADE,
    slot_id          INTEGER REFERENCES slots (id) ON DELETE CASCADE,
    occurrence       TEXT,
    request_id       TEXT,
    user_id          INTEGER REFERENCES users (id) ON DELETE SET NULL,
    device_id        INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'suppressed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    provider_id      TEXT,
    error_reason     TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    sent_at          TEXT,
    CHECK (campaign_id IS NOT NULL OR request_id IS NOT NULL),
    CHECK ((status = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    UNIQUE (campaign_id, occurrence, device_id)
) STRICT;
CREATE INDEX deliveries_leasable ON deliveries (priority DESC, next_attempt_at) WHERE status IN ('queued', 'retry');
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'leased';
CREATE INDEX deliveries_by_user ON deliveries (user_id, created_at DESC);
-- Counts by campaign use the unique index's campaign_id prefix; the hot insert of a
-- sent delivery touches only the primary key, that index and deliveries_by_user.
CREATE INDEX deliveries_pending_by_campaign ON deliveries (campaign_id) WHERE status IN ('queued', 'leased', 'retry');

CREATE TABLE delivery_events (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'suppressed', 'cancelled', 'fallback_sent', 'fallback_failed')),
    attempt     INTEGER NOT NULL DEFAULT 0,
    detail      TEXT,
    at          TEXT NOT NULL
) STRICT;
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, id);
CREATE INDEX deliveries_pending_by_slot ON deliveries (slot_id) WHERE status IN ('queued', 'leased', 'retry');

INSERT INTO deliveries (id, app_id, campaign_id, slot_id, occurrence, request_id, user_id, device_id, priority,
    status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider_id, error_reason,
    created_at, updated_at, sent_at)
SELECT id, app_id, campaign_id, slot_id, occurrence, request_id, user_id, device_id, priority,
    status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider_id, error_reason,
    created_at, updated_at, sent_at
FROM deliveries_copy;
INSERT INTO delivery_events (id, delivery_id, status, attempt, detail, at)
SELECT id, delivery_id, status, attempt, detail, at FROM delivery_events_copy;
DROP TABLE deliveries_copy;
DROP TABLE delivery_events_copy;

-- Scheduler lag: when a slot's first send left, next to when it was due.
ALTER TABLE slots ADD COLUMN first_sent_at TEXT;

-- Chunks are leased by their place in their release first (`seq` counts from 0 in
-- every release), so a slot that comes due while a large campaign is being sent
-- starts at once instead of queueing behind that campaign's backlog.
ALTER TABLE slot_chunks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
DROP INDEX slot_chunks_pending;
CREATE INDEX slot_chunks_pending ON slot_chunks (seq, id) WHERE state = 'pending';
