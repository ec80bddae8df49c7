-- Every notification carries its own delivery's id (`apns-id`, `meridian.id`,
-- `data.meridian_id`). A campaign's deliveries are written once, with their
-- outcome, after the send: their ids are reserved before sending by moving the
-- table's AUTOINCREMENT counter (`reserve_delivery_ids`) and written
-- explicitly. AUTOINCREMENT never hands out an id at or below the counter, so a
-- push queued meanwhile cannot take a reserved id (a plain INTEGER PRIMARY KEY
-- takes the largest id + 1, which may be one reserved and not yet written).
-- Before, campaign sends carried the device id.
--
-- A transactional push to a user with no active device leaves a trace: one row
-- without a device, `no_device`, then `fallback_sent` or `fallback_failed`.
--
-- SQLite cannot add AUTOINCREMENT or change a CHECK: both tables are rebuilt
-- (neither has foreign keys since 0011).
CREATE TABLE deliveries_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id           TEXT NOT NULL,
    campaign_id      INTEGER,
    slot_id          INTEGER,
    occurrence       TEXT,
    request_id       TEXT,
    user_id          INTEGER,
    device_id        INTEGER,
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'suppressed', 'cancelled',
                                                'no_device', 'fallback_sent', 'fallback_failed')),
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
    CHECK (device_id IS NOT NULL OR status IN ('no_device', 'fallback_sent', 'fallback_failed')),
    CHECK ((status = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    UNIQUE (campaign_id, occurrence, device_id)
) STRICT;
INSERT INTO deliveries_new (id, app_id, campaign_id, slot_id, occurrence, request_id, user_id, device_id, priority,
    status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider_id, error_reason,
    created_at, updated_at, sent_at)
SELECT id, app_id, campaign_id, slot_id, occurrence, request_id, user_id, device_id, priority,
    status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider_id, error_reason,
    created_at, updated_at, sent_at
FROM deliveries ORDER BY id;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE TABLE delivery_events_new (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'suppressed', 'cancelled', 'no_device', 'fallback_sent', 'fallback_failed')),
    attempt     INTEGER NOT NULL DEFAULT 0,
    detail      TEXT,
    at          TEXT NOT NULL
) STRICT;
INSERT INTO delivery_events_new (id, delivery_id, status, attempt, detail, at)
SELECT id, delivery_id, status, attempt, detail, at FROM delivery_events ORDER BY id;
DROP TABLE delivery_events;
ALTER TABLE delivery_events_new RENAME TO delivery_events;

-- The counter exists from the start, so reserving is one UPDATE.
DELETE FROM sqlite_sequence WHERE name = 'deliveries';
INSERT INTO sqlite_sequence (name, seq) SELECT 'deliveries', COALESCE(MAX(id), 0) FROM deliveries;

CREATE INDEX deliveries_leasable ON deliveries (priority DESC, next_attempt_at) WHERE status IN ('queued', 'retry');
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'leased';
CREATE INDEX deliveries_by_user ON deliveries (user_id, created_at DESC);
CREATE INDEX deliveries_pending_by_campaign ON deliveries (campaign_id) WHERE status IN ('queued', 'leased', 'retry');
CREATE INDEX deliveries_pending_by_slot ON deliveries (slot_id) WHERE status IN ('queued', 'leased', 'retry');
CREATE INDEX deliveries_by_request ON deliveries (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, id);
