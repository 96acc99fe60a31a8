//! What the integration tests need to see or do behind the service's back, as a small API
//! instead of pools and raw SQL: counting and inspecting rows, a revocation no replica is told
//! about, killing the revocation listeners, creating a fresh Postgres database. Compiled only
//! for tests and the `test-helpers` feature, never into a release build.

use chrono::{DateTime, Utc};

use super::{LISTENER_APPLICATION_NAME, Pool, Store, StoreError, with_pool};
use crate::domain::{SessionId, UserId};

fn misuse(what: &str) -> StoreError {
    StoreError::Internal(sqlx::Error::Configuration(what.to_owned().into()))
}

impl Store {
    /// Creates the empty database `name` on the Postgres server this store is connected to
    /// (tests get a fresh one each). `name` must be a plain identifier.
    pub async fn create_database(&self, name: &str) -> Result<(), StoreError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(misuse("a database name must be a plain identifier"));
        }
        let Pool::Postgres(pool) = &self.pool else {
            return Err(misuse("only a Postgres server can create databases"));
        };
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(pool).await?;
        Ok(())
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
}
