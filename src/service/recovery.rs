//! Password reset by email. A reset request only records "a reset was asked for this address,
//! now" (one row, the same row whether or not the address has an account: the request's work
//! cannot tell the two apart) and wakes the mail worker, which answers it in one transaction:
//! for an active account within the hourly allowance (`IDENTITY_MAIL_MAX_PER_HOUR`, so that it
//! cannot be used to flood an inbox) a single-use token (256 random bits, kept only as its
//! SHA-256 digest) and a message with a link to it (see `mail::requests`). A reset consumes
//! the token, sets the new password, marks the email verified, clears the email's lock and ends
//! every session.

use chrono::TimeDelta;

use super::Identity;
pub(super) use crate::domain::OneTimeToken;
use crate::{
    domain::{Email, FieldViolation, InvalidRequest, Password},
    error::AppError,
    store::ResetRecorded,
};

/// What the flows that mail links from the RPC path (verification, change of email) are
/// configured with; reset links are made by the mail worker (`mail::ResetLinks`).
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub verify_token_ttl: TimeDelta,
    /// The link in a verification message, with `{token}` where the token goes.
    pub verify_url: String,
    /// Login of an account whose email is not verified is refused (FAILED_PRECONDITION).
    pub require_verified_email: bool,
    /// Messages of one kind per address and hour.
    pub max_mail_per_hour: u32,
    /// Reset requests waiting for the mail worker, at most: anonymous callers must not grow
    /// the table, or delay everyone's resets behind a flood, without bound.
    pub max_pending_resets: u32,
}

/// Said for every reset token that cannot be used: unknown, used, expired or superseded.
const UNUSABLE_TOKEN: &str = "is invalid, expired or already used: ask for a new reset link";

impl Identity {
    /// Records a reset request for `email` for the mail worker, which sends a link if the email
    /// belongs to an active account within its allowance. The same single insert (none, while a
    /// request for the address is still pending) whichever it is; always `Ok` for the caller
    /// unless the database fails.
    pub async fn request_password_reset(&self, email: &Email) -> Result<(), AppError> {
        let max_pending = self.recovery.max_pending_resets;
        match self.store.request_password_reset(&email.normalized(), self.clock.now(), max_pending).await? {
            ResetRecorded::Recorded | ResetRecorded::AlreadyPending => {
                self.mail.requested();
                Ok(())
            }
            // Depends on the table, never on the address: it tells nobody whether it has an
            // account.
            ResetRecorded::QueueFull => {
                tracing::warn!(target: "audit", event = "password_reset_refused", reason = "queue full",
                    max_pending, "reset requests waiting for the mail worker are at IDENTITY_RESET_REQUESTS_MAX_PENDING");
                Err(AppError::Overloaded)
            }
        }
    }

    /// Sets `new` as the password of the account `token` was issued for, consuming the token,
    /// and ends every session of the user everywhere.
    pub async fn reset_password(
        &self,
        token: &str,
        new: &Password,
        requester: &crate::clients::Requester,
    ) -> Result<(), AppError> {
        let hash = self.hasher.hash(new, requester).await?;
        let now = self.clock.now();
        let Some((user_id, revocation)) =
            self.store.reset_password(&OneTimeToken::digest_of(token), &hash, now).await?
        else {
            tracing::info!(target: "audit", event = "password_reset_failed", reason = "unusable token");
            return Err(InvalidRequest(vec![FieldViolation::new("token", UNUSABLE_TOKEN)]).into());
        };
        let sessions_revoked = revocation.as_ref().map_or(0, |r| r.session_ids.len());
        if let Some(revocation) = &revocation {
            self.revoked_here(revocation);
        }
        tracing::info!(target: "audit", event = "password_reset", %user_id, sessions_revoked);
        Ok(())
    }
}
