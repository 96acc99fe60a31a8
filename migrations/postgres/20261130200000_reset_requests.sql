-- Password-reset requests waiting for the mail worker (issue 10). RequestPasswordReset only
-- records "a reset was asked for this (normalized) address at this time" here, the same row
-- whether or not an account has the address; the worker takes the row (deleting it, its lock
-- held until the work is committed, so two replicas never both take one: FOR UPDATE SKIP
-- LOCKED), looks the account up and stores the token and its message in the same transaction.
-- One row per address: a request while one is pending for the address adds nothing.
CREATE TABLE reset_requests (
    email_lower  text        PRIMARY KEY,
    requested_at timestamptz NOT NULL
);
-- The worker takes the oldest first.
CREATE INDEX reset_requests_requested_at_idx ON reset_requests (requested_at);
