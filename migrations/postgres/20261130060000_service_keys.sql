-- Per-service API keys for the service-facing RPCs (WatchRevocations, later the admin API).
-- Only the SHA-256 digest of a key is stored; a presented key is looked up by its digest.
-- Revoked keys stay, so that `service-key list` and the audit trail keep their names.
CREATE TABLE service_keys (
    name        text        PRIMARY KEY,
    key_digest  bytea       NOT NULL CONSTRAINT service_keys_key_digest_key UNIQUE,
    -- Comma-separated permission names, sorted: `admin,watch_revocations`.
    permissions text        NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
