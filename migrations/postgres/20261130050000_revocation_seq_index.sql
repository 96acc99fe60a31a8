-- Replicas read new revocations by cursor (`revocation_seq > $1`) on every hint: an index keeps
-- that a short range scan however many sessions the table holds. Partial: most sessions are
-- never revoked.
CREATE INDEX sessions_revocation_seq ON sessions (revocation_seq, id) WHERE revocation_seq IS NOT NULL;
