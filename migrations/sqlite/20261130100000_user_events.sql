-- Same shape as the Postgres schema; see there. SQLite runs one writer at a time, so the commit
-- sequence is in commit order by construction.
CREATE TABLE user_events (
    seq         INTEGER PRIMARY KEY NOT NULL,
    user_id     BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    occurred_at TEXT    NOT NULL
);

CREATE INDEX user_events_occurred_at ON user_events (occurred_at);

CREATE TABLE user_events_retention (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    purged_through INTEGER NOT NULL
);
INSERT INTO user_events_retention (id, purged_through) VALUES (1, 0);
