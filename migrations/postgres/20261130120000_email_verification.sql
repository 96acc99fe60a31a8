-- Whether the account's current email is proven to be its owner's (a verification link or a
-- password reset link was opened), and when. Accounts from before start unverified.
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- Single-use tokens sent by email, of every purpose (generalises password_reset_tokens):
-- stored only as SHA-256 digests; a newer token of one user and purpose deletes the older.
-- `email` is the address a verify_email or change_email token proves (as typed). A row with
-- no user is the stand-in a reset request for an unknown email writes and deletes in its own
-- transaction, so that both paths do the same work; none survives a commit.
CREATE TABLE email_tokens (
    token_digest bytea       PRIMARY KEY,
    purpose      text        NOT NULL CHECK (purpose IN ('password_reset', 'verify_email', 'change_email')),
    user_id      uuid        REFERENCES users (id) ON DELETE CASCADE,
    email        text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);
CREATE INDEX email_tokens_user_id_idx ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at);

INSERT INTO email_tokens (token_digest, purpose, user_id, created_at, expires_at, used_at)
    SELECT token_digest, 'password_reset', user_id, created_at, expires_at, used_at FROM password_reset_tokens;
DROP TABLE password_reset_tokens;
