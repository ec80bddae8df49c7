-- A user's messages are found through their devices, not through an index on
-- `deliveries (user_id, ...)`: the engine inserts a chunk's deliveries for a
-- range of device ids, so `deliveries_by_device` receives neighbours, where
-- `deliveries_by_user` received one entry on a random page per message when
-- device ids are unrelated to user ids (issue 21: 29% of the send rate on
-- SQLite). Frequency caps and the per-user message list read
-- `device_users` (every device a user has ever had: a device can move to
-- another user, and the messages sent while it was the first user's stay
-- theirs) and then `deliveries_by_device`, filtering on `user_id`.
--
-- `device_users` is insert-only and kept by triggers on `devices`; a pair
-- whose device or user is gone names no delivery and does no harm.
CREATE TABLE device_users (
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
) STRICT, WITHOUT ROWID;

INSERT OR IGNORE INTO device_users (user_id, device_id)
SELECT user_id, id FROM devices WHERE user_id IS NOT NULL;
INSERT OR IGNORE INTO device_users (user_id, device_id)
SELECT DISTINCT d.user_id, d.device_id FROM deliveries d
WHERE d.user_id IS NOT NULL AND EXISTS (SELECT 1 FROM users u WHERE u.id = d.user_id);

CREATE TRIGGER device_users_insert AFTER INSERT ON devices
WHEN NEW.user_id IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO device_users (user_id, device_id) VALUES (NEW.user_id, NEW.id);
END;
CREATE TRIGGER device_users_update AFTER UPDATE OF user_id ON devices
WHEN NEW.user_id IS NOT NULL AND NEW.user_id IS NOT OLD.user_id
BEGIN
    INSERT OR IGNORE INTO device_users (user_id, device_id) VALUES (NEW.user_id, NEW.id);
END;

CREATE INDEX deliveries_by_device ON deliveries (device_id);
DROP INDEX deliveries_by_user;
-- A user push's `no_device` message (a user with no device to send to) has
-- no device: those few are found by user.
CREATE INDEX deliveries_without_device ON deliveries (user_id, id) WHERE device_id IS NULL;
