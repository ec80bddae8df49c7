-- A chunk's recipients are read from the (app_id, zone, id) range of this index.
-- The devices of one zone are spread over the whole table, so reading each row
-- from the table cost a page per recipient. With every column the read needs in
-- the index (SQLite has no INCLUDE, and counts `state` as needed even though the
-- index is partial on it), the read is a scan of consecutive index pages.
DROP INDEX devices_active_by_zone;
CREATE INDEX devices_active_by_zone ON devices (app_id, zone, id, user_id, platform, token, locale, state)
    WHERE state = 'active';
