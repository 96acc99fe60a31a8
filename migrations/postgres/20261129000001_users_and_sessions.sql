-- Accounts. The email is kept as given; uniqueness is on its lower-cased form, computed by the
-- service (the same way for Postgres and SQLite).
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text        NOT NULL,
    email_lower   text        NOT NULL CONSTRAINT users_email_lower_key UNIQUE,
    full_name     text        NOT NULL,
    password_hash text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT TRUE,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- One row per login. Only the SHA-256 digest of the current refresh token is stored.
CREATE TABLE sessions (
    id                   uuid PRIMARY KEY,
    user_id              uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_digest bytea       NOT NULL CONSTRAINT sessions_refresh_token_digest_key UNIQUE,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    last_used_at         timestamptz NOT NULL,
    revoked_at           timestamptz
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Digests of refresh tokens that were rotated away: presenting one again is reuse, and ends
-- the session (RFC 9700 section 4.14.2).
CREATE TABLE retired_refresh_tokens (
    token_digest bytea       PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    retired_at   timestamptz NOT NULL
);

CREATE INDEX retired_refresh_tokens_session_id_idx ON retired_refresh_tokens (session_id);
