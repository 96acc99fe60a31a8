-- See the Postgres migration of the same name. SQLite has no BEFORE trigger that can change the
-- row being inserted: this one fills the copy right after the insert, in the same statement.
ALTER TABLE user_roles ADD COLUMN user_created_at TEXT;
UPDATE user_roles SET user_created_at = (SELECT created_at FROM users WHERE users.id = user_roles.user_id);
CREATE TRIGGER user_roles_fill_user_created_at AFTER INSERT ON user_roles FOR EACH ROW
BEGIN
    UPDATE user_roles SET user_created_at = (SELECT created_at FROM users WHERE users.id = NEW.user_id)
    WHERE user_id = NEW.user_id AND role = NEW.role;
END;
CREATE INDEX user_roles_role_listing_idx ON user_roles (role, user_created_at, user_id);
DROP INDEX user_roles_role_idx;

DROP INDEX users_email_prefix_idx;
CREATE INDEX users_email_prefix_idx ON users (email_lower, created_at, id) WHERE deleted_at IS NULL;
