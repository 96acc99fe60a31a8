-- A second factor (issue 14): TOTP credentials, recovery codes and login challenges.

-- One TOTP credential per user. The RFC 6238 secret is sealed (XChaCha20-Poly1305 under the
-- key `key_id` names, the user id as associated data): a database dump alone yields no
-- secret. Unconfirmed (`confirmed_at` NULL) until the user proves their app with a code.
-- `last_step` is the last accepted time step (unix time / 30): a code is accepted once.
CREATE TABLE totp_credentials (
    user_id       uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed bytea       NOT NULL,
    nonce         bytea       NOT NULL,
    key_id        text        NOT NULL,
    created_at    timestamptz NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint      NOT NULL DEFAULT 0
);

-- Single-use recovery codes, only as SHA-256 digests (80 random bits each: no slow hash needed).
CREATE TABLE recovery_codes (
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_digest bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (user_id, code_digest)
);

-- The step between a right password and the tokens, for an account with a second factor: an
-- opaque handle (256 bits, kept as its SHA-256 digest), single use, short-lived, and dead after
-- a few wrong codes. No session exists until it is completed.
CREATE TABLE mfa_challenges (
    handle_digest bytea       PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    failures      integer     NOT NULL DEFAULT 0,
    consumed_at   timestamptz
);
CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);

-- How a session was authenticated, for the `amr` and `auth_time` claims of its tokens: when
-- its owner last proved themselves (login or step-up; NULL for sessions from before, read as
-- `created_at`) and whether a second factor was part of it.
ALTER TABLE sessions ADD COLUMN authenticated_at timestamptz;
ALTER TABLE sessions ADD COLUMN second_factor boolean NOT NULL DEFAULT FALSE;
