//! The `users` table: accounts, their password hashes and their active flag. Every change is
//! recorded as a user event in its own transaction. Writes that also end sessions (a password
//! change, a deactivation) do both in one transaction, revoking through the sessions family's
//! in-transaction revocation. Each account also keeps the
//! confusable key of its address (unique: no two accounts with look-alike addresses) and whether
//! its hash is of the normalized password; [`Store::backfill_email_keys`] brings rows written
//! before either existed up to date.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Store, StoreError,
    events::AppendEvents,
    sessions::{Revocation, RevokeInTransaction, Target},
    with_pool,
};
use crate::domain::{
    Actor, Email, FullName, NormalizedEmail, PasswordHash, RevocationReason, Role, SessionId, User,
    UserEvent, UserId,
};

/// Rows read per round trip by [`Store::backfill_email_keys`].
const BACKFILL_BATCH: i64 = 500;

/// A user with the hash of their password: what the login and password-change paths read.
/// It stays in the service; callers get the [`User`] alone.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: PasswordHash,
}

/// A `users` row as selected by [`USER_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: Uuid,
    email: String,
    full_name: String,
    password_hash: String,
    password_normalized: bool,
    password_scheme: String,
    is_active: bool,
    created_at: DateTime<Utc>,
    email_verified: bool,
    email_verified_at: Option<DateTime<Utc>>,
    /// Comma-separated, unordered; NULL when none.
    roles: Option<String>,
    external_id: Option<String>,
}

impl From<UserRow> for UserRecord {
    fn from(row: UserRow) -> Self {
        Self {
            user: User {
                id: UserId::from_uuid(row.id),
                email: row.email,
                full_name: row.full_name,
                is_active: row.is_active,
                created_at: row.created_at,
                // Both columns are written together; the flag is what a query filters on.
                email_verified_at: row.email_verified_at.filter(|_| row.email_verified),
                roles: Role::from_stored_list(row.roles.as_deref()),
                external_id: row.external_id,
            },
            password_hash: PasswordHash::from_stored(
                row.password_hash,
                row.password_normalized,
                &row.password_scheme,
            ),
        }
    }
}

/// The `users` columns [`UserRow`] reads (all but `roles`).
macro_rules! own_user_columns {
    () => {
        "id, email, full_name, password_hash, password_normalized, password_scheme, is_active, created_at, \
         email_verified, email_verified_at, external_id"
    };
}

/// The columns [`UserRow`] reads, in one place for every query that returns users (from
/// `users` unaliased), roles included (`string_agg` is Postgres's and SQLite's since 3.44).
macro_rules! user_columns {
    () => {
        concat!(
            $crate::store::users::own_user_columns!(),
            ", (SELECT string_agg(role, ',') FROM user_roles WHERE user_roles.user_id = users.id) AS roles"
        )
    };
}
pub(super) use {own_user_columns, user_columns};

/// Inserting a user, with its `user_created` event, inside a caller's transaction (on its own,
/// or with its verification link).
pub(super) trait InsertUser {
    async fn insert_user(&mut self, user: &NewUser<'_>) -> Result<UserRow, sqlx::Error>;
}

macro_rules! insert_user {
    ($connection:ty) => {
        impl InsertUser for $connection {
            async fn insert_user(&mut self, user: &NewUser<'_>) -> Result<UserRow, sqlx::Error> {
                const SQL: &str = concat!(
                    "INSERT INTO users (id, email, email_lower, email_skeleton, full_name,
                         password_hash, password_normalized, is_active, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $8)
                     RETURNING ",
                    own_user_columns!(),
                    // A new account holds no roles.
                    ", CAST(NULL AS TEXT) AS roles"
                );
                let normalized = user.email.normalized();
                let row = sqlx::query_as::<_, UserRow>(SQL)
                    .bind(user.id.into_uuid())
                    .bind(user.email.as_str())
                    .bind(normalized.as_str())
                    .bind(normalized.confusable_key().as_str())
                    .bind(user.full_name.as_str())
                    .bind(user.password_hash.expose())
                    .bind(user.password_hash.is_of_normalized_text())
                    .bind(user.now)
                    .fetch_one(&mut *self)
                    .await?;
                let created = UserEvent::UserCreated {
                    email: user.email.as_str().to_owned(),
                    full_name: user.full_name.as_str().to_owned(),
                };
                self.append_events(&[(user.id, created)], user.now).await?;
                Ok(row)
            }
        }
    };
}
insert_user!(sqlx::PgConnection);
insert_user!(sqlx::SqliteConnection);

pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a Email,
    pub full_name: &'a FullName,
    pub password_hash: &'a PasswordHash,
    pub now: DateTime<Utc>,
}

/// An operator's change to one account, applied in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserUpdate {
    /// Set the active flag, or leave it.
    pub active: Option<bool>,
    /// End every live session of the user.
    pub revoke_sessions: bool,
}

/// How a password change went.
#[derive(Debug)]
pub enum PasswordChange {
    /// Set; the other sessions were revoked (if there were any).
    Changed(Option<Revocation>),
    /// The stored hash was no longer the one checked: a concurrent change won.
    Conflict,
}

impl Store {
    /// Inserts a user; `StoreError::UniqueViolation` when the normalized email, or an address
    /// that looks like it (its confusable key), is taken.
    pub async fn insert_user(&self, user: &NewUser<'_>) -> Result<User, StoreError> {
        let row = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = tx.insert_user(user).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        })?;
        Ok(UserRecord::from(row).user)
    }

    pub async fn find_user_by_email(
        &self,
        email: &NormalizedEmail,
    ) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", user_columns!(), " FROM users WHERE email_lower = $1 AND deleted_at IS NULL");
        let row = with_pool!(self, pool => sqlx::query_as::<_, UserRow>(SQL)
            .bind(email.as_str())
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(UserRecord::from))
    }

    pub async fn find_user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1 AND deleted_at IS NULL");
        let row = with_pool!(self, pool => sqlx::query_as::<_, UserRow>(SQL)
            .bind(id.into_uuid())
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(UserRecord::from))
    }

    /// Applies an operator's `update` to the account with this email in one transaction, its
    /// events naming the operator (`cli`); `None` when there is no such account. The first statement writes (even when only sessions are revoked), so
    /// SQLite takes its write lock up front and waits in its busy handler rather than failing a
    /// read-to-write upgrade.
    pub async fn update_user(
        &self,
        email: &NormalizedEmail,
        update: UserUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, Option<Revocation>)>, StoreError> {
        const SQL: &str = "UPDATE users SET is_active = COALESCE($1, is_active),
                 updated_at = CASE WHEN $1 IS NULL THEN updated_at ELSE $2 END
             WHERE email_lower = $3 RETURNING id";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: Option<Uuid> = sqlx::query_scalar(SQL)
                .bind(update.active)
                .bind(now)
                .bind(email.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(id) = id.map(UserId::from_uuid) else { return Ok(None) };
            let (event, reason) = match update.active {
                Some(true) => (Some(UserEvent::UserActivated), RevocationReason::Operator),
                Some(false) => (Some(UserEvent::UserDeactivated), RevocationReason::AccountDeactivated),
                None => (None, RevocationReason::Operator),
            };
            let operator = Actor::operator();
            let revocation = if update.revoke_sessions {
                tx.revoke_by(Target::User { user_id: id, except: None }, reason, Some(&operator), now).await?
            } else {
                None
            };
            let events: Vec<_> = event.map(|event| (id, event)).into_iter().collect();
            tx.append_events_by(&events, Some(&operator), now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((id, revocation)))
        })?;
        Ok(outcome)
    }

    /// Sets a new password hash (only if the stored one is still `expected`, so a concurrent
    /// change is not overwritten) and revokes every session of the user except `keep`, in one
    /// transaction.
    pub async fn change_password(
        &self,
        user_id: UserId,
        expected: &PasswordHash,
        new: &PasswordHash,
        keep: Option<SessionId>,
        now: DateTime<Utc>,
    ) -> Result<PasswordChange, StoreError> {
        const UPDATE: &str = "UPDATE users SET password_hash = $1, password_normalized = $5,
                 password_scheme = $6, updated_at = $2
             WHERE id = $3 AND password_hash = $4";
        let change = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(UPDATE)
                .bind(new.expose())
                .bind(now)
                .bind(user_id.into_uuid())
                .bind(expected.expose())
                .bind(new.is_of_normalized_text())
                .bind(new.scheme_name())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Ok(PasswordChange::Conflict);
            }
            tx.append_events(&[(user_id, UserEvent::PasswordChanged)], now).await?;
            let revocation = tx.revoke(Target::User { user_id, except: keep }, RevocationReason::PasswordChanged, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(PasswordChange::Changed(revocation))
        })?;
        Ok(change)
    }

    /// Replaces a password hash with a stronger one of the same password (a higher cost, of the
    /// normalized text, or bcrypt in place of an imported scheme), unless it changed.
    pub async fn upgrade_password_hash(
        &self,
        user_id: UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE users SET password_hash = $1, password_normalized = $4, password_scheme = $5
             WHERE id = $2 AND password_hash = $3";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(new.expose())
            .bind(user_id.into_uuid())
            .bind(old.expose())
            .bind(new.is_of_normalized_text())
            .bind(new.scheme_name())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    /// Gives accounts written before emails were normalized (or by a replica still running older
    /// code) their normalized email and confusable key: the rows whose key is NULL, oldest
    /// first, so that when two old accounts collide under the new rules the older one keeps its
    /// address. The newer one keeps its old `email_lower` (the address as lower-cased before)
    /// and a NULL key, is logged with both ids for an operator to resolve, and is tried again
    /// at the next start. SQL cannot compute NFKC or TS #39 skeletons on both backends, hence
    /// Rust, at startup right after the migrations; idempotent, so replicas starting together
    /// are safe. Returns the rows updated.
    pub async fn backfill_email_keys(&self) -> Result<u64, StoreError> {
        const PENDING: &str = "SELECT id, email, created_at FROM users
             WHERE email_skeleton IS NULL AND deleted_at IS NULL AND (created_at > $1 OR (created_at = $1 AND id > $2))
             ORDER BY created_at, id LIMIT $3";
        const BOTH: &str = "UPDATE users SET email_lower = $1, email_skeleton = $2 WHERE id = $3";
        const LOWER_ONLY: &str = "UPDATE users SET email_lower = $1 WHERE id = $2";
        let mut after = (DateTime::<Utc>::UNIX_EPOCH, Uuid::nil());
        let mut updated = 0;
        loop {
            let batch: Vec<(Uuid, String, DateTime<Utc>)> = with_pool!(self, pool => sqlx::query_as(PENDING)
                .bind(after.0)
                .bind(after.1)
                .bind(BACKFILL_BATCH)
                .fetch_all(pool)
                .await)?;
            let Some(last) = batch.last() else { return Ok(updated) };
            after = (last.2, last.0);
            for (id, email, _) in batch {
                let Ok(email) = Email::parse("email", &email) else {
                    tracing::warn!(user_id = %id, "an account's stored email no longer parses: left as it is");
                    continue;
                };
                let normalized = email.normalized();
                let key = normalized.confusable_key();
                let both = with_pool!(self, pool => sqlx::query(BOTH)
                    .bind(normalized.as_str())
                    .bind(key.as_str())
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(drop));
                match both.map_err(StoreError::from) {
                    Ok(()) => updated += 1,
                    Err(StoreError::UniqueViolation) => {
                        let lower_only = with_pool!(self, pool => sqlx::query(LOWER_ONLY)
                            .bind(normalized.as_str())
                            .bind(id)
                            .execute(pool)
                            .await
                            .map(drop));
                        let kept = match lower_only.map_err(StoreError::from) {
                            Ok(()) => "its normalized email, but not its confusable key",
                            Err(StoreError::UniqueViolation) => {
                                "neither its normalized email nor its confusable key"
                            }
                            Err(error) => return Err(error),
                        };
                        let other = self.account_holding(&normalized, key.as_str(), id).await?;
                        tracing::warn!(user_id = %id, conflicts_with = ?other, kept,
                            "an older account has the same or a look-alike email under the normalization \
                             rules; deactivate one of the two (`identity user deactivate`)");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }

    /// The id of another account whose normalized email or confusable key is these, for the
    /// backfill's report.
    async fn account_holding(
        &self,
        normalized: &NormalizedEmail,
        key: &str,
        except: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        const SQL: &str =
            "SELECT id FROM users WHERE (email_lower = $1 OR email_skeleton = $2) AND id <> $3 LIMIT 1";
        let id = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(normalized.as_str())
            .bind(key)
            .bind(except)
            .fetch_optional(pool)
            .await)?;
        Ok(id)
    }
}
