-- Meridian schema (Postgres). The SQLite schema in migrations/sqlite/ is the same
-- model; the two differ only where the dialects do (identity columns, JSON, time types).

CREATE TABLE apps (
    id               TEXT PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name             TEXT NOT NULL,
    default_timezone TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    UNIQUE (app_id, name)
);

CREATE TABLE users (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    external_id TEXT NOT NULL CHECK (length(external_id) BETWEEN 1 AND 256),
    phone       TEXT CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    timezone    TEXT,
    locale      TEXT,
    attributes  JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (app_id, external_id)
);
CREATE INDEX users_by_phone ON users (app_id, phone) WHERE phone IS NOT NULL;

CREATE TABLE devices (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id        BIGINT REFERENCES users (id) ON DELETE CASCADE,
    install_id     TEXT CHECK (length(install_id) BETWEEN 1 AND 256),
    platform       TEXT NOT NULL CHECK (platform IN ('ios', 'android')),
    token          TEXT NOT NULL CHECK (length(token) BETWEEN 1 AND 4096),
    timezone       TEXT,
    locale         TEXT,
    is_primary     BOOLEAN NOT NULL DEFAULT FALSE,
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'invalid')),
    invalid_reason TEXT,
    invalidated_at TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (app_id, token),
    CHECK (user_id IS NOT NULL OR install_id IS NOT NULL),
    CHECK ((state = 'invalid') = (invalidated_at IS NOT NULL))
);
CREATE INDEX devices_active_by_zone ON devices (app_id, timezone) WHERE state = 'active';
CREATE INDEX devices_by_user ON devices (user_id);
CREATE INDEX devices_by_install ON devices (app_id, install_id) WHERE install_id IS NOT NULL;
-- At most one primary device per user.
CREATE UNIQUE INDEX devices_one_primary ON devices (user_id) WHERE is_primary;

CREATE TABLE subscriptions (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    topic      TEXT NOT NULL CHECK (topic ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    opted_in   BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, topic)
);

CREATE TABLE campaigns (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps (id),
    key            TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 100),
    name           TEXT NOT NULL,
    definition     JSONB NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
    revision       INTEGER NOT NULL DEFAULT 1,
    tzdata_version TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    scheduled_at   TIMESTAMPTZ,
    completed_at   TIMESTAMPTZ,
    UNIQUE (app_id, key)
);
CREATE INDEX campaigns_by_state ON campaigns (app_id, state);

-- The campaign state machine, mirrored from src/state.rs (a test compares them).
CREATE TABLE campaign_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO campaign_transitions (from_state, to_state) VALUES
    ('draft', 'scheduled'), ('draft', 'cancelled'),
    ('scheduled', 'draft'), ('scheduled', 'running'), ('scheduled', 'paused'), ('scheduled', 'cancelled'),
    ('running', 'paused'), ('running', 'completed'), ('running', 'cancelled'),
    ('paused', 'scheduled'), ('paused', 'running'), ('paused', 'cancelled');

CREATE FUNCTION campaigns_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> OLD.state AND NOT EXISTS (
        SELECT 1 FROM campaign_transitions WHERE from_state = OLD.state AND to_state = NEW.state
    ) THEN
        RAISE EXCEPTION 'invalid campaign state transition % -> %', OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER campaigns_state_transition BEFORE UPDATE OF state ON campaigns
    FOR EACH ROW EXECUTE FUNCTION campaigns_check_transition();

CREATE TABLE slots (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id   BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    occurrence    TEXT NOT NULL,
    zone          TEXT NOT NULL,
    fire_at       TIMESTAMPTZ NOT NULL,
    disposition   TEXT NOT NULL CHECK (disposition IN ('on_time', 'gap_shifted', 'quiet_hours', 'late_send_now', 'next_day', 'skipped')),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'released', 'completed', 'skipped', 'cancelled')),
    planned_count BIGINT NOT NULL DEFAULT 0 CHECK (planned_count >= 0),
    released_at   TIMESTAMPTZ,
    released_by   TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (campaign_id, occurrence, zone),
    CHECK ((state = 'skipped') = (disposition = 'skipped'))
);
CREATE INDEX slots_due ON slots (fire_at) WHERE state = 'pending';

CREATE TABLE deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id           TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    campaign_id      BIGINT REFERENCES campaigns (id) ON DELETE CASCADE,
    slot_id          BIGINT REFERENCES slots (id) ON DELETE CASCADE,
    occurrence       TEXT,
    request_id       TEXT,
    user_id          BIGINT REFERENCES users (id) ON DELETE SET NULL,
    device_id        BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    priority         SMALLINT NOT NULL DEFAULT 0,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  TIMESTAMPTZ,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    provider_id      TEXT,
    error_reason     TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CHECK (campaign_id IS NOT NULL OR request_id IS NOT NULL),
    CHECK ((status = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    -- One message per device per campaign occurrence.
    UNIQUE (campaign_id, occurrence, device_id)
);
CREATE INDEX deliveries_leasable ON deliveries (priority DESC, next_attempt_at) WHERE status IN ('queued', 'retry');
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'leased';
CREATE INDEX deliveries_by_user ON deliveries (user_id, created_at DESC);
-- Counts by campaign use the unique index's campaign_id prefix; the hot insert of a
-- sent delivery touches only the primary key, that index and deliveries_by_user.
CREATE INDEX deliveries_pending_by_campaign ON deliveries (campaign_id) WHERE status IN ('queued', 'leased', 'retry');

CREATE TABLE delivery_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'leased', 'retry', 'sent', 'delivered', 'opened', 'dismissed', 'failed', 'token_invalid', 'expired', 'cancelled', 'fallback_sent', 'fallback_failed')),
    attempt     INTEGER NOT NULL DEFAULT 0,
    detail      TEXT,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, id);
