-- See the Postgres migration of the same name.
ALTER TABLE user_events ADD COLUMN actor TEXT;
