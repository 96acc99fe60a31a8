-- Users moved in from another app (`identity import`). `external_id` is the old app's id, kept
-- so that a re-run finds what it already imported and operators can look accounts up by it;
-- NULL for accounts made here. `password_scheme` says how `password_hash` is checked: 'bcrypt'
-- (made here; the default, also right for rows older replicas insert), or an imported scheme
-- ('bcrypt-imported', 'argon2id', 'argon2i', 'pbkdf2-sha256', 'django-pbkdf2-sha256', 'none'),
-- which the owner's next successful login replaces with bcrypt at the configured cost.
ALTER TABLE users ADD COLUMN external_id text;
CREATE UNIQUE INDEX users_external_id_key ON users (external_id);
ALTER TABLE users ADD COLUMN password_scheme text NOT NULL DEFAULT 'bcrypt';
