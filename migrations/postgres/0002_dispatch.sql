-- Dispatch: a released slot's audience is split into chunks by device-id range;
-- workers lease chunks, send, and write each delivery once with its outcome.

CREATE TABLE slot_chunks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_id          BIGINT NOT NULL REFERENCES slots (id) ON DELETE CASCADE,
    campaign_id      BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    first_device_id  BIGINT NOT NULL,
    last_device_id   BIGINT NOT NULL,
    recipients       INTEGER NOT NULL CHECK (recipients > 0),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'cancelled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    finished_by      TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CHECK (first_device_id <= last_device_id),
    CHECK ((state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX slot_chunks_pending ON slot_chunks (id) WHERE state = 'pending';
CREATE INDEX slot_chunks_leased ON slot_chunks (lease_expires_at) WHERE state = 'leased';
CREATE INDEX slot_chunks_by_slot ON slot_chunks (slot_id, state);

-- Counts per slot that are not rows of their own: recipients at release and who
-- was left out, by reason.
CREATE TABLE slot_counts (
    slot_id BIGINT NOT NULL REFERENCES slots (id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (slot_id, kind)
);

ALTER TABLE deliveries ADD COLUMN sent_at TIMESTAMPTZ;
CREATE INDEX deliveries_pending_by_slot ON deliveries (slot_id) WHERE status IN ('queued', 'leased', 'retry');

-- The zone a device's recipient is in: the device's own, else its user's, else ''.
-- Kept on the device so each slot's audience is an index range, not a scan.
ALTER TABLE devices ADD COLUMN zone TEXT NOT NULL DEFAULT '';
UPDATE devices d SET zone = COALESCE(d.timezone, u.timezone, '')
FROM users u WHERE u.id = d.user_id;
UPDATE devices SET zone = COALESCE(timezone, '') WHERE user_id IS NULL;
DROP INDEX devices_active_by_zone;
CREATE INDEX devices_active_by_zone ON devices (app_id, zone, id) WHERE state = 'active';

-- For the per-slot counts of who was left out: dead tokens and users without a
-- device, by zone.
CREATE INDEX devices_invalid_by_zone ON devices (app_id, zone) WHERE state = 'invalid';
CREATE INDEX users_by_zone ON users (app_id, timezone);
