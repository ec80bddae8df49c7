-- Postgres drops the foreign keys of `deliveries` and `delivery_events` in its
-- 0004 (their triggers take row locks on every parent per row). SQLite keeps
-- them: its checks are plain index lookups with no locks. Kept as a migration so
-- both backends number their schema versions alike.
SELECT 1;
