//! Password reset by email: a request stores a single-use token (256 random bits, kept only as
//! its SHA-256 digest) and queues a message with a link to it, in one transaction; a reset
//! consumes the token, sets the new password, clears the email's lock and ends every
//! session. A request answers the same, after the same statements, whether or not the email
//! has an account, so it reveals nothing; the hourly allowance per address
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
    store::{ResetRequest, ResetRequestWork, ResetRequested},
};

/// What the recovery flows are configured with.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub reset_token_ttl: TimeDelta,
    /// The link in a reset message, with `{token}` where the token goes.
    pub reset_url: String,
    pub max_mail_per_hour: u32,
}

/// A single-use token for a link: shown once (in the message), stored as its digest.
struct LinkToken(SecretString);

impl LinkToken {
    fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    fn digest_of(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn link(&self, template: &str) -> SecretString {
        SecretString::from(template.replace("{token}", self.0.expose_secret()))
    }
}

/// Said for every token that cannot be used: unknown, used, expired or superseded.
const UNUSABLE_TOKEN: &str = "is invalid, expired or already used: ask for a new reset link";

impl Identity {
    /// Queues a reset message if `email` belongs to an active account and its allowance is not
    /// used up. Always `Ok` for the caller; the returned work is for tests and the benchmark.
    pub async fn request_password_reset(&self, email: &Email) -> Result<ResetRequestWork, AppError> {
        let token = LinkToken::generate();
        let now = self.clock.now();
        let expires_at = now + self.recovery.reset_token_ttl;
        let work = self
            .store
            .request_password_reset(ResetRequest {
                email: &email.normalized(),
                digest: &LinkToken::digest_of(token.0.expose_secret()),
                content: MailContent {
                    name: String::new(),
                    link: Some(token.link(&self.recovery.reset_url)),
                    expires_at: Some(expires_at),
                },
                now,
                expires_at,
                max_per_hour: self.recovery.max_mail_per_hour,
            })
            .await?;
        match &work.outcome {
            ResetRequested::Queued { user_id } => {
                self.mail.wake();
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
            self.store.reset_password(&LinkToken::digest_of(token), &hash, now).await?
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
        let token = LinkToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(token.0.expose_secret()).unwrap().len(), 32);
        let link = token.link("https://app.example.com/reset?token={token}");
        assert_eq!(
            link.expose_secret(),
            &format!("https://app.example.com/reset?token={}", token.0.expose_secret())
        );
        assert_ne!(LinkToken::digest_of("a"), LinkToken::digest_of("b"));
    }
}
