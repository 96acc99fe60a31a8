//! Operator actions on one account (deactivate, activate, end every session), each one
//! transaction and one audit event. The operator CLI runs them today; admin RPCs can call the
//! same code. They need only the store and the clock, not signing keys or the hashing pool, so
//! [`AccountAdmin`] stands on its own and [`Identity::admin`](super::Identity::admin) hands one
//! out over the service's own parts.

use std::sync::Arc;

use super::record_revocation;
use crate::{
    clock::Clock,
    domain::{Email, UserId},
    error::AppError,
    store::{Store, UserUpdate},
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
        tracing::info!(target: "audit", event = action.event(), %user_id, sessions_revoked);
        Ok(Some(AccountActionOutcome { user_id, sessions_revoked }))
    }
}
