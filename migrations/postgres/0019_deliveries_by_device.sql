-- A user's messages are found through their devices, not through an index on
-- `deliveries (user_id, ...)`: the engine inserts a chunk's deliveries for a
-- range of device ids, so `deliveries_by_device` receives neighbours, where
-- `deliveries_by_user` received one entry on a random page per message when
-- device ids are unrelated to user ids (issue 21). Frequency caps and the
-- per-user message list read `device_users` (every device a user has ever
-- had: a device can move to another user, and the messages sent while it was
-- the first user's stay theirs) and then `deliveries_by_device`, filtering on
-- `user_id`.
--
-- `device_users` is insert-only and kept by triggers on `devices`; a pair
-- whose device or user is gone names no delivery and does no harm.
CREATE TABLE device_users (
    user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

INSERT INTO device_users (user_id, device_id)
SELECT user_id, id FROM devices WHERE user_id IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO device_users (user_id, device_id)
SELECT DISTINCT d.user_id, d.device_id FROM deliveries d
WHERE d.user_id IS NOT NULL AND EXISTS (SELECT 1 FROM users u WHERE u.id = d.user_id)
ON CONFLICT DO NOTHING;

-- Inserts of many devices at once (imports) add their pairs in one statement.
CREATE FUNCTION device_users_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_users (user_id, device_id)
    SELECT user_id, id FROM new_rows WHERE user_id IS NOT NULL
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER device_users_insert AFTER INSERT ON devices
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION device_users_insert();

-- A device moving to another user is rare; the WHEN clause keeps every other
-- update of a device (invalidation, last seen) from calling the function.
CREATE FUNCTION device_users_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_users (user_id, device_id) VALUES (NEW.user_id, NEW.id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER device_users_update AFTER UPDATE OF user_id ON devices
    FOR EACH ROW
    WHEN (NEW.user_id IS NOT NULL AND NEW.user_id IS DISTINCT FROM OLD.user_id)
    EXECUTE FUNCTION device_users_update();

CREATE INDEX deliveries_by_device ON deliveries (device_id);
DROP INDEX deliveries_by_user;
-- A user push's `no_device` message (a user with no device to send to) has
-- no device: those few are found by user.
CREATE INDEX deliveries_without_device ON deliveries (user_id, id) WHERE device_id IS NULL;
