-- Same shape as the Postgres schema: only the SHA-256 digest of a key is stored.
CREATE TABLE service_keys (
    name        TEXT PRIMARY KEY NOT NULL,
    key_digest  BLOB NOT NULL UNIQUE,
    permissions TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
