-- The hot write of the engine is one `deliveries` row per message, on SQLite's
-- one writer. Its five foreign keys cost a parent lookup each per row (apps,
-- campaigns, slots, users, devices): 12% of the insert's time at a million rows
-- (BENCHMARKS.md, eighth round). Postgres dropped them in its 0004; the two
-- schemas now agree. Deliveries and their history are a log written only by the
-- engine under a lease, with ids read from rows that exist; whoever deletes a
-- campaign, slot, user or device deletes or keeps their deliveries explicitly
-- (ARCHITECTURE.md, invariants).
--
-- SQLite cannot drop a constraint, so both tables are rebuilt as in 0003: copied
-- aside, the history dropped before the table it referenced (foreign keys are on
-- and cannot be turned off inside the migration's transaction), then refilled.
CREATE TEMP TABLE deliveries_copy AS SELECT * FROM deliveries;
CREATE TEMP TABLE delivery_events_copy AS SELECT * FROM delivery_events;
DROP TABLE delivery_events;
DROP TABLE deliveries;

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    app_id           TEXT NOT NULL,
    campaign_id      INTEGER,
    slot_id          INTEGER,
    occurrence       TEXT,
    request_id       TEXT,
    user_id          INTEGER,
    device_id        INTEGER NOT NULL,
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
CREATE TABLE delivery_events (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'suppressed', 'cancelled', 'fallback_sent', 'fallback_failed')),
    attempt     INTEGER NOT NULL DEFAULT 0,
    detail      TEXT,
    at          TEXT NOT NULL
) STRICT;

INSERT INTO deliveries (id, app_id, campaign_id, slot_id, occurrence, request_id, user_id, device_id, priority,
    status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider_id, error_reason,
    created_at, updated_at, sent_at)
SELECT id, app_id, campaign_id, slot_id, occurrence, request_id, user_id, device_id, priority,
    status, attempts, next_attempt_at, lease_owner, lease_expires_at, provider_id, error_reason,
    created_at, updated_at, sent_at
FROM deliveries_copy ORDER BY id;
INSERT INTO delivery_events (id, delivery_id, status, attempt, detail, at)
SELECT id, delivery_id, status, attempt, detail, at FROM delivery_events_copy ORDER BY id;
DROP TABLE deliveries_copy;
DROP TABLE delivery_events_copy;

CREATE INDEX deliveries_leasable ON deliveries (priority DESC, next_attempt_at) WHERE status IN ('queued', 'retry');
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'leased';
CREATE INDEX deliveries_by_user ON deliveries (user_id, created_at DESC);
CREATE INDEX deliveries_pending_by_campaign ON deliveries (campaign_id) WHERE status IN ('queued', 'leased', 'retry');
CREATE INDEX deliveries_pending_by_slot ON deliveries (slot_id) WHERE status IN ('queued', 'leased', 'retry');
CREATE INDEX deliveries_by_request ON deliveries (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, id);
