//! The admin side of the `users` family: changing an account's fields, password and roles, and
//! erasing it. Each write is one transaction that first writes the user's row (locking it, and
//! taking SQLite's write lock up front), so concurrent writers to one account queue behind each
//! other and none works from a stale read. Then, in this order: revoke sessions (the commit
//! sequence's lock is taken here, after the row lock: see [`super::sequence`]), change the rows,
//! append the user events naming the [`Actor`] (the admin caller, the operator, or none for the
//! owner).

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Store, StoreError,
    events::AppendEvents,
    sessions::{Revocation, RevokeInTransaction, Target},
    users::{UserRecord, UserRow, user_columns},
    with_pool,
};
use crate::domain::{
    Actor, Email, FullName, NormalizedEmail, PasswordHash, RevocationReason, Role, User, UserEvent, UserId,
};

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
    /// Sets the fields in `changes` on the account `id`, in one transaction with their events
    /// (`user_updated` naming the fields whose value changed, `user_activated` or
    /// `user_deactivated`); a new address is unverified; deactivating also ends every session.
    /// `None` when there is no such account; `UniqueViolation` when the new email is taken.
    pub async fn update_user_fields(
        &self,
        id: UserId,
        changes: UserChanges<'_>,
        actor: &Actor,
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
             WHERE id = $7";
        let normalized = changes.email.map(Email::normalized);
        let key = normalized.as_ref().map(NormalizedEmail::confusable_key);
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if lock_user!(tx, UserKey::Id(id), now)?.is_none() {
                return Ok(None);
            }
            let before: UserRow = sqlx::query_as(USER_BY_ID).bind(id.into_uuid()).fetch_one(&mut *tx).await?;
            let events = field_events(&UserRecord::from(before).user, changes);
            sqlx::query(SQL)
                .bind(changes.full_name.map(FullName::as_str))
                .bind(changes.email.map(Email::as_str))
                .bind(normalized.as_ref().map(NormalizedEmail::as_str))
                .bind(key.as_ref().map(|key| key.as_str()))
                .bind(changes.active)
                .bind(now)
                .bind(id.into_uuid())
                .execute(&mut *tx)
                .await?;
            let user: UserRow = sqlx::query_as(USER_BY_ID).bind(id.into_uuid()).fetch_one(&mut *tx).await?;
            // The commit sequence last, and nothing but the commit after it: every other writer
            // waits for its lock (see `sequence`).
            let revocation = if changes.active == Some(false) {
                let target = Target::User { user_id: id, except: None };
                tx.revoke_by(target, RevocationReason::AccountDeactivated, Some(actor), now).await?
            } else {
                None
            };
            let events: Vec<_> = events.into_iter().map(|event| (id, event)).collect();
            tx.append_events_by(&events, Some(actor), now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((UserRecord::from(user).user, revocation)))
        })?;
        Ok(outcome)
    }

    /// Sets the password hash of the account `id` and ends every session, in one transaction
    /// with its `password_changed` event; `None` when there is no such account.
    pub async fn set_password(
        &self,
        id: UserId,
        hash: &PasswordHash,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<Revocation>>, StoreError> {
        const SQL: &str = "UPDATE users SET password_hash = $1, password_normalized = $2,
                 password_scheme = $3, updated_at = $4
             WHERE id = $5";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if lock_user!(tx, UserKey::Id(id), now)?.is_none() {
                return Ok(None);
            }
            let target = Target::User { user_id: id, except: None };
            let revocation = tx.revoke_by(target, RevocationReason::Admin, Some(actor), now).await?;
            sqlx::query(SQL)
                .bind(hash.expose())
                .bind(hash.is_of_normalized_text())
                .bind(hash.scheme_name())
                .bind(now)
                .bind(id.into_uuid())
                .execute(&mut *tx)
                .await?;
            tx.append_events_by(&[(id, UserEvent::PasswordChanged)], Some(actor), now).await?;
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
    /// `throttle_subject` is the account's key in the ChangePassword throttle; `actor` made the
    /// deletion (`None`: the owner), and its `user_deleted` event is the last of the account's.
    /// `None` when there is no such account.
    pub async fn erase_user(
        &self,
        id: UserId,
        throttle_subject: &str,
        actor: Option<&Actor>,
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
            let target = Target::User { user_id: id, except: None };
            let revocation = tx.revoke_by(target, RevocationReason::AccountDeleted, actor, now).await?;
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
            tx.append_events_by(&[(id, UserEvent::UserDeleted)], actor, now).await?;
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

    /// Applies `change` to the roles of the account `key` names, in one transaction with a
    /// `roles_changed` event (the whole new set) when the set changed; if a role was removed,
    /// first ends every session of the user (reason `roles_changed`), so that no token names a
    /// role the user no longer holds. `None` when there is no such account.
    pub async fn change_roles(
        &self,
        key: UserKey<'_>,
        change: &RoleChange,
        actor: &Actor,
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
            let user_id = UserId::from_uuid(uuid);
            for role in &added_sorted {
                sqlx::query(ADD).bind(uuid).bind(role.as_str()).bind(now).execute(&mut *tx).await?;
            }
            for role in &removed {
                sqlx::query(REMOVE).bind(uuid).bind(role.as_str()).execute(&mut *tx).await?;
            }
            let user: UserRow = sqlx::query_as(USER_BY_ID).bind(uuid).fetch_one(&mut *tx).await?;
            // The commit sequence last, and nothing but the commit after it: every other writer
            // waits for its lock (see `sequence`).
            let revocation = if removed.is_empty() {
                None
            } else {
                let target = Target::User { user_id, except: None };
                tx.revoke_by(target, RevocationReason::RolesChanged, Some(actor), now).await?
            };
            if !(added_sorted.is_empty() && removed.is_empty()) {
                let mut roles: Vec<String> =
                    held.iter().filter(|r| !removed.contains(r)).chain(&added_sorted).map(|r| r.as_str().to_owned()).collect();
                roles.sort();
                let event = UserEvent::RolesChanged { roles };
                tx.append_events_by(&[(user_id, event)], Some(actor), now).await?;
            }
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

/// The events an update of `before` with `changes` makes: `user_updated` with the fields whose
/// value differs, and `user_activated` or `user_deactivated` when that changes. None for an
/// update that changes nothing.
fn field_events(before: &User, changes: UserChanges<'_>) -> Vec<UserEvent> {
    let full_name =
        changes.full_name.map(FullName::as_str).filter(|name| *name != before.full_name).map(str::to_owned);
    let email = changes.email.map(Email::as_str).filter(|email| *email != before.email).map(str::to_owned);
    let mut events = Vec::new();
    if full_name.is_some() || email.is_some() {
        events.push(UserEvent::UserUpdated { email, full_name });
    }
    match changes.active {
        Some(true) if !before.is_active => events.push(UserEvent::UserActivated),
        Some(false) if before.is_active => events.push(UserEvent::UserDeactivated),
        _ => {}
    }
    events
}
