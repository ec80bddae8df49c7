-- Key kinds (issue 20): a `server` key can do everything its app can; a
-- `client` key is publishable (shipped in the mobile app) and may only
-- register its device, unregister its token, read and set its user's
-- subscriptions and post receipts. Existing keys stay server keys.
ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'server' CHECK (kind IN ('server', 'client'));

-- The key every push's receipt token is signed with (HMAC-SHA256, 32 random
-- bytes in hex), made by the first `app_sync` that finds none: shared by every
-- instance through the database, never printed, never configured.
ALTER TABLE apps ADD COLUMN receipt_key TEXT;
