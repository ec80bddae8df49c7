-- A campaign's deliveries counted by slot, status and the minute they were
-- sent, kept by the database in the same transaction as every change of a
-- delivery, so that the campaign's counts (the console's live region and
-- plan, `GET /v1/campaigns/{key}/stats`, the CLI) read a few hundred rows
-- instead of every delivery.
--
-- SQLite has one writer and row-level triggers only: one counter row per key,
-- moved by each inserted or changed delivery. (Postgres keeps a ledger of
-- deltas instead; see its 0016.) `slot_id` 0: no slot; `minute` 0: not sent.
-- Tallies outlive their deliveries: nothing here counts deletes.
CREATE TABLE delivery_tallies (
    campaign_id INTEGER NOT NULL,
    slot_id     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    minute      INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, slot_id, status, minute)
) WITHOUT ROWID;

CREATE TRIGGER delivery_tallies_insert AFTER INSERT ON deliveries
WHEN NEW.campaign_id IS NOT NULL
BEGIN
    INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
    VALUES (NEW.campaign_id, COALESCE(NEW.slot_id, 0), NEW.status,
            COALESCE(CAST(strftime('%s', NEW.sent_at) AS INTEGER) / 60, 0), 1)
    ON CONFLICT (campaign_id, slot_id, status, minute) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER delivery_tallies_update AFTER UPDATE OF status, sent_at ON deliveries
WHEN OLD.campaign_id IS NOT NULL
 AND (OLD.status IS NOT NEW.status OR OLD.sent_at IS NOT NEW.sent_at)
BEGIN
    INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
    VALUES (OLD.campaign_id, COALESCE(OLD.slot_id, 0), OLD.status,
            COALESCE(CAST(strftime('%s', OLD.sent_at) AS INTEGER) / 60, 0), -1)
    ON CONFLICT (campaign_id, slot_id, status, minute) DO UPDATE SET n = n - 1;
    INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
    VALUES (NEW.campaign_id, COALESCE(NEW.slot_id, 0), NEW.status,
            COALESCE(CAST(strftime('%s', NEW.sent_at) AS INTEGER) / 60, 0), 1)
    ON CONFLICT (campaign_id, slot_id, status, minute) DO UPDATE SET n = n + 1;
END;

INSERT INTO delivery_tallies (campaign_id, slot_id, status, minute, n)
SELECT campaign_id, COALESCE(slot_id, 0), status,
       COALESCE(CAST(strftime('%s', sent_at) AS INTEGER) / 60, 0), COUNT(*)
FROM deliveries
WHERE campaign_id IS NOT NULL
GROUP BY 1, 2, 3, 4;
