//! The identity logic behind the RPCs and the operator CLI: accounts, sessions, token checks,
//! operator actions on accounts and service keys, moving accounts in and out, and who may call the service-facing RPCs. It speaks in domain types and `AppError`, uses `store`,
//! `tokens` and `passwords`, and knows nothing of tonic; the `rpc` layer and `cli` convert to
//! and from their own forms.

mod accounts;
mod admin;
mod background;
mod callers;
mod directory;
mod events;
mod mail;
mod mfa;
mod recovery;
mod sessions;
mod settled;
mod throttle;
mod transfer;
mod verification;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

pub use accounts::SignupInput;
pub use admin::{AccountAction, AccountActionOutcome, AccountAdmin, RolesOutcome};
pub use background::{Purge, RevocationSync};
pub use callers::{CallerPolicy, ServiceKeyAdmin, StreamLimits, StreamPermit};
pub use directory::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_SESSIONS_LISTED, UserLookup, UserPage};
pub use events::{EVENT_PAGE, EventFeed, EventSync};
pub use mail::{FAILED_LIST_LIMIT, MailAdmin};
pub use mfa::{LoginOutcome, MfaChallenge, MfaSettings, TotpEnrollmentStart};
pub use recovery::RecoverySettings;
pub use sessions::SessionTokens;
pub use throttle::{LockoutPolicy, PASSWORD_CHANGE_FAILURES_END_SESSION, THROTTLE_MEMORY};
pub use transfer::{AccountTransfer, EXPORT_PAGE, ExportedUser};

use crate::{
    clients::Requester,
    clock::Clock,
    error::AppError,
    mail::MailQueue,
    passwords::PasswordHasher,
    store::{Revocation, Store},
    tokens::{RevocationSet, TokenIssuer, TokenRejected, VerifiedToken, VerifiedTokenCache},
};

pub struct Identity {
    lockout: LockoutPolicy,
    schedule: crate::store::DelaySchedule,
    /// Wakes logins parked behind checks of the same (email, client) when one ends.
    settled: settled::Settled,
    signup_reveals_accounts: bool,
    store: Store,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
    revocations: Arc<RevocationSet>,
    verified: VerifiedTokenCache,
    clock: Clock,
    refresh_ttl: TimeDelta,
    callers: CallerPolicy,
    streams: StreamLimits,
    /// Wakes this process's outbox worker after a message is queued.
    mail: MailQueue,
    recovery: RecoverySettings,
    /// This replica's view of the user-events stream.
    events: Arc<events::EventFeed>,
    /// How long user events are kept (`IDENTITY_EVENT_RETENTION`).
    event_retention: TimeDelta,
    mfa: MfaSettings,
}

/// What [`Identity`] is built from.
pub struct IdentityParts {
    pub store: Store,
    pub hasher: PasswordHasher,
    pub tokens: TokenIssuer,
    pub revocations: Arc<RevocationSet>,
    pub token_cache_size: usize,
    pub clock: Clock,
    pub refresh_ttl: Duration,
    pub lockout: LockoutPolicy,
    /// `false`: Signup of a taken email answers like a successful signup.
    pub signup_reveals_accounts: bool,
    /// Who may call the service-facing RPCs, and their stream limits.
    pub callers: CallerPolicy,
    pub mail: MailQueue,
    pub recovery: RecoverySettings,
    pub events: Arc<events::EventFeed>,
    pub event_retention: Duration,
    pub mfa: MfaSettings,
}

impl Identity {
    pub fn new(parts: IdentityParts) -> Self {
        Self {
            lockout: parts.lockout,
            schedule: parts.lockout.schedule(),
            settled: settled::Settled::new(),
            signup_reveals_accounts: parts.signup_reveals_accounts,
            store: parts.store,
            hasher: parts.hasher,
            tokens: parts.tokens,
            revocations: parts.revocations,
            verified: VerifiedTokenCache::new(parts.token_cache_size),
            clock: parts.clock,
            refresh_ttl: TimeDelta::from_std(parts.refresh_ttl).unwrap_or(TimeDelta::MAX),
            streams: StreamLimits::new(parts.callers.max_streams_per_caller, parts.callers.max_streams),
            callers: parts.callers,
            mail: parts.mail,
            recovery: parts.recovery,
            events: parts.events,
            event_retention: TimeDelta::from_std(parts.event_retention).unwrap_or(TimeDelta::MAX),
            mfa: parts.mfa,
        }
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// Wakes this process's outbox worker (after a message was queued behind its back).
    pub fn mail_queue(&self) -> &MailQueue {
        &self.mail
    }

    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// Sheds a request that would hash when the hash pool is full, before it costs anything
    /// else: validation (zxcvbn), the lockout counter, database round trips. The refusal is
    /// held for one hash job's time (see `throttle`), so a client resending at once cannot spin.
    pub async fn shed_if_saturated(&self, requester: &Requester) -> Result<(), AppError> {
        if self.hasher.would_shed(requester) {
            metrics::counter!(crate::metrics::HASH_POOL_REJECTED).increment(1);
            self.hold_refusal(requester).await;
            return Err(AppError::Overloaded);
        }
        Ok(())
    }

    pub fn hasher_queue_capacity(&self) -> usize {
        self.hasher.queue_capacity()
    }

    /// The hash pool's queue, and the bcrypt work done so far (see `PasswordHasher::work_done`).
    #[cfg(feature = "test-helpers")]
    pub fn hash_pool_stats(&self) -> (crate::hash_pool::PoolStats, u64) {
        (self.hasher.pool().stats(), self.hasher.work_done())
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The claims of `token` if it is active now: well signed, ours, unexpired and its session
    /// unrevoked. No database round trip: a token seen before costs a cache lookup, a new one
    /// a signature check, and revocation is an in-memory set kept current by notifications.
    pub fn validate(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenRejected> {
        let now = self.clock.now();
        let verified = match self.verified.get(token) {
            Some(verified) => {
                self.tokens.check_window(&verified.claims, now)?;
                verified
            }
            None => {
                let verified = Arc::new(VerifiedToken { claims: self.tokens.verify(token, now)? });
                self.verified.insert(token, Arc::clone(&verified));
                verified
            }
        };
        if self.revocations.is_revoked(&verified.claims.sid) {
            return Err(TokenRejected::Revoked);
        }
        Ok(verified)
    }

    /// Operator actions on the outbox.
    pub fn mail_admin(&self) -> MailAdmin {
        MailAdmin::new(self.store.clone(), self.clock.clone())
    }

    /// Operator actions on accounts, on this service's store and revocation set.
    pub fn admin(&self) -> AccountAdmin {
        AccountAdmin::new(self.store.clone(), self.clock.clone(), Some(Arc::clone(&self.revocations)))
    }

    /// Operator actions on service keys, on this service's store.
    pub fn service_keys(&self) -> ServiceKeyAdmin {
        ServiceKeyAdmin::new(self.store.clone(), self.clock.clone())
    }

    /// Records revocations made by this process, so they take effect here at once (other
    /// replicas learn of them by notification).
    fn revoked_here(&self, revocation: &Revocation) {
        record_revocation(&self.revocations, revocation);
    }
}

fn record_revocation(revocations: &RevocationSet, revocation: &Revocation) {
    revocations.revoke(revocation.session_ids.iter().copied(), revocation.revoked_at, revocation.cursor);
}
