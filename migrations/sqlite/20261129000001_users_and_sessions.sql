-- Same shape as the Postgres schema. sqlx stores UUIDs as 16-byte blobs and timestamps as
-- RFC 3339 text in UTC, which compares correctly as text.
CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    email         TEXT    NOT NULL,
    email_lower   TEXT    NOT NULL UNIQUE,
    full_name     TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);

CREATE TABLE sessions (
    id                   BLOB PRIMARY KEY NOT NULL,
    user_id              BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_digest BLOB NOT NULL UNIQUE,
    created_at           TEXT NOT NULL,
    expires_at           TEXT NOT NULL,
    last_used_at         TEXT NOT NULL,
    revoked_at           TEXT
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE retired_refresh_tokens (
    token_digest BLOB PRIMARY KEY NOT NULL,
    session_id   BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    retired_at   TEXT NOT NULL
);

CREATE INDEX retired_refresh_tokens_session_id_idx ON retired_refresh_tokens (session_id);
