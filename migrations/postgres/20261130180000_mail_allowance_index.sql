-- The hourly allowance counts one address's messages of one kind (up to the allowance): with
-- the kind in the index the count reads index entries only, never the rows of other kinds.
DROP INDEX mail_outbox_recipient_idx;
CREATE INDEX mail_outbox_recipient_kind_idx ON mail_outbox (recipient, kind, created_at);
