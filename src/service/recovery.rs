//! Password reset by email, and the one-time tokens every mailed link carries. A reset request
//! stores a single-use token (256 random bits, kept only as its SHA-256 digest) and queues a
//! message with a link to it, in one transaction; a reset consumes the token, sets the new
//! password, marks the email verified, clears the email's lock and ends every session. A
//! request answers the same, after the same statements inserting the same rows (an unknown
//! email's are stand-ins deleted before commit), whether or not the email has an account; the
//! delivery that follows an existing email's request still loads the database (see
//! docs/benchmarks.md, "Reset requests and mail delivery"). The hourly allowance per address
//! (`IDENTITY_MAIL_MAX_PER_HOUR`) keeps it from being used to flood an inbox.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::TimeDelta;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::Identity;
use crate::{
    domain::{Email, FieldViolation, InvalidRequest, MailContent, Password},
    error::AppError,
    store::{LinkToken, ResetRequestWork, ResetRequested},
};

/// What the flows that mail links (reset, verification, change of email) are configured with.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub reset_token_ttl: TimeDelta,
    /// The link in a reset message, with `{token}` where the token goes.
    pub reset_url: String,
    pub verify_token_ttl: TimeDelta,
    /// The link in a verification message, with `{token}` where the token goes.
    pub verify_url: String,
    /// Login of an account whose email is not verified is refused (FAILED_PRECONDITION).
    pub require_verified_email: bool,
    /// Messages of one kind per address and hour.
    pub max_mail_per_hour: u32,
}

/// A single-use token for a link: shown once (in the message), stored as its digest.
pub(super) struct OneTimeToken(SecretString);

impl OneTimeToken {
    pub(super) fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The token itself, to hand to the client once.
    pub(super) fn into_secret(self) -> SecretString {
        self.0
    }

    pub(super) fn digest_of(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub(super) fn digest(&self) -> [u8; 32] {
        Self::digest_of(self.0.expose_secret())
    }

    fn link(&self, template: &str) -> SecretString {
        SecretString::from(template.replace("{token}", self.0.expose_secret()))
    }

    /// The message content carrying this token's link (the name is filled in by the store).
    pub(super) fn content(&self, template: &str, expires_at: chrono::DateTime<chrono::Utc>) -> MailContent {
        MailContent { name: String::new(), link: Some(self.link(template)), expires_at: Some(expires_at) }
    }
}

/// Said for every reset token that cannot be used: unknown, used, expired or superseded.
const UNUSABLE_TOKEN: &str = "is invalid, expired or already used: ask for a new reset link";

impl Identity {
    /// Queues a reset message if `email` belongs to an active account and its allowance is not
    /// used up. Always `Ok` for the caller; the returned work is for tests and the benchmark.
    pub async fn request_password_reset(&self, email: &Email) -> Result<ResetRequestWork, AppError> {
        let token = OneTimeToken::generate();
        let now = self.clock.now();
        let expires_at = now + self.recovery.reset_token_ttl;
        let digest = token.digest();
        let link = LinkToken {
            digest: &digest,
            content: token.content(&self.recovery.reset_url, expires_at),
            now,
            expires_at,
            max_per_hour: self.recovery.max_mail_per_hour,
        };
        let work = self.store.request_password_reset(&email.normalized(), link).await?;
        // Woken on every path: the worker's look at the outbox is part of the same work.
        self.mail.wake();
        match &work.outcome {
            ResetRequested::Queued { user_id } => {
                tracing::info!(target: "audit", event = "password_reset_requested", %user_id);
            }
            ResetRequested::Throttled { user_id } => {
                tracing::info!(target: "audit", event = "password_reset_throttled", %user_id,
                    max_per_hour = self.recovery.max_mail_per_hour, "hourly allowance used up: nothing sent");
            }
            ResetRequested::NoAccount => {
                tracing::info!(target: "audit", event = "password_reset_requested", reason = "no active account");
            }
        }
        Ok(work)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_256_random_bits_placed_in_the_link() {
        let token = OneTimeToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(token.0.expose_secret()).unwrap().len(), 32);
        let link = token.link("https://app.example.com/reset?token={token}");
        assert_eq!(
            link.expose_secret(),
            &format!("https://app.example.com/reset?token={}", token.0.expose_secret())
        );
        assert_ne!(OneTimeToken::digest_of("a"), OneTimeToken::digest_of("b"));
    }
}
