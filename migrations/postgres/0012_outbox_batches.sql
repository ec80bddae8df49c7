-- A status webhook batch keeps its members from its first attempt on:
-- `batch_id` is the id of the batch's first event, set when the batch is first
-- leased, so a retried batch is the same events under the same Idempotency-Key.
-- (Postgres identities are never reused: event ids need nothing more.)
ALTER TABLE webhook_outbox ADD COLUMN batch_id BIGINT;
