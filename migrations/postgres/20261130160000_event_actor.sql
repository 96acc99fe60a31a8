-- Who made a change another than the account's owner made: the admin caller as its audit event
-- names it (`service_key:NAME`, `mtls:NAME`, `user:ID`), or `cli` for an operator's command.
-- NULL for the owner's own changes (and for every row written before this column).
ALTER TABLE user_events ADD COLUMN actor text;
