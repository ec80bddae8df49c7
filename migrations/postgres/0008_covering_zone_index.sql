-- A chunk's recipients are read from the (app_id, zone, id) range of this index.
-- The devices of one zone are spread over the whole table (they register in no
-- zone order), so fetching each row from the heap cost one page read per
-- recipient. With the columns the send needs in the index, the read is an
-- index-only scan of a few consecutive pages wherever the table is all-visible
-- (vacuumed), and falls back to the heap only for pages changed since.
DROP INDEX devices_active_by_zone;
CREATE INDEX devices_active_by_zone ON devices (app_id, zone, id)
    INCLUDE (user_id, platform, token, locale) WHERE state = 'active';
