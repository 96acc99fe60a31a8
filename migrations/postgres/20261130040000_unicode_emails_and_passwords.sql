-- Emails are matched in NFKC and refused when they look like another account's (Unicode TS #39
-- skeleton, computed by the service). The key is NULL for rows written before this migration
-- (or by a replica still running older code) until the service fills it in at its next start;
-- a unique index allows any number of NULLs.
ALTER TABLE users ADD COLUMN email_skeleton text;
CREATE UNIQUE INDEX users_email_skeleton_key ON users (email_skeleton);

-- Passwords are hashed in NFKC. Existing hashes were made of the text as typed: false for them
-- until a successful login rehashes the normalized form. Older replicas that insert without the
-- column also hash the text as typed, which the default records correctly.
ALTER TABLE users ADD COLUMN password_normalized boolean NOT NULL DEFAULT FALSE;
