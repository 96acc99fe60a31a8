CREATE TABLE login_attempts (
    email_lower       TEXT    PRIMARY KEY NOT NULL,
    failures          INTEGER NOT NULL,
    window_started_at TEXT    NOT NULL
);
