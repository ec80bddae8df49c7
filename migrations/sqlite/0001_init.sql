-- Meridian schema (SQLite). Same model as migrations/postgres/; times are
-- RFC 3339 text in UTC as sqlx writes them, JSON is text checked with json_valid.

CREATE TABLE apps (
    id               TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64 AND id NOT GLOB '*[^a-z0-9_-]*' AND substr(id, 1, 1) NOT IN ('-', '_')),
    name             TEXT NOT NULL,
    default_timezone TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    UNIQUE (app_id, name)
) STRICT;

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL CHECK (length(external_id) BETWEEN 1 AND 256),
    phone       TEXT CHECK (phone GLOB '+[1-9]*' AND length(phone) BETWEEN 8 AND 16 AND substr(phone, 2) NOT GLOB '*[^0-9]*'),
    timezone    TEXT,
    locale      TEXT,
    attributes  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(attributes) AND json_type(attributes) = 'object'),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (app_id, external_id)
) STRICT;
CREATE INDEX users_by_phone ON users (app_id, phone) WHERE phone IS NOT NULL;

CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id        INTEGER REFERENCES users (id) ON DELETE CASCADE,
    install_id     TEXT CHECK (length(install_id) BETWEEN 1 AND 256),
    platform       TEXT NOT NULL CHECK (platform IN ('ios', 'android')),
    token          TEXT NOT NULL CHECK (length(token) BETWEEN 1 AND 4096),
    timezone       TEXT,
    locale         TEXT,
    is_primary     INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1)),
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'invalid')),
    invalid_reason TEXT,
    invalidated_at TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (app_id, token),
    CHECK (user_id IS NOT NULL OR install_id IS NOT NULL),
    CHECK ((state = 'invalid') = (invalidated_at IS NOT NULL))
) STRICT;
CREATE INDEX devices_active_by_zone ON devices (app_id, timezone) WHERE state = 'active';
CREATE INDEX devices_by_user ON devices (user_id);
CREATE INDEX devices_by_install ON devices (app_id, install_id) WHERE install_id IS NOT NULL;
CREATE UNIQUE INDEX devices_one_primary ON devices (user_id) WHERE is_primary = 1;

CREATE TABLE subscriptions (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    topic      TEXT NOT NULL CHECK (length(topic) BETWEEN 1 AND 64 AND topic NOT GLOB '*[^a-z0-9_-]*'),
    opted_in   INTEGER NOT NULL CHECK (opted_in IN (0, 1)),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, topic)
) STRICT, WITHOUT ROWID;

CREATE TABLE campaigns (
    id             INTEGER PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps (id),
    key            TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 100),
    name           TEXT NOT NULL,
    definition     TEXT NOT NULL CHECK (json_valid(definition)),
    state          TEXT NOT NULL CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
    revision       INTEGER NOT NULL DEFAULT 1,
    tzdata_version TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    scheduled_at   TEXT,
    completed_at   TEXT,
    UNIQUE (app_id, key)
) STRICT;
CREATE INDEX campaigns_by_state ON campaigns (app_id, state);

-- The campaign state machine, mirrored from src/state.rs (a test compares them).
CREATE TABLE campaign_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) STRICT, WITHOUT ROWID;
INSERT INTO campaign_transitions (from_state, to_state) VALUES
    ('draft', 'scheduled'), ('draft', 'cancelled'),
    ('scheduled', 'draft'), ('scheduled', 'running'), ('scheduled', 'paused'), ('scheduled', 'cancelled'),
    ('running', 'paused'), ('running', 'completed'), ('running', 'cancelled'),
    ('paused', 'scheduled'), ('paused', 'running'), ('paused', 'cancelled');

CREATE TRIGGER campaigns_state_transition BEFORE UPDATE OF state ON campaigns
    WHEN NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM campaign_transitions WHERE from_state = OLD.state AND to_state = NEW.state
    )
BEGIN
    SELECT RAISE(ABORT, 'invalid campaign state transition');
END;

CREATE TABLE slots (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    occurrence    TEXT NOT NULL,
    zone          TEXT NOT NULL,
    fire_at       TEXT NOT NULL,
    disposition   TEXT NOT NULL CHECK (disposition IN ('on_time', 'gap_shifted', 'quiet_hours', 'late_send_now', 'next_day', 'skipped')),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'released', 'completed', 'skipped', 'cancelled')),
    planned_count INTEGER NOT NULL DEFAULT 0 CHECK (planned_count >= 0),
    released_at   TEXT,
    released_by   TEXT,
    created_at    TEXT NOT NULL,
    UNIQUE (campaign_id, occurrence, zone),
    CHECK ((state = 'skipped') = (disposition = 'skipped'))
) STRICT;
CREATE INDEX slots_due ON slots (fire_at) WHERE state = 'pending';

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
    status           TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    provider_id      TEXT,
    error_reason     TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
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
    status      TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'cancelled', 'fallback_sent', 'fallback_failed')),
    attempt     INTEGER NOT NULL DEFAULT 0,
    detail      TEXT,
    at          TEXT NOT NULL
) STRICT;
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, id);
