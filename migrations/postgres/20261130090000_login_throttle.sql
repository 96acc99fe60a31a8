-- The lockout redesign (issue 15). The old per-email window let any stranger lock any account
-- with five requests; its rows are dropped (a lockout in progress is forgotten, once).
DROP TABLE login_attempts;

-- Progressive delays per (subject, client): subject is a normalized email (Login) or
-- 'user:<id>' (ChangePassword); client is the caller's key (address, /64, or certificate).
-- Times are Unix milliseconds so that both databases do the arithmetic the same way.
CREATE TABLE login_throttle (
    subject          text NOT NULL,
    client           text NOT NULL,
    failures         integer NOT NULL,
    delay_ms         bigint NOT NULL,
    next_attempt_ms  bigint NOT NULL,
    last_failure_ms  bigint NOT NULL,
    PRIMARY KEY (subject, client)
);
CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure_ms);

-- Consecutive failed logins per normalized email from every client; at the threshold the email
-- is locked until locked_until_ms. A success deletes the row.
CREATE TABLE login_failures (
    email_lower      text PRIMARY KEY NOT NULL,
    failures         integer NOT NULL,
    locked_until_ms  bigint NOT NULL,
    last_failure_ms  bigint NOT NULL
);
CREATE INDEX login_failures_last_failure ON login_failures (last_failure_ms);
