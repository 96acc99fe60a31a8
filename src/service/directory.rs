//! The admin API's logic (AdminService): find and list users, change an account's fields,
//! password and roles, end its sessions, erase it. Every call has been authorised by the rpc
//! layer (the `admin` permission) and is an audit event naming the caller; every write is one
//! store transaction. Also the user's own sessions and account deletion (UserService), which
//! share the erasure and the session listing.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::DateTime;
use sha2::{Digest, Sha256};

use super::{Identity, throttle::account_subject};
use crate::{
    clients::Requester,
    domain::{
        Actor, Caller, Email, FieldViolation, FullName, InvalidRequest, Password, PresentedPassword,
        RevocationReason, Role, SessionId, SessionInfo, User, UserId,
    },
    error::AppError,
    store::{RoleChange, StoreError, UserChanges, UserCursor, UserFilter, UserKey},
    tokens::VerifiedToken,
};

/// Users per page when the request names no size (AIP-158 leaves the default to the API).
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page; larger requests are coerced to it (AIP-158).
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Sessions listed per user: the most recently used.
pub const MAX_SESSIONS_LISTED: u32 = 1000;

const NO_SUCH_USER: &str = "no user with this id";
const NO_SUCH_SESSION: &str = "no live session with this id";

/// How GetUser finds a user.
#[derive(Debug, Clone)]
pub enum UserLookup {
    Id(UserId),
    Email(Email),
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// An opaque keyset page token: where the last page ended, and a digest of the filters it was
/// made for, so a token cannot be replayed against another listing (AIP-158).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageToken {
    after: UserCursor,
    filters: [u8; 8],
}

impl PageToken {
    const VERSION: u8 = 1;
    const LEN: usize = 1 + 8 + 4 + 16 + 8;

    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(Self::LEN);
        bytes.push(Self::VERSION);
        bytes.extend_from_slice(&self.after.created_at.timestamp().to_be_bytes());
        bytes.extend_from_slice(&self.after.created_at.timestamp_subsec_nanos().to_be_bytes());
        bytes.extend_from_slice(self.after.id.as_uuid().as_bytes());
        bytes.extend_from_slice(&self.filters);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Option<Self> {
        if text.len() > 2 * Self::LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() != Self::LEN || bytes[0] != Self::VERSION {
            return None;
        }
        let seconds = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
        let nanos = u32::from_be_bytes(bytes[9..13].try_into().ok()?);
        let created_at = DateTime::from_timestamp(seconds, nanos)?;
        let id = UserId::from_uuid(uuid::Uuid::from_slice(&bytes[13..29]).ok()?);
        let filters = bytes[29..37].try_into().ok()?;
        Some(Self { after: UserCursor { created_at, id }, filters })
    }
}

/// A digest of the filters: a page token is valid only for the filters it was made for.
fn filters_digest(filter: &UserFilter) -> [u8; 8] {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        filter.email_prefix.as_ref().map(|p| p.as_str()),
        filter.active,
        filter.role.as_ref().map(Role::as_str),
        filter.created_from.map(|t| (t.timestamp(), t.timestamp_subsec_nanos())),
        filter.created_before.map(|t| (t.timestamp(), t.timestamp_subsec_nanos())),
    );
    let digest = Sha256::digest(text.as_bytes());
    let mut short = [0; 8];
    short.copy_from_slice(&digest[..8]);
    short
}

fn audit_caller(caller: &Caller) -> (&str, &'static str) {
    (&caller.name, caller.kind.as_str())
}

impl Identity {
    /// A user by id or email; NOT_FOUND when there is none.
    pub async fn admin_get_user(&self, caller: &Caller, lookup: &UserLookup) -> Result<User, AppError> {
        let record = match lookup {
            UserLookup::Id(id) => self.store.find_user_by_id(*id).await?,
            UserLookup::Email(email) => self.store.find_user_by_email(&email.normalized()).await?,
        };
        let (name, via) = audit_caller(caller);
        let user = record.map(|record| record.user).ok_or(AppError::NotFound("no such user"))?;
        tracing::info!(target: "audit", event = "admin_user_read", caller = name, via, user_id = %user.id);
        Ok(user)
    }

    /// The user `id`, for the rpc layer's checks (the password policy needs the user's email and
    /// name); NOT_FOUND when there is none.
    pub async fn admin_user(&self, id: UserId) -> Result<User, AppError> {
        self.store
            .find_user_by_id(id)
            .await?
            .map(|record| record.user)
            .ok_or(AppError::NotFound(NO_SUCH_USER))
    }

