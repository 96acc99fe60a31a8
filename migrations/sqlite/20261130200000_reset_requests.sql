-- See the Postgres migration of the same name. One SQLite process takes requests (a deleting
-- statement holds the one write lock until its transaction ends).
CREATE TABLE reset_requests (
    email_lower  TEXT PRIMARY KEY NOT NULL,
    requested_at TEXT NOT NULL
);
CREATE INDEX reset_requests_requested_at_idx ON reset_requests (requested_at);
