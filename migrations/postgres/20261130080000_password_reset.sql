-- Single-use password-reset tokens, stored only as SHA-256 digests. A user has at most one
-- (a new request deletes the older ones); using it sets `used_at`.
CREATE TABLE password_reset_tokens (
    token_digest bytea       PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);
CREATE INDEX password_reset_tokens_user_id_idx ON password_reset_tokens (user_id);
CREATE INDEX password_reset_tokens_expires_at_idx ON password_reset_tokens (expires_at);

-- Messages per recipient in the last hour, for IDENTITY_MAIL_MAX_PER_HOUR.
CREATE INDEX mail_outbox_recipient_idx ON mail_outbox (recipient, created_at);
