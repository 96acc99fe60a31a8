-- Failed-login counter per lower-cased email, whether or not an account exists, shared by every
-- replica. An attempt is counted before its password is checked; a success deletes the row.
CREATE TABLE login_attempts (
    email_lower       text        PRIMARY KEY,
    failures          integer     NOT NULL,
    window_started_at timestamptz NOT NULL
);
