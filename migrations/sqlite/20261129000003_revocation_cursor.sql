ALTER TABLE sessions ADD COLUMN revocation_seq INTEGER;

CREATE TABLE revocation_cursor (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revocation_cursor (id, value) VALUES (1, 0);
