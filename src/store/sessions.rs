//! Session rows: creation, refresh-token rotation with reuse detection, revocation, purge.
//! Every revocation also tells the other replicas (Postgres NOTIFY, in the same transaction).

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

use super::{NewSession, Store, StoreError, UserRecord, with_pool};
use crate::tokens::RefreshTokenDigest;

/// The Postgres channel revocations are announced on; the payload is comma-separated session ids.
pub const REVOCATION_CHANNEL: &str = "identity_session_revoked";
/// Session ids per NOTIFY payload, well under Postgres's 8000-byte limit.
const IDS_PER_NOTIFICATION: usize = 200;

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// The token was current: it is now retired and the session carries the new digest.
    Rotated { session_id: Uuid, expires_at: DateTime<Utc>, user: UserRecord },
    /// The token had already been rotated away: someone replayed it, and the session is now
    /// revoked (RFC 9700 §4.14.2).
    Reused { session_id: Uuid, newly_revoked: bool },
    /// Unknown, expired or already revoked.
    Refused,
}

#[derive(sqlx::FromRow)]
struct RotatedRow {
    id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct RevokedSession {
    pub id: Uuid,
    pub revoked_at: DateTime<Utc>,
}

/// How revocations reach other processes: a NOTIFY on Postgres, nothing on SQLite (one process).
trait AnnounceRevocations {
    async fn announce(&mut self, session_ids: &[Uuid]) -> Result<(), sqlx::Error>;
}

impl AnnounceRevocations for PgConnection {
    async fn announce(&mut self, session_ids: &[Uuid]) -> Result<(), sqlx::Error> {
        for chunk in session_ids.chunks(IDS_PER_NOTIFICATION) {
            let payload = chunk.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(REVOCATION_CHANNEL)
                .bind(payload)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

impl AnnounceRevocations for SqliteConnection {
    async fn announce(&mut self, _session_ids: &[Uuid]) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl Store {
    pub async fn insert_session(&self, session: &NewSession<'_>) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO sessions (id, user_id, refresh_token_digest, created_at, expires_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $4)";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(session.id)
            .bind(session.user_id)
            .bind(&session.refresh_token_digest.0[..])
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Swaps `old` for `new` in one conditional write, so of two racing calls exactly one
    /// matches; the loser (and any later replay) finds `old` retired and revokes the session.
    /// The session's expiry does not move: its lifetime is absolute.
    pub async fn rotate_refresh_token(
        &self,
        old: &RefreshTokenDigest,
        new: &RefreshTokenDigest,
        now: DateTime<Utc>,
    ) -> Result<Rotation, StoreError> {
        const ROTATE: &str = "UPDATE sessions SET refresh_token_digest = $1, last_used_at = $2
             WHERE refresh_token_digest = $3 AND revoked_at IS NULL AND expires_at > $2
             RETURNING id, user_id, expires_at";
        const RETIRE: &str =
            "INSERT INTO retired_refresh_tokens (token_digest, session_id, retired_at) VALUES ($1, $2, $3)";
        const USER: &str = concat!("SELECT ", super::user_columns!(), " FROM users WHERE id = $1");
        const RETIRED: &str = "SELECT session_id FROM retired_refresh_tokens WHERE token_digest = $1";
        const REVOKE: &str =
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let rotated: Option<RotatedRow> = sqlx::query_as(ROTATE)
                .bind(&new.0[..])
                .bind(now)
                .bind(&old.0[..])
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match rotated {
                Some(row) => {
                    sqlx::query(RETIRE).bind(&old.0[..]).bind(row.id).bind(now).execute(&mut *tx).await?;
                    let user: UserRecord = sqlx::query_as(USER).bind(row.user_id).fetch_one(&mut *tx).await?;
                    Rotation::Rotated { session_id: row.id, expires_at: row.expires_at, user }
                }
                None => {
                    let retired: Option<Uuid> = sqlx::query_scalar(RETIRED).bind(&old.0[..]).fetch_optional(&mut *tx).await?;
                    match retired {
                        Some(session_id) => {
                            let revoked: Option<Uuid> =
                                sqlx::query_scalar(REVOKE).bind(now).bind(session_id).fetch_optional(&mut *tx).await?;
                            if revoked.is_some() {
                                tx.announce(&[session_id]).await?;
                            }
                            Rotation::Reused { session_id, newly_revoked: revoked.is_some() }
                        }
                        None => Rotation::Refused,
                    }
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(outcome)
        })?;
        Ok(outcome)
    }

    /// Revokes the session a refresh token (current or already rotated) belongs to. Returns
    /// the session id when this call revoked it; `None` when it was unknown or already revoked.
    pub async fn revoke_session_by_refresh_token(
        &self,
        digest: &RefreshTokenDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<Uuid>, StoreError> {
        const SQL: &str = "UPDATE sessions SET revoked_at = $1
             WHERE revoked_at IS NULL AND (refresh_token_digest = $2
                OR id = (SELECT session_id FROM retired_refresh_tokens WHERE token_digest = $2))
             RETURNING id";
        let revoked = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revoked: Option<Uuid> = sqlx::query_scalar(SQL).bind(now).bind(&digest.0[..]).fetch_optional(&mut *tx).await?;
            if let Some(id) = revoked {
                tx.announce(&[id]).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(revoked)
        })?;
        Ok(revoked)
    }

    /// Revokes one session by id (reuse of its refresh token, a deactivated owner).
    pub async fn revoke_session(&self, session_id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING id";
        let revoked = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revoked: Option<Uuid> = sqlx::query_scalar(SQL).bind(now).bind(session_id).fetch_optional(&mut *tx).await?;
            if revoked.is_some() {
                tx.announce(&[session_id]).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(revoked.is_some())
        })?;
        Ok(revoked)
    }

    /// Sets a new password hash (only if the stored one is still `expected_hash`, so a
    /// concurrent change is not overwritten) and revokes every session of the user except
    /// `keep`, in one transaction. Returns the revoked session ids, or `None` when the hash had
    /// changed meanwhile.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        expected_hash: &str,
        new_hash: &str,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Uuid>>, StoreError> {
        const UPDATE: &str =
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4";
        const REVOKE: &str = "UPDATE sessions SET revoked_at = $1
             WHERE user_id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3) RETURNING id";
        let revoked = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(UPDATE)
                .bind(new_hash)
                .bind(now)
                .bind(user_id)
                .bind(expected_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Ok(None);
            }
            let revoked: Vec<Uuid> = sqlx::query_scalar(REVOKE).bind(now).bind(user_id).bind(keep).fetch_all(&mut *tx).await?;
            tx.announce(&revoked).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(revoked))
        })?;
        Ok(revoked)
    }

    /// Replaces a password hash with a stronger one of the same password, unless it changed.
    pub async fn upgrade_password_hash(
        &self,
        user_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(new_hash)
            .bind(user_id)
            .bind(old_hash)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    /// Revokes every live session of a user (operator action, deactivation).
    pub async fn revoke_sessions_of_user(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        const SQL: &str =
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL RETURNING id";
        let revoked = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revoked: Vec<Uuid> = sqlx::query_scalar(SQL).bind(now).bind(user_id).fetch_all(&mut *tx).await?;
            tx.announce(&revoked).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(revoked)
        })?;
        Ok(revoked)
    }

    /// Sessions revoked after `since`: what a replica loads at start and after losing its
    /// notification connection.
    pub async fn sessions_revoked_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<RevokedSession>, StoreError> {
        const SQL: &str =
            "SELECT id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at > $1";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, RevokedSession>(SQL).bind(since).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Deletes sessions that expired or were revoked before `before` (their retired refresh
    /// tokens go with them). Returns how many.
    pub async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1";
        let deleted = with_pool!(self, pool => sqlx::query(SQL)
            .bind(before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(deleted)
    }
}
