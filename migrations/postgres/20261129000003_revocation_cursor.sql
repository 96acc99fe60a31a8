-- A cursor for WatchRevocations: every revoking transaction takes the next value of a single
-- counter row. The row lock is held to commit, so cursor order is commit order, across replicas.
ALTER TABLE sessions ADD COLUMN revocation_seq bigint;

CREATE TABLE revocation_cursor (
    id    integer PRIMARY KEY CHECK (id = 1),
    value bigint  NOT NULL
);
INSERT INTO revocation_cursor (id, value) VALUES (1, 0);
