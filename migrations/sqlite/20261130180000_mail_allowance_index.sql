-- See the Postgres migration of the same name (here the index covers the count outright).
DROP INDEX mail_outbox_recipient_idx;
CREATE INDEX mail_outbox_recipient_kind_idx ON mail_outbox (recipient, kind, created_at);
