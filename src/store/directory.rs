//! The admin side of the `users` family: listing users by keyset pages, changing an account's
//! fields, password and roles, and erasing it. Each write is one transaction that first writes
//! the user's row (locking it, and taking SQLite's write lock up front), so concurrent writers
//! to one account queue behind each other and none works from a stale read.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Store, StoreError,
    sessions::{Revocation, RevokeInTransaction, Target},
    users::{UserRecord, UserRow, user_columns},
    with_pool,
};
use crate::domain::{
    Email, EmailPrefix, FullName, NormalizedEmail, PasswordHash, RevocationReason, Role, User, UserId,
};

/// Which users a listing returns; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub email_prefix: Option<EmailPrefix>,
    pub active: Option<bool>,
    pub role: Option<Role>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
}

/// Where a page ends: the last user's creation time and id, in listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    pub created_at: DateTime<Utc>,
    pub id: UserId,
}

/// How to find the account a write is for.
#[derive(Debug, Clone, Copy)]
pub enum UserKey<'a> {
    Id(UserId),
    Email(&'a NormalizedEmail),
}

/// The fields an admin update sets; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserChanges<'a> {
    pub full_name: Option<&'a FullName>,
    pub email: Option<&'a Email>,
    pub active: Option<bool>,
}

/// A change to a user's roles.
#[derive(Debug, Clone)]
pub enum RoleChange {
    /// Exactly these (sorted, distinct).
    Set(Vec<Role>),
    Grant(Role),
    Revoke(Role),
}

/// What a role change did.
#[derive(Debug, Clone)]
pub struct RolesChanged {
    pub user: User,
    pub added: Vec<Role>,
    pub removed: Vec<Role>,
    /// The user's sessions, ended because a role was removed.
    pub revocation: Option<Revocation>,
}

/// A user's row, rewritten to hold nothing personal: see [`Store::erase_user`].
fn tombstone(id: Uuid) -> String {
    format!("deleted:{id}")
}

const LOCK_BY_ID: &str =
    "UPDATE users SET updated_at = $1 WHERE id = $2 AND deleted_at IS NULL RETURNING id, email_lower";
const LOCK_BY_EMAIL: &str = "UPDATE users SET updated_at = $1 WHERE email_lower = $2 AND deleted_at IS NULL RETURNING id, email_lower";
const USER_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");

/// Locks the account `key` names (see the module comment): its id and normalized email, or
/// `None` when there is no such account. One body per connection type.
macro_rules! lock_user {
    ($tx:expr, $key:expr, $now:expr) => {{
        let (sql, uuid, email) = match $key {
            UserKey::Id(id) => (LOCK_BY_ID, Some(id.into_uuid()), None),
            UserKey::Email(email) => (LOCK_BY_EMAIL, None, Some(email.as_str())),
        };
        let query = sqlx::query_as::<_, (Uuid, String)>(sql).bind($now);
        let query = match (uuid, email) {
            (Some(uuid), _) => query.bind(uuid),
            (None, email) => query.bind(email),
        };
        query.fetch_optional(&mut *$tx).await
    }};
}

