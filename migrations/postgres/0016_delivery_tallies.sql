-- A campaign's deliveries counted by slot, status and the minute they were
-- sent, kept by the database in the same transaction as every change of a
-- delivery, so that the campaign's counts (the console's live region and
-- plan, `GET /v1/campaigns/{key}/stats`, the CLI) read a few hundred rows
-- instead of every delivery.
--
-- Postgres has many writers: a counter row per key would make every
-- transaction that sends for a slot wait for the last one to commit. So the
-- table is an append-only ledger of deltas (one row per key per statement,
-- written by statement-level triggers from the statement's transition
-- tables), summed when read and compacted by `delivery_tally_compact` when a
-- campaign's slots complete. `slot_id` 0: no slot; `minute` 0: not sent.
-- Tallies outlive their deliveries: nothing here counts deletes.
CREATE TABLE delivery_tallies (
    campaign_id BIGINT NOT NULL,
    slot_id     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    minute      BIGINT NOT NULL,
    n           BIGINT NOT NULL
);
CREATE INDEX delivery_tallies_by_campaign ON delivery_tallies (campaign_id);

CREATE FUNCTION delivery_tallies_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
    SELECT campaign_id, COALESCE(slot_id, 0), status,
           COALESCE(CAST(FLOOR(EXTRACT(EPOCH FROM sent_at)) AS BIGINT) / 60, 0), COUNT(*)
    FROM new_rows
    WHERE campaign_id IS NOT NULL
    GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END
$$;

-- Transition tables cannot name columns (`UPDATE OF status`), so every update
-- comes here; one that changes neither status nor sent_at nets to nothing.
CREATE FUNCTION delivery_tallies_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
    SELECT campaign_id, slot_id, status, minute, SUM(n)
    FROM (
        SELECT campaign_id, COALESCE(slot_id, 0) AS slot_id, status,
               COALESCE(CAST(FLOOR(EXTRACT(EPOCH FROM sent_at)) AS BIGINT) / 60, 0) AS minute,
               -1 AS n
        FROM old_rows
        WHERE campaign_id IS NOT NULL
        UNION ALL
        SELECT campaign_id, COALESCE(slot_id, 0), status,
               COALESCE(CAST(FLOOR(EXTRACT(EPOCH FROM sent_at)) AS BIGINT) / 60, 0),
               1
        FROM new_rows
        WHERE campaign_id IS NOT NULL
    ) AS changes
    GROUP BY campaign_id, slot_id, status, minute
    HAVING SUM(n) <> 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER delivery_tallies_insert AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_tallies_insert();
CREATE TRIGGER delivery_tallies_update AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_tallies_update();

INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
SELECT campaign_id, COALESCE(slot_id, 0), status,
       COALESCE(CAST(FLOOR(EXTRACT(EPOCH FROM sent_at)) AS BIGINT) / 60, 0), COUNT(*)
FROM deliveries
WHERE campaign_id IS NOT NULL
GROUP BY 1, 2, 3, 4;
