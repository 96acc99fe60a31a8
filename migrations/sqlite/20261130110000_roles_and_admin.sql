-- See the Postgres migration of the same name.
CREATE TABLE user_roles (
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role_idx ON user_roles (role, user_id);

ALTER TABLE sessions ADD COLUMN client_address TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;

ALTER TABLE users ADD COLUMN deleted_at TEXT;
CREATE INDEX users_deleted_at_idx ON users (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE INDEX users_created_at_id_idx ON users (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX users_active_created_at_id_idx ON users (is_active, created_at, id) WHERE deleted_at IS NULL;
-- SQLite compares text bytewise (BINARY) by default: the prefix filter is one index range.
CREATE INDEX users_email_prefix_idx ON users (email_lower) WHERE deleted_at IS NULL;