impl Store {
    /// Up to `limit` users matching `filter` after `after`, in (created_at, id) order. The SQL
    /// names only the filters given, so the planner picks the index that serves them.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserCursor>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        let sql = list_sql(filter, after.is_some(), self.backend() == "postgres");
        let upper = filter.email_prefix.as_ref().and_then(EmailPrefix::upper_bound);
        let rows = with_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, UserRow>(&sql);
            if let Some(prefix) = &filter.email_prefix {
                query = query.bind(prefix.as_str());
                if let Some(upper) = &upper {
                    query = query.bind(upper.as_str());
                }
            }
            if let Some(active) = filter.active {
                query = query.bind(active);
            }
            if let Some(role) = &filter.role {
                query = query.bind(role.as_str());
            }
            if let Some(from) = filter.created_from {
                query = query.bind(from);
            }
            if let Some(before) = filter.created_before {
                query = query.bind(before);
            }
            if let Some(after) = after {
                query = query.bind(after.created_at).bind(after.id.into_uuid());
            }
            query.bind(i64::from(limit)).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(|row| UserRecord::from(row).user).collect())
    }

    /// Sets the fields in `changes` on the account `id`, in one statement (so concurrent
    /// updates of different fields both stand); a new address is unverified; deactivating also
    /// ends every session. `None`
    /// when there is no such account; `UniqueViolation` when the new email is taken.
    pub async fn update_user_fields(
        &self,
        id: UserId,
        changes: UserChanges<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<(User, Option<Revocation>)>, StoreError> {
        const SQL: &str = "UPDATE users SET
                 full_name = COALESCE($1, full_name),
                 email = COALESCE($2, email),
                 email_lower = COALESCE($3, email_lower),
                 email_skeleton = COALESCE($4, email_skeleton),
                 is_active = COALESCE($5, is_active),
                 email_verified = CASE WHEN $3 IS NULL OR $3 = email_lower THEN email_verified ELSE FALSE END,
                 email_verified_at = CASE WHEN $3 IS NULL OR $3 = email_lower THEN email_verified_at ELSE NULL END,
                 updated_at = $6
             WHERE id = $7 AND deleted_at IS NULL RETURNING id";
        let normalized = changes.email.map(Email::normalized);
        let key = normalized.as_ref().map(NormalizedEmail::confusable_key);
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated: Option<Uuid> = sqlx::query_scalar(SQL)
                .bind(changes.full_name.map(FullName::as_str))
                .bind(changes.email.map(Email::as_str))
                .bind(normalized.as_ref().map(NormalizedEmail::as_str))
                .bind(key.as_ref().map(|key| key.as_str()))
                .bind(changes.active)
                .bind(now)
                .bind(id.into_uuid())
                .fetch_optional(&mut *tx)
                .await?;
            if updated.is_none() {
                return Ok(None);
            }
            let revocation = if changes.active == Some(false) {
                tx.revoke(Target::User { user_id: id, except: None }, RevocationReason::AccountDeactivated, now).await?
            } else {
                None
            };
            let user: UserRow = sqlx::query_as(USER_BY_ID).bind(id.into_uuid()).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((UserRecord::from(user).user, revocation)))
        })?;
        Ok(outcome)
    }

    /// Sets the password hash of the account `id` and ends every session, in one transaction;
    /// `None` when there is no such account.
    pub async fn set_password(
        &self,
        id: UserId,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<Revocation>>, StoreError> {
        const SQL: &str = "UPDATE users SET password_hash = $1, password_normalized = $2, updated_at = $3
             WHERE id = $4 AND deleted_at IS NULL RETURNING id";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated: Option<Uuid> = sqlx::query_scalar(SQL)
                .bind(hash.expose())
                .bind(hash.is_of_normalized_text())
                .bind(now)
                .bind(id.into_uuid())
                .fetch_optional(&mut *tx)
                .await?;
            if updated.is_none() {
                return Ok(None);
            }
            let revocation = tx.revoke(Target::User { user_id: id, except: None }, RevocationReason::Admin, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(revocation))
        })?;
        Ok(outcome)
    }

    /// Erases the account `id` in one transaction: ends every session (revoked, so every
    /// replica and verifier refuses its tokens at once), deletes its roles, emailed link tokens and
    /// login attempts, and rewrites its row to hold nothing personal (email and name gone, the
    /// email free for a new signup, no password hash). The bare row, marked deleted, keeps the
    /// revoked sessions' cursors readable until [`Store::purge_deleted_users`] removes both.
    /// `throttle_subject` is the account's key in the ChangePassword throttle. `None` when there
    /// is no such account.
    pub async fn erase_user(
        &self,
        id: UserId,
        throttle_subject: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<Revocation>>, StoreError> {
        const ERASE: &str = "UPDATE users SET email = '', full_name = '', password_hash = '',
                 email_lower = $1, email_skeleton = $1, is_active = FALSE, deleted_at = $2, updated_at = $2
             WHERE id = $3";
        const ROLES: &str = "DELETE FROM user_roles WHERE user_id = $1";
        const LINKS: &str = "DELETE FROM email_tokens WHERE user_id = $1";
        const FAILURES: &str = "DELETE FROM login_failures WHERE email_lower = $1";
        const THROTTLE: &str = "DELETE FROM login_throttle WHERE subject = $1 OR subject = $2";
        // The second factor is the person's too: its secret, codes and open challenges go.
        const SECOND_FACTOR: [&str; 3] = [
            "DELETE FROM totp_credentials WHERE user_id = $1",
            "DELETE FROM recovery_codes WHERE user_id = $1",
            "DELETE FROM mfa_challenges WHERE user_id = $1",
        ];
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let Some((uuid, email_lower)) = lock_user!(tx, UserKey::Id(id), now)? else { return Ok(None) };
            let revocation = tx.revoke(Target::User { user_id: id, except: None }, RevocationReason::AccountDeleted, now).await?;
            sqlx::query(ERASE).bind(tombstone(uuid)).bind(now).bind(uuid).execute(&mut *tx).await?;
            sqlx::query(ROLES).bind(uuid).execute(&mut *tx).await?;
            sqlx::query(LINKS).bind(uuid).execute(&mut *tx).await?;
            for sql in SECOND_FACTOR {
                sqlx::query(sql).bind(uuid).execute(&mut *tx).await?;
            }
            sqlx::query(FAILURES).bind(&email_lower).execute(&mut *tx).await?;
            sqlx::query(THROTTLE)
                .bind(&email_lower)
                .bind(throttle_subject)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(revocation))
        })?;
        Ok(outcome)
    }

    /// Deletes the rows of accounts erased before `before`, with their sessions (whose
    /// revocations every replica has read by then). Returns how many.
    pub async fn purge_deleted_users(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM users WHERE id IN
             (SELECT id FROM users WHERE deleted_at < $1 LIMIT $2)";
        self.delete_in_batches(SQL, before).await
    }

    /// Applies `change` to the roles of the account `key` names, in one transaction; if a role
    /// was removed, ends every session of the user, so that no token names a role the user no
    /// longer holds. `None` when there is no such account.
    pub async fn change_roles(
        &self,
        key: UserKey<'_>,
        change: &RoleChange,
        now: DateTime<Utc>,
    ) -> Result<Option<RolesChanged>, StoreError> {
        const HELD: &str = "SELECT role FROM user_roles WHERE user_id = $1";
        const ADD: &str = "INSERT INTO user_roles (user_id, role, granted_at) VALUES ($1, $2, $3)";
        const REMOVE: &str = "DELETE FROM user_roles WHERE user_id = $1 AND role = $2";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let Some((uuid, _)) = lock_user!(tx, key, now)? else { return Ok(None) };
            let held: Vec<String> = sqlx::query_scalar(HELD).bind(uuid).fetch_all(&mut *tx).await?;
            let held = Role::from_stored_list(Some(&held.join(",")));
            let wanted: Vec<Role> = match change {
                RoleChange::Set(roles) => roles.clone(),
                RoleChange::Grant(role) => held.iter().cloned().chain([role.clone()]).collect(),
                RoleChange::Revoke(role) => held.iter().filter(|r| *r != role).cloned().collect(),
            };
            let added: Vec<Role> = wanted.iter().filter(|r| !held.contains(r)).cloned().collect();
            let removed: Vec<Role> = held.iter().filter(|r| !wanted.contains(r)).cloned().collect();
            let mut added_sorted = added.clone();
            added_sorted.sort();
            added_sorted.dedup();
            for role in &added_sorted {
                sqlx::query(ADD).bind(uuid).bind(role.as_str()).bind(now).execute(&mut *tx).await?;
            }
            for role in &removed {
                sqlx::query(REMOVE).bind(uuid).bind(role.as_str()).execute(&mut *tx).await?;
            }
            let user_id = UserId::from_uuid(uuid);
            let revocation = if removed.is_empty() {
                None
            } else {
                tx.revoke(Target::User { user_id, except: None }, RevocationReason::Admin, now).await?
            };
            let user: UserRow = sqlx::query_as(USER_BY_ID).bind(uuid).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(RolesChanged {
                user: UserRecord::from(user).user,
                added: added_sorted,
                removed,
                revocation,
            }))
        })?;
        Ok(outcome)
    }
}

