-- See the Postgres migration of the same name.
ALTER TABLE users ADD COLUMN email_skeleton TEXT;
CREATE UNIQUE INDEX users_email_skeleton_key ON users (email_skeleton);

ALTER TABLE users ADD COLUMN password_normalized BOOLEAN NOT NULL DEFAULT FALSE;
