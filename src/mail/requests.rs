//! Answering password-reset requests. RequestPasswordReset only records the request (see
//! `store::reset_requests`), so that its work is the same for every address; everything that
//! depends on whether the address has an account happens here, in the worker, one transaction
//! per request: the account lookup, the hourly allowance, the token (made here once the request
//! is claimed and gets a message, stored as its digest, shown only in the message) and its
//! message, and the removal of the request.

use chrono::TimeDelta;

use super::Outbox;
use crate::{
    domain::OneTimeToken,
    metrics::RESET_REQUESTS_PENDING,
    store::{ResetAnswered, ResetLink, ResetRequested, StoreError},
};

/// What a reset request is answered with.
#[derive(Debug, Clone)]
pub struct ResetLinks {
    /// The link in a reset message, with `{token}` where the token goes.
    pub url: String,
    /// How long a reset link works (`IDENTITY_RESET_TOKEN_TTL`), from when it is made.
    pub ttl: TimeDelta,
    /// Reset messages one address may get per hour (`IDENTITY_MAIL_MAX_PER_HOUR`).
    pub max_per_hour: u32,
}

impl Outbox {
    /// Answers pending reset requests, oldest first, until none is left (requests another
    /// replica holds are left to it); returns how many were answered. Each queued message
    /// wakes delivery at once.
    pub async fn answer_pending(&self) -> Result<usize, StoreError> {
        let mut answered = 0;
        loop {
            let now = self.clock.now();
            let reset = &self.settings.reset;
            // Called by the store only for a claimed request that gets a message: most polls
            // find nothing waiting, and they make no token.
            let make_link = || {
                let token = OneTimeToken::generate();
                let expires_at = now + reset.ttl;
                ResetLink {
                    digest: token.digest(),
                    content: token.content(&reset.url, expires_at),
                    expires_at,
                }
            };
            let answer = self.store.answer_reset_request(now, reset.max_per_hour, make_link).await?;
            let Some(ResetAnswered { requested_at, outcome }) = answer else {
                return Ok(answered);
            };
            answered += 1;
            let waited_ms = (now - requested_at).num_milliseconds().max(0);
            match outcome {
                ResetRequested::Queued { user_id } => {
                    self.queue.wake();
                    tracing::info!(target: "audit", event = "password_reset_requested", %user_id, waited_ms);
                }
                ResetRequested::Throttled { user_id } => {
                    tracing::info!(target: "audit", event = "password_reset_throttled", %user_id, waited_ms,
                        max_per_hour = reset.max_per_hour, "hourly allowance used up: nothing sent");
                }
                ResetRequested::NoAccount => {
                    tracing::info!(target: "audit", event = "password_reset_requested", waited_ms,
                        reason = "no active account");
                }
            }
        }
    }

    /// Sets the pending-requests gauge; a failure only leaves it stale.
    pub(super) async fn record_pending(&self) {
        if let Ok(pending) = self.store.pending_reset_requests().await {
            metrics::gauge!(RESET_REQUESTS_PENDING).set(pending as f64);
        }
    }
}
