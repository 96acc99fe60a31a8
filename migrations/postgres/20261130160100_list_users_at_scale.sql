-- ListUsers at a million users: every filter's page is one index range in listing order, or a
-- small set sorted (docs/operations.md, "Listing users at scale").

-- The role filter walks a role's holders in the users' creation order, so a page costs the same
-- whether one user in ten or one in ten thousand holds the role. A user's creation time never
-- changes: a trigger copies it onto each of their role rows, so every writer of user_roles (the
-- admin API, the CLI, an import, an older replica) fills it without naming it.
ALTER TABLE user_roles ADD COLUMN user_created_at timestamptz;
UPDATE user_roles r SET user_created_at = u.created_at FROM users u WHERE u.id = r.user_id;
CREATE FUNCTION user_roles_fill_user_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.user_created_at := (SELECT created_at FROM users WHERE id = NEW.user_id);
    RETURN NEW;
END
$$;
CREATE TRIGGER user_roles_fill_user_created_at BEFORE INSERT OR UPDATE OF user_id ON user_roles
    FOR EACH ROW EXECUTE FUNCTION user_roles_fill_user_created_at();
ALTER TABLE user_roles ALTER COLUMN user_created_at SET NOT NULL;
CREATE INDEX user_roles_role_listing_idx ON user_roles (role, user_created_at, user_id);
DROP INDEX user_roles_role_idx;

-- The email prefix filter: the prefix's range with each entry's place in the listing, so the
-- page is picked from the index alone (an index-only scan) and only its rows are read. The
-- statistics on the bytewise expression let the planner see how many addresses a prefix
-- matches, and walk the (created_at, id) index instead when a prefix is common.
DROP INDEX users_email_prefix_idx;
CREATE INDEX users_email_prefix_idx ON users (email_lower COLLATE "C", created_at, id) WHERE deleted_at IS NULL;
CREATE STATISTICS users_email_prefix_stats ON (email_lower COLLATE "C") FROM users;
ANALYZE users;
