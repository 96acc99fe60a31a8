-- See the Postgres migration of the same name.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN email_verified_at TEXT;

CREATE TABLE email_tokens (
    token_digest BLOB PRIMARY KEY NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('password_reset', 'verify_email', 'change_email')),
    user_id      BLOB REFERENCES users (id) ON DELETE CASCADE,
    email        TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT
);
CREATE INDEX email_tokens_user_id_idx ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at);

INSERT INTO email_tokens (token_digest, purpose, user_id, created_at, expires_at, used_at)
    SELECT token_digest, 'password_reset', user_id, created_at, expires_at, used_at FROM password_reset_tokens;
DROP TABLE password_reset_tokens;
