//! What the integration tests need to see or do behind the service's back, as a small API
//! instead of pools and raw SQL: counting and inspecting rows, a revocation no replica is told
//! about, killing the revocation listeners, creating and dropping Postgres databases. Compiled
//! only for tests and the `test-helpers` feature, never into a release build.

use chrono::{DateTime, Utc};

use super::{LISTENER_APPLICATION_NAME, Pool, REVOCATION_CHANNEL, Store, StoreError, with_pool};
use crate::domain::{PasswordHash, SessionId, UserId};

fn misuse(what: &str) -> StoreError {
    StoreError::Internal(sqlx::Error::Configuration(what.to_owned().into()))
}

impl Store {
    /// Creates the empty database `name` on the Postgres server this store is connected to
    /// (tests get a fresh one each). `name` must be a plain identifier.
    pub async fn create_database(&self, name: &str) -> Result<(), StoreError> {
        let pool = self.server_pool(name)?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(pool).await?;
        Ok(())
    }

    /// Drops the database `name` if it exists, ending the connections still open to it (the
    /// servers of a test that has ended may not have closed theirs yet). Postgres 13 or later.
    pub async fn drop_database(&self, name: &str) -> Result<(), StoreError> {
        let pool = self.server_pool(name)?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(pool).await?;
        Ok(())
    }

    /// Drops the database `name` if it exists and nobody is connected to it; fails otherwise.
    pub async fn drop_database_unless_in_use(&self, name: &str) -> Result<(), StoreError> {
        let pool = self.server_pool(name)?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(pool).await?;
        Ok(())
    }

    /// The names of the databases on this Postgres server that start with `prefix`.
    pub async fn databases_starting_with(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        const SQL: &str =
            "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, $1) ORDER BY 1";
        let Pool::Postgres(pool) = &self.pool else {
            return Err(misuse("only a Postgres server has other databases"));
        };
        Ok(sqlx::query_scalar(SQL).bind(prefix).fetch_all(pool).await?)
    }

    /// The Postgres pool, for a statement on the database `name` (which must be a plain
    /// identifier: it is written into the statement).
    fn server_pool(&self, name: &str) -> Result<&sqlx::PgPool, StoreError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(misuse("a database name must be a plain identifier"));
        }
        let Pool::Postgres(pool) = &self.pool else {
            return Err(misuse("only a Postgres server has databases to create or drop"));
        };
        Ok(pool)
    }

    /// The refresh-token column of every session of `user`, exactly as stored.
    pub async fn stored_refresh_token_digests(&self, user: UserId) -> Result<Vec<Vec<u8>>, StoreError> {
        const SQL: &str = "SELECT refresh_token_digest FROM sessions WHERE user_id = $1";
        let digests = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(user.into_uuid())
            .fetch_all(pool)
            .await)?;
        Ok(digests)
    }

    /// Sessions of `user` still in the table, live or not yet purged.
    pub async fn session_count(&self, user: UserId) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM sessions WHERE user_id = $1";
        let count = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(user.into_uuid())
            .fetch_one(pool)
            .await)?;
        Ok(count)
    }

    /// Marks a session revoked the way no replica would: no cursor and no announcement, so only
    /// a reload from the table can reveal it.
    pub async fn revoke_session_unannounced(
        &self,
        session: SessionId,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE sessions SET revoked_at = $1 WHERE id = $2";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(at)
            .bind(session.into_uuid())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Terminates the revocation-listener connection of every replica on this database, as a
    /// network failure would; one `true` per connection terminated. None on SQLite.
    pub async fn terminate_revocation_listeners(&self) -> Result<Vec<bool>, StoreError> {
        const SQL: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()";
        let Pool::Postgres(pool) = &self.pool else { return Ok(Vec::new()) };
        Ok(sqlx::query_scalar(SQL).bind(LISTENER_APPLICATION_NAME).fetch_all(pool).await?)
    }

    /// Puts `hash` in place as a hash made before passwords were normalized (of the text as
    /// typed), as the migration leaves every older account.
    pub async fn set_password_hash_as_before(
        &self,
        user: UserId,
        hash: &PasswordHash,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE users SET password_hash = $1, password_normalized = FALSE WHERE id = $2";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(hash.expose())
            .bind(user.into_uuid())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// The stored password hash of `user` and whether it is of the normalized text.
    pub async fn password_hash_of(&self, user: UserId) -> Result<(String, bool), StoreError> {
        const SQL: &str = "SELECT password_hash, password_normalized FROM users WHERE id = $1";
        let row = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(user.into_uuid())
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    /// Rewrites an account as code from before email normalization would have stored it: the
    /// email `email`, matched on its plain lower-case, with no confusable key.
    pub async fn set_email_as_before(&self, user: UserId, email: &str) -> Result<(), StoreError> {
        const SQL: &str =
            "UPDATE users SET email = $1, email_lower = $2, email_skeleton = NULL WHERE id = $3";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(email)
            .bind(email.to_lowercase())
            .bind(user.into_uuid())
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// The normalized email and confusable key of `user`, as stored.
    pub async fn email_keys_of(&self, user: UserId) -> Result<(String, Option<String>), StoreError> {
        const SQL: &str = "SELECT email_lower, email_skeleton FROM users WHERE id = $1";
        let row = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(user.into_uuid())
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    /// Sends `payload` on the revocation channel as any role that can connect could: a forged
    /// announcement. Postgres only.
    pub async fn notify_revocation_channel(&self, payload: &str) -> Result<(), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(misuse("only Postgres has a revocation channel"));
        };
        sqlx::query("SELECT pg_notify($1, $2)").bind(REVOCATION_CHANNEL).bind(payload).execute(pool).await?;
        Ok(())
    }

    /// Inserts `count` sessions of `user` that expired at `expired_at`, in one statement (a
    /// million take seconds, not minutes): what a purge finds after a busy month.
    pub async fn insert_expired_sessions(
        &self,
        user: UserId,
        count: u32,
        expired_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        const POSTGRES: &str = "INSERT INTO sessions
             (id, user_id, refresh_token_digest, created_at, expires_at, last_used_at)
             SELECT gen_random_uuid(), $1, uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), $2, $2, $2
             FROM generate_series(1, $3)";
        const SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $3)
             INSERT INTO sessions (id, user_id, refresh_token_digest, created_at, expires_at, last_used_at)
             SELECT randomblob(16), $1, randomblob(32), $2, $2, $2 FROM n";
        let inserted = match &self.pool {
            Pool::Postgres(pool) => sqlx::query(POSTGRES)
                .bind(user.into_uuid())
                .bind(expired_at)
                .bind(i64::from(count))
                .execute(pool)
                .await?
                .rows_affected(),
            Pool::Sqlite(pool) => sqlx::query(SQLITE)
                .bind(user.into_uuid())
                .bind(expired_at)
                .bind(i64::from(count))
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(inserted)
    }

    /// Failed password checks still counted for `subject` (a normalized email, or
    /// `user:<id>`), summed over every client: the guesses the server let through.
    pub async fn throttled_failures(&self, subject: &str) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT CAST(COALESCE(SUM(failures), 0) AS BIGINT) FROM login_throttle WHERE subject = $1";
        let sum = with_pool!(self, pool => sqlx::query_scalar(SQL).bind(subject).fetch_one(pool).await)?;
        Ok(sum)
    }

    /// The consecutive failed logins counted for a normalized email (0 without a row).
    pub async fn consecutive_login_failures(&self, email: &str) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT CAST(failures AS BIGINT) FROM login_failures WHERE email_lower = $1";
        let failures: Option<i64> =
            with_pool!(self, pool => sqlx::query_scalar(SQL).bind(email).fetch_optional(pool).await)?;
        Ok(failures.unwrap_or(0))
    }

    /// Rows in the two lockout tables together.
    pub async fn lockout_rows(&self) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT (SELECT COUNT(*) FROM login_throttle) + (SELECT COUNT(*) FROM login_failures)";
        let rows = with_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(rows)
    }
}

