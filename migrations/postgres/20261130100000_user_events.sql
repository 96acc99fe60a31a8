-- The ordered stream of user events (WatchUserEvents). Each event is written in the transaction
-- that makes the change it records, and takes its `seq` from the commit sequence that
-- revocations use (the single counter row of `revocation_cursor`, whose lock is held to
-- commit): seq order is commit order across replicas, so a reader that has seen seq N has seen
-- every event below N that will ever exist. Gaps are normal (revocations and rolled-back
-- transactions spend values too).
CREATE TABLE user_events (
    seq         bigint      PRIMARY KEY,
    -- No foreign key: the events of a deleted account outlive it (its deletion is one of them).
    user_id     uuid        NOT NULL,
    kind        text        NOT NULL,
    -- The event as JSON (`domain::UserEvent`, serialised in one place).
    payload     text        NOT NULL,
    occurred_at timestamptz NOT NULL
);

-- The purge finds events older than the retention by time.
CREATE INDEX user_events_occurred_at ON user_events (occurred_at);

-- The highest seq the purge has deleted (it deletes a prefix of the stream): a consumer whose
-- cursor is below it has missed events and must resynchronise (OUT_OF_RANGE).
CREATE TABLE user_events_retention (
    id             integer PRIMARY KEY CHECK (id = 1),
    purged_through bigint  NOT NULL
);
INSERT INTO user_events_retention (id, purged_through) VALUES (1, 0);
