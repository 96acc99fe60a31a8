-- Messages to send (reset links, verification links), written in the transaction that creates
-- what they carry, and delivered by a background worker. A worker claims a message by setting
-- `claim` and `claimed_until` (a lease; claims are taken with FOR UPDATE SKIP LOCKED, so two
-- replicas never take the same row); a worker that dies leaves a lease that simply runs out.
-- `payload` holds the link, a secret: it is emptied once the message is sent.
CREATE TABLE mail_outbox (
    id              uuid PRIMARY KEY,
    kind            text        NOT NULL,
    recipient       text        NOT NULL,
    payload         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claim           uuid,
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz
);

CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX mail_outbox_failed_idx ON mail_outbox (created_at) WHERE status = 'failed';
CREATE INDEX mail_outbox_sent_idx ON mail_outbox (sent_at) WHERE status = 'sent';
