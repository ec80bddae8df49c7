-- SQLite drops the foreign keys of `deliveries` and `delivery_events` in its
-- 0011, as Postgres did in 0004. Kept as a migration so both backends number
-- their schema versions alike.
SELECT 1;