/// The listing statement for the filters present, its placeholders numbered in the order
/// [`Store::list_users`] binds them. Postgres compares the email prefix bytewise (`COLLATE
/// "C"`, as its index does); SQLite always does.
fn list_sql(filter: &UserFilter, paged: bool, postgres: bool) -> String {
    let mut sql = concat!("SELECT ", user_columns!(), " FROM users WHERE deleted_at IS NULL").to_owned();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if let Some(prefix) = &filter.email_prefix {
        let column = if postgres { "email_lower COLLATE \"C\"" } else { "email_lower" };
        sql.push_str(&format!(" AND {column} >= {}", next()));
        if prefix.upper_bound().is_some() {
            sql.push_str(&format!(" AND {column} < {}", next()));
        }
    }
    if filter.active.is_some() {
        sql.push_str(&format!(" AND is_active = {}", next()));
    }
    if filter.role.is_some() {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = users.id AND r.role = {})",
            next()
        ));
    }
    if filter.created_from.is_some() {
        sql.push_str(&format!(" AND created_at >= {}", next()));
    }
    if filter.created_before.is_some() {
        sql.push_str(&format!(" AND created_at < {}", next()));
    }
    if paged {
        let (at, id) = (next(), next());
        sql.push_str(&format!(" AND (created_at, id) > ({at}, {id})"));
    }
    sql.push_str(&format!(" ORDER BY created_at, id LIMIT {}", next()));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_names_only_the_filters_given_in_binding_order() {
        let none = list_sql(&UserFilter::default(), false, true);
        assert!(none.ends_with("WHERE deleted_at IS NULL ORDER BY created_at, id LIMIT $1"), "{none}");
        let all = UserFilter {
            email_prefix: Some(EmailPrefix::parse("email_prefix", "ada").unwrap()),
            active: Some(true),
            role: Some(Role::parse("role", "billing.read").unwrap()),
            created_from: Some(Utc::now()),
            created_before: Some(Utc::now()),
        };
        let sql = list_sql(&all, true, true);
        for part in [
            "email_lower COLLATE \"C\" >= $1",
            "email_lower COLLATE \"C\" < $2",
            "is_active = $3",
            "r.role = $4",
            "created_at >= $5",
            "created_at < $6",
            "(created_at, id) > ($7, $8)",
            "LIMIT $9",
        ] {
            assert!(sql.contains(part), "{part} in {sql}");
        }
        assert!(!list_sql(&all, true, false).contains("COLLATE"));
    }
}
