-- The console's accounts (operators, not push users), their sessions and the
-- audit log. A session is stored by the SHA-256 of its token, never the token;
-- `apps` is NULL for every app, else a JSON array of app ids.
CREATE TABLE operators (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    apps          TEXT,
    disabled_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE console_sessions (
    token_hash   TEXT PRIMARY KEY,
    operator_id  BIGINT NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    address      TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_by_operator ON console_sessions (operator_id);

-- Who did what, to which campaign or key, when and from where. Failed sign-ins
-- are rows too: the throttle counts them by account and by address.
CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    operator_id BIGINT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    app_id      TEXT,
    target      TEXT,
    address     TEXT,
    detail      TEXT
);
CREATE INDEX audit_log_by_time ON audit_log (at);
CREATE INDEX audit_log_failed_signins_by_actor ON audit_log (actor, at) WHERE action = 'signin_failed';
CREATE INDEX audit_log_failed_signins_by_address ON audit_log (address, at) WHERE action = 'signin_failed';