    /// One page of users matching `filter` in creation order. `page_size` 0 is the default, more
    /// than [`MAX_PAGE_SIZE`] is that; `page_token` is empty for the first page, else the
    /// `next_page_token` of the previous page of the same listing (INVALID_ARGUMENT otherwise).
    pub async fn admin_list_users(
        &self,
        caller: &Caller,
        filter: &UserFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<UserPage, AppError> {
        let filters = filters_digest(filter);
        let after = match page_token {
            "" => None,
            token => match PageToken::decode(token) {
                Some(token) if token.filters == filters => Some(token.after),
                _ => {
                    return Err(InvalidRequest(vec![FieldViolation::new(
                        "page_token",
                        "is not a page token of this listing: pass the next_page_token of a previous \
                         response with the same filters, or none for the first page",
                    )])
                    .into());
                }
            },
        };
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let mut users = self.store.list_users(filter, after, size + 1).await?;
        let more = users.len() > size as usize;
        users.truncate(size as usize);
        let next_page_token = match users.last() {
            Some(last) if more => {
                PageToken { after: UserCursor { created_at: last.created_at, id: last.id }, filters }.encode()
            }
            _ => String::new(),
        };
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_users_listed", caller = name, via, count = users.len());
        Ok(UserPage { users, next_page_token })
    }

    /// Sets the fields in `changes`; deactivating ends every session of the user. NOT_FOUND for
    /// an unknown id, ALREADY_EXISTS when the new email is another account's.
    pub async fn admin_update_user(
        &self,
        caller: &Caller,
        id: UserId,
        full_name: Option<&FullName>,
        email: Option<&Email>,
        active: Option<bool>,
    ) -> Result<User, AppError> {
        let changes = UserChanges { full_name, email, active };
        let actor = Actor::caller(caller);
        let (user, revocation) =
            match self.store.update_user_fields(id, changes, &actor, self.clock.now()).await {
                Ok(Some(updated)) => updated,
                Ok(None) => return Err(AppError::NotFound(NO_SUCH_USER)),
                Err(StoreError::UniqueViolation) => return Err(AppError::EmailTaken),
                Err(error) => return Err(error.into()),
            };
        let sessions_revoked = revocation.as_ref().map_or(0, |r| r.session_ids.len());
        if let Some(revocation) = &revocation {
            self.revoked_here(revocation);
        }
        // A new address is unverified: its owner gets a link (within the hourly allowance).
        if email.is_some()
            && !user.email_verified()
            && user.is_active
            && let Err(error) = self.queue_verification(id).await
        {
            tracing::warn!(user_id = %id, %error, "could not queue a verification message");
        }
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_user_updated", caller = name, via, user_id = %id,
            full_name = full_name.is_some(), email = email.is_some(), active = ?active, sessions_revoked);
        Ok(user)
    }

    /// Sets a new password (already checked against the policy), hashed on the hash pool, and
    /// ends every session of the user.
    pub async fn admin_set_password(
        &self,
        caller: &Caller,
        id: UserId,
        password: &Password,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let hash = self.hasher.hash(password, requester).await?;
        let actor = Actor::caller(caller);
        let Some(revocation) = self.store.set_password(id, &hash, &actor, self.clock.now()).await? else {
            return Err(AppError::NotFound(NO_SUCH_USER));
        };
        let sessions_revoked = revocation.as_ref().map_or(0, |r| r.session_ids.len());
        if let Some(revocation) = &revocation {
            self.revoked_here(revocation);
        }
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_password_set", caller = name, via, user_id = %id, sessions_revoked);
        Ok(())
    }

    /// Erases the user (see [`Identity::erase`]).
    pub async fn admin_delete_user(&self, caller: &Caller, id: UserId) -> Result<(), AppError> {
        let sessions_revoked = self.erase(id, Some(&Actor::caller(caller))).await?;
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_user_deleted", caller = name, via, user_id = %id, sessions_revoked);
        Ok(())
    }

    /// The user's live sessions, most recently used first; NOT_FOUND for an unknown id.
    pub async fn admin_list_user_sessions(
        &self,
        caller: &Caller,
        id: UserId,
    ) -> Result<Vec<SessionInfo>, AppError> {
        self.admin_user(id).await?;
        let sessions = self.store.live_sessions(id, self.clock.now(), MAX_SESSIONS_LISTED).await?;
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_sessions_listed", caller = name, via, user_id = %id);
        Ok(sessions)
    }

