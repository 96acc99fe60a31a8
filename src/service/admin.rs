//! Operator actions on one account (deactivate, activate, end every session, grant or revoke a
//! role), each one transaction and one audit event. The operator CLI runs them today; admin RPCs can call the
//! same code. They need only the store and the clock, not signing keys or the hashing pool, so
//! [`AccountAdmin`] stands on its own and [`Identity::admin`](super::Identity::admin) hands one
//! out over the service's own parts.

use std::sync::Arc;

use super::record_revocation;
use crate::{
    clock::Clock,
    domain::{Actor, Email, Role, User, UserId},
    error::AppError,
    store::{RoleChange, Store, UserKey, UserUpdate},
    tokens::RevocationSet,
};

/// What an operator can do to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// Refuse the user's logins and end every session, together.
    Deactivate,
    /// Let a deactivated user log in again.
    Activate,
    /// End every session (log out everywhere); the account stays active.
    RevokeSessions,
}

impl AccountAction {
    fn update(self) -> UserUpdate {
        match self {
            Self::Deactivate => UserUpdate { active: Some(false), revoke_sessions: true },
            Self::Activate => UserUpdate { active: Some(true), revoke_sessions: false },
            Self::RevokeSessions => UserUpdate { active: None, revoke_sessions: true },
        }
    }

    fn event(self) -> &'static str {
        match self {
            Self::Deactivate => "user_deactivated",
            Self::Activate => "user_activated",
            Self::RevokeSessions => "sessions_revoked",
        }
    }
}

/// What an operator action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountActionOutcome {
    pub user_id: UserId,
    pub sessions_revoked: usize,
}

pub struct AccountAdmin {
    store: Store,
    clock: Clock,
    /// The serving process's revocation set, so its own revocations take effect there at once;
    /// `None` in a process that enforces no tokens (the CLI), whose revocations reach servers
    /// by NOTIFY (Postgres) or their poll of the sessions table (SQLite).
    revocations: Option<Arc<RevocationSet>>,
}

impl AccountAdmin {
    pub fn new(store: Store, clock: Clock, revocations: Option<Arc<RevocationSet>>) -> Self {
        Self { store, clock, revocations }
    }

    /// Applies `action` to the account with `email`, in one transaction; `Ok(None)` when no
    /// account has that email.
    pub async fn apply(
        &self,
        action: AccountAction,
        email: &Email,
    ) -> Result<Option<AccountActionOutcome>, AppError> {
        let now = self.clock.now();
        let Some((user_id, revocation)) =
            self.store.update_user(&email.normalized(), action.update(), now).await?
        else {
            return Ok(None);
        };
        if let (Some(revocations), Some(revocation)) = (&self.revocations, &revocation) {
            record_revocation(revocations, revocation);
        }
        let sessions_revoked = revocation.map_or(0, |revocation| revocation.session_ids.len());
        tracing::info!(target: "audit", event = action.event(), caller = Actor::CLI, %user_id, sessions_revoked);
        Ok(Some(AccountActionOutcome { user_id, sessions_revoked }))
    }

    /// Applies `actor`'s role change to the account `key` names, in one transaction: (added,
    /// removed, sessions revoked, the user). Removing a role ends the user's sessions. `Ok(None)`
    /// when there is no such account.
    pub async fn change_roles(
        &self,
        key: UserKey<'_>,
        change: &RoleChange,
        actor: &Actor,
    ) -> Result<Option<RolesOutcome>, AppError> {
        let Some(changed) = self.store.change_roles(key, change, actor, self.clock.now()).await? else {
            return Ok(None);
        };
        if let (Some(revocations), Some(revocation)) = (&self.revocations, &changed.revocation) {
            record_revocation(revocations, revocation);
        }
        let sessions_revoked = changed.revocation.as_ref().map_or(0, |r| r.session_ids.len());
        Ok(Some(RolesOutcome {
            user: changed.user,
            added: changed.added,
            removed: changed.removed,
            sessions_revoked,
        }))
    }

    /// `identity user grant-role|revoke-role EMAIL ROLE`: one transaction, one audit event.
    pub async fn grant_or_revoke(
        &self,
        email: &Email,
        role: Role,
        grant: bool,
    ) -> Result<Option<RolesOutcome>, AppError> {
        let normalized = email.normalized();
        let change = if grant { RoleChange::Grant(role.clone()) } else { RoleChange::Revoke(role.clone()) };
        let outcome = self.change_roles(UserKey::Email(&normalized), &change, &Actor::operator()).await?;
        if let Some(outcome) = &outcome {
            let event = if grant { "role_granted" } else { "role_revoked" };
            tracing::info!(target: "audit", event, caller = Actor::CLI, user_id = %outcome.user.id, %role,
                changed = !(outcome.added.is_empty() && outcome.removed.is_empty()),
                sessions_revoked = outcome.sessions_revoked);
        }
        Ok(outcome)
    }
}

/// What a role change did.
#[derive(Debug, Clone)]
pub struct RolesOutcome {
    pub user: User,
    pub added: Vec<Role>,
    pub removed: Vec<Role>,
    /// Sessions ended because a role was removed.
    pub sessions_revoked: usize,
}
