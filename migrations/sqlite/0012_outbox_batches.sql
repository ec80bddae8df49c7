-- Event ids are never reused: a plain INTEGER PRIMARY KEY hands out the largest
-- id + 1, so once the outbox drained ids started again at 1 and receivers saw
-- `status-1-1` twice with different content. AUTOINCREMENT never goes back;
-- SQLite cannot add it to a table, so the table is rebuilt with its rows.
--
-- Ids handed out before this migration are unknown once sent and deleted. Each
-- outbox row was one status change of a delivery, a delivery event or a
-- fallback, so no outbox id ever exceeded the sum of those tables' largest ids:
-- the sequence starts past that sum.
--
-- `batch_id` is the id of the first event of the batch a row was first leased
-- in: a retried batch is the same events under the same Idempotency-Key.
CREATE TABLE webhook_outbox_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id           TEXT NOT NULL,
    delivery_id      INTEGER,
    request_id       TEXT,
    user_id          INTEGER,
    status           TEXT NOT NULL,
    detail           TEXT,
    at               TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    last_error       TEXT,
    batch_id         INTEGER,
    CHECK ((state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
INSERT INTO webhook_outbox_new (id, app_id, delivery_id, request_id, user_id, status, detail, at, state,
                                attempts, next_attempt_at, lease_owner, lease_expires_at, last_error)
SELECT id, app_id, delivery_id, request_id, user_id, status, detail, at, state,
       attempts, next_attempt_at, lease_owner, lease_expires_at, last_error
FROM webhook_outbox;
DROP TABLE webhook_outbox;
ALTER TABLE webhook_outbox_new RENAME TO webhook_outbox;
CREATE INDEX webhook_outbox_due ON webhook_outbox (app_id, id) WHERE state <> 'dead';
DELETE FROM sqlite_sequence WHERE name = 'webhook_outbox';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'webhook_outbox', MAX(
    (SELECT COALESCE(MAX(id), 0) FROM webhook_outbox),
    (SELECT COALESCE(MAX(id), 0) FROM deliveries)
      + (SELECT COALESCE(MAX(id), 0) FROM delivery_events)
      + (SELECT COALESCE(MAX(id), 0) FROM fallbacks));
