-- Dispatch: a released slot's audience is split into chunks by device-id range;
-- workers lease chunks, send, and write each delivery once with its outcome.

CREATE TABLE slot_chunks (
    id               INTEGER PRIMARY KEY,
    slot_id          INTEGER NOT NULL REFERENCES slots (id) ON DELETE CASCADE,
    campaign_id      INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    first_device_id  INTEGER NOT NULL,
    last_device_id   INTEGER NOT NULL,
    recipients       INTEGER NOT NULL CHECK (recipients > 0),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'cancelled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    finished_by      TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    CHECK (first_device_id <= last_device_id),
    CHECK ((state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
) STRICT;
CREATE INDEX slot_chunks_pending ON slot_chunks (id) WHERE state = 'pending';
CREATE INDEX slot_chunks_leased ON slot_chunks (lease_expires_at) WHERE state = 'leased';
CREATE INDEX slot_chunks_by_slot ON slot_chunks (slot_id, state);

CREATE TABLE slot_counts (
    slot_id INTEGER NOT NULL REFERENCES slots (id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (slot_id, kind)
) STRICT, WITHOUT ROWID;

ALTER TABLE deliveries ADD COLUMN sent_at TEXT;
CREATE INDEX deliveries_pending_by_slot ON deliveries (slot_id) WHERE status IN ('queued', 'leased', 'retry');

-- The zone a device's recipient is in: the device's own, else its user's, else ''.
-- Kept on the device so each slot's audience is an index range, not a scan.
ALTER TABLE devices ADD COLUMN zone TEXT NOT NULL DEFAULT '';
UPDATE devices SET zone = COALESCE(timezone, (SELECT u.timezone FROM users u WHERE u.id = devices.user_id), '');
DROP INDEX devices_active_by_zone;
CREATE INDEX devices_active_by_zone ON devices (app_id, zone, id) WHERE state = 'active';

-- For the per-slot counts of who was left out: dead tokens and users without a
-- device, by zone.
CREATE INDEX devices_invalid_by_zone ON devices (app_id, zone) WHERE state = 'invalid';
CREATE INDEX users_by_zone ON users (app_id, timezone);
