-- Roles (issue 11): a user holds a set of role names (validated by the service: lower-case,
-- 1 to 64 of a-z 0-9 . _ : -). Access tokens carry them in a `roles` claim.
CREATE TABLE user_roles (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text        NOT NULL,
    granted_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, role)
);
-- ListUsers' "has role" filter.
CREATE INDEX user_roles_role_idx ON user_roles (role, user_id);

-- "Your devices": where a session was started from, recorded at login (NULL for older rows).
ALTER TABLE sessions ADD COLUMN client_address text;
ALTER TABLE sessions ADD COLUMN user_agent text;

-- A deleted account is erased at once (its email, name, hash, roles, attempts and reset tokens
-- go; its email is free again) but its id row stays, marked deleted, until its revoked sessions
-- have been purged: the revocation cursor lives on the sessions rows, and every replica must
-- read those revocations before they go.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
CREATE INDEX users_deleted_at_idx ON users (deleted_at) WHERE deleted_at IS NOT NULL;

-- ListUsers walks users in (created_at, id) order, keyset-paged; one index per indexed filter
-- keeps any page a short range scan (see docs/operations.md).
CREATE INDEX users_created_at_id_idx ON users (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX users_active_created_at_id_idx ON users (is_active, created_at, id) WHERE deleted_at IS NULL;
-- The email prefix filter compares bytes (COLLATE "C"), so a prefix is one index range whatever
-- the database's collation.
CREATE INDEX users_email_prefix_idx ON users (email_lower COLLATE "C") WHERE deleted_at IS NULL;
