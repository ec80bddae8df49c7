-- The language a device is sent in: its own locale, else its user's (as its
-- zone is its own, else its user's). Kept on the device like `zone`, so the
-- chunk read stays an index-only scan with no user row per recipient. Before,
-- a device registered without a locale got the default text even when its
-- user's locale was `de-DE`.
ALTER TABLE devices ADD COLUMN lang TEXT;
UPDATE devices SET lang = COALESCE(locale, (SELECT u.locale FROM users u WHERE u.id = devices.user_id))
WHERE locale IS NOT NULL OR user_id IS NOT NULL;
DROP INDEX devices_active_by_zone;
CREATE INDEX devices_active_by_zone ON devices (app_id, zone, id)
    INCLUDE (user_id, platform, token, lang) WHERE state = 'active';
