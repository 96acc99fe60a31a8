-- Attempts of a (subject, client) pair counted in advance whose password check has not ended
-- (issue 15, retry storms). An attempt refused only because the pair's free failures are taken
-- up by checks still in flight waits for them to end instead of being refused: if one of them
-- succeeds, the pair's delay is cleared and the waiting attempt goes ahead.
ALTER TABLE login_throttle ADD COLUMN checking INTEGER NOT NULL DEFAULT 0;