    /// Ends one live session of the user; NOT_FOUND when the user has no such live session.
    pub async fn admin_revoke_session(
        &self,
        caller: &Caller,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<(), AppError> {
        self.end_session_of(user_id, session_id, RevocationReason::Admin, Some(&Actor::caller(caller)))
            .await?;
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_session_revoked", caller = name, via, %user_id, %session_id);
        Ok(())
    }

    /// Replaces the user's roles with `roles`; removing any ends the user's sessions.
    pub async fn admin_set_roles(
        &self,
        caller: &Caller,
        id: UserId,
        roles: Vec<Role>,
    ) -> Result<User, AppError> {
        let changed = self
            .admin()
            .change_roles(UserKey::Id(id), &RoleChange::Set(roles), &Actor::caller(caller))
            .await?
            .ok_or(AppError::NotFound(NO_SUCH_USER))?;
        let (name, via) = audit_caller(caller);
        tracing::info!(target: "audit", event = "admin_roles_set", caller = name, via, user_id = %id,
            added = %join(&changed.added), removed = %join(&changed.removed),
            sessions_revoked = changed.sessions_revoked);
        Ok(changed.user)
    }

    /// Erases an account: see [`crate::store::Store::erase_user`]. Its tokens stop validating
    /// here at once and on every other replica and verifier through the revocation feed.
    /// `actor` deleted it (`None`: its owner). Returns how many sessions ended; NOT_FOUND for an
    /// unknown id.
    async fn erase(&self, id: UserId, actor: Option<&Actor>) -> Result<usize, AppError> {
        let Some(revocation) =
            self.store.erase_user(id, &account_subject(id), actor, self.clock.now()).await?
        else {
            return Err(AppError::NotFound(NO_SUCH_USER));
        };
        if let Some(revocation) = &revocation {
            self.revoked_here(revocation);
        }
        Ok(revocation.map_or(0, |r| r.session_ids.len()))
    }

    async fn end_session_of(
        &self,
        user_id: UserId,
        session_id: SessionId,
        reason: RevocationReason,
        actor: Option<&Actor>,
    ) -> Result<(), AppError> {
        let Some(revocation) =
            self.store.revoke_session_of(user_id, session_id, reason, actor, self.clock.now()).await?
        else {
            return Err(AppError::NotFound(NO_SUCH_SESSION));
        };
        self.revoked_here(&revocation);
        Ok(())
    }

    /// The caller's live sessions, most recently used first.
    pub async fn own_sessions(&self, caller: &VerifiedToken) -> Result<Vec<SessionInfo>, AppError> {
        let user = self.current_user(&caller.claims).await?;
        Ok(self.store.live_sessions(user.id, self.clock.now(), MAX_SESSIONS_LISTED).await?)
    }

    /// Ends one of the caller's own sessions; anyone else's is NOT_FOUND, as an unknown one is.
    pub async fn revoke_own_session(
        &self,
        caller: &VerifiedToken,
        session_id: SessionId,
    ) -> Result<(), AppError> {
        let user_id = caller.claims.sub;
        self.end_session_of(user_id, session_id, RevocationReason::User, None).await?;
        tracing::info!(target: "audit", event = "session_revoked", %user_id, %session_id, by = %caller.claims.sid);
        Ok(())
    }

    /// Erases the caller's account once `current` is its password (checked under the
    /// ChangePassword throttle).
    pub async fn delete_account(
        &self,
        caller: &VerifiedToken,
        current: &PresentedPassword,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let record =
            self.check_current_password(caller, current, requester, "account_deletion_failed").await?;
        let user_id = record.user.id;
        let sessions_revoked = self.erase(user_id, None).await?;
        tracing::info!(target: "audit", event = "account_deleted", %user_id, sessions_revoked);
        Ok(())
    }
}

fn join(roles: &[Role]) -> String {
    roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EmailPrefix;

    #[test]
    fn a_page_token_round_trips_and_garbage_does_not_decode() {
        let token = PageToken {
            after: UserCursor {
                created_at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
                id: UserId::new(),
            },
            filters: [7; 8],
        };
        assert_eq!(PageToken::decode(&token.encode()), Some(token));
        for bad in ["", "x", "!!!!", &"A".repeat(100), &URL_SAFE_NO_PAD.encode([2; 37])] {
            assert_eq!(PageToken::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn filters_digest_tells_listings_apart() {
        let none = UserFilter::default();
        let active = UserFilter { active: Some(true), ..UserFilter::default() };
        let prefix =
            UserFilter { email_prefix: Some(EmailPrefix::parse("p", "a").unwrap()), ..UserFilter::default() };
        assert_eq!(filters_digest(&none), filters_digest(&UserFilter::default()));
        assert_ne!(filters_digest(&none), filters_digest(&active));
        assert_ne!(filters_digest(&active), filters_digest(&prefix));
    }
}