/// One outbox row as a test sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailRow {
    pub kind: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i32,
    pub payload: String,
}

impl Store {
    /// Every outbox row, oldest first.
    pub async fn mail_rows(&self) -> Result<Vec<MailRow>, StoreError> {
        const SQL: &str =
            "SELECT kind, recipient, status, attempts, payload FROM mail_outbox ORDER BY created_at, id";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, MailRow>(SQL).fetch_all(pool).await)?;
        Ok(rows)
    }
}

impl Store {
    /// The rows of every table of the service (the migrations' bookkeeping aside), by table:
    /// what a test compares before and after a call to see everything it wrote.
    pub async fn row_counts(&self) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        const TABLES_POSTGRES: &str = "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
               AND table_name <> '_sqlx_migrations'";
        const TABLES_SQLITE: &str = "SELECT name FROM sqlite_master
             WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_' AND name <> '_sqlx_migrations'";
        let sql = match &self.pool {
            Pool::Postgres(_) => TABLES_POSTGRES,
            Pool::Sqlite(_) => TABLES_SQLITE,
        };
        let tables: Vec<String> = with_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await)?;
        let mut counts = std::collections::BTreeMap::new();
        for table in tables {
            // The names come from the catalog, not from a caller.
            let count_sql = format!("SELECT COUNT(*) FROM \"{table}\"");
            let count: i64 = with_pool!(self, pool => sqlx::query_scalar(&count_sql).fetch_one(pool).await)?;
            counts.insert(table, count);
        }
        Ok(counts)
    }

    /// The addresses of pending reset requests, oldest first.
    pub async fn reset_request_rows(&self) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT email_lower FROM reset_requests ORDER BY requested_at, email_lower";
        let rows = with_pool!(self, pool => sqlx::query_scalar(SQL).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Appends `event` for `user` inside a transaction that then rolls back, as a write path
    /// failing after its event would. Returns the position the event had taken (handed out
    /// again afterwards: the rollback undid the sequence too).
    pub async fn append_event_and_roll_back(
        &self,
        user: UserId,
        event: crate::domain::UserEvent,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        use super::events::AppendEvents;
        let position = with_pool!(self, pool => {
            let mut tx = sqlx::Connection::begin(&mut *pool).await?;
            tx.append_events(&[(user, event)], now).await?;
            let position: i64 = sqlx::query_scalar(super::sequence::LATEST).fetch_one(&mut *tx).await?;
            tx.rollback().await?;
            Ok::<_, sqlx::Error>(position)
        })?;
        Ok(u64::try_from(position).unwrap_or(0))
    }

    /// The kinds of `user`'s events still stored, in stream order.
    pub async fn event_kinds_of(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT kind FROM user_events WHERE user_id = $1 ORDER BY seq";
        let kinds = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(user.into_uuid())
            .fetch_all(pool)
            .await)?;
        Ok(kinds)
    }
}
