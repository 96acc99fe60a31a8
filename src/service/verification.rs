//! Email verification and change of email. Signup queues a link to the new address (in the
//! transaction that creates the account); a bearer call asks for a new one; `VerifyEmail`
//! consumes a link's token, which either marks the account's address verified or, for a
//! change of email, moves the account to the address the link was sent to (uniqueness checked
//! again then) and tells the old address. Tokens follow the reset rules (256 random bits,
//! digest-only, single use, newer supersedes older); sending is held to the hourly allowance
//! per address. A signup for a taken email, when Signup must not reveal accounts, mails the
//! owner instead.

use super::{Identity, recovery::OneTimeToken};
use crate::{
    clients::Requester,
    domain::{Email, FieldViolation, InvalidRequest, MailContent, PresentedPassword, UserId},
    error::AppError,
    store::{EmailVerified, LinkRequested, LinkToken, StoreError},
    tokens::{AccessClaims, VerifiedToken},
};

/// Said for every verification token that cannot be used: unknown, used, expired, superseded,
/// or for an address the account no longer has.
const UNUSABLE_TOKEN: &str = "is invalid, expired or already used: ask for a new verification link";

/// A fresh verification token and the parts the store needs to issue it.
pub(super) struct VerificationLink {
    token: OneTimeToken,
    digest: [u8; 32],
}

impl VerificationLink {
    pub(super) fn new() -> Self {
        let token = OneTimeToken::generate();
        let digest = token.digest();
        Self { token, digest }
    }
}

impl Identity {
    /// The stored form of `link`, valid from now for `IDENTITY_VERIFY_TOKEN_TTL`.
    pub(super) fn verification_token<'a>(&self, link: &'a VerificationLink) -> LinkToken<'a> {
        let now = self.clock.now();
        let expires_at = now + self.recovery.verify_token_ttl;
        LinkToken {
            digest: &link.digest,
            content: link.token.content(&self.recovery.verify_url, expires_at),
            now,
            expires_at,
            max_per_hour: self.recovery.max_mail_per_hour,
        }
    }

    /// Queues a new verification message for the caller's address (bearer). FAILED_PRECONDITION
    /// when it is verified already; beyond the hourly allowance it answers OK and sends nothing.
    pub async fn send_verification(&self, claims: &AccessClaims) -> Result<(), AppError> {
        match self.queue_verification(claims.sub).await? {
            LinkRequested::AlreadyVerified => {
                Err(AppError::FailedPrecondition("the email address is already verified"))
            }
            LinkRequested::NoAccount => {
                Err(AppError::Unauthenticated("the account no longer exists or is deactivated"))
            }
            LinkRequested::Queued | LinkRequested::Throttled => Ok(()),
        }
    }

    /// A new verification message for the account's address, audited.
    pub(super) async fn queue_verification(&self, user_id: UserId) -> Result<LinkRequested, AppError> {
        let link = VerificationLink::new();
        let outcome = self.store.request_verification(user_id, None, self.verification_token(&link)).await?;
        match outcome {
            LinkRequested::Queued => {
                self.mail.wake();
                tracing::info!(target: "audit", event = "email_verification_requested", %user_id);
            }
            LinkRequested::Throttled => {
                tracing::info!(target: "audit", event = "email_verification_throttled", %user_id,
                    max_per_hour = self.recovery.max_mail_per_hour, "hourly allowance used up: nothing sent");
            }
            LinkRequested::AlreadyVerified | LinkRequested::NoAccount => {}
        }
        Ok(outcome)
    }

    /// Consumes a verification token: the address it was sent to is verified (and, for a
    /// change of email, becomes the account's). Returns that address.
    pub async fn verify_email(&self, token: &str) -> Result<String, AppError> {
        let now = self.clock.now();
        let notice = MailContent { name: String::new(), link: None, expires_at: None };
        match self.store.verify_email(&OneTimeToken::digest_of(token), notice, now).await {
            Ok(Some(EmailVerified::Verified { user_id, email })) => {
                tracing::info!(target: "audit", event = "email_verified", %user_id);
                Ok(email)
            }
            Ok(Some(EmailVerified::Changed { user_id, new_email, .. })) => {
                self.mail.wake();
                tracing::info!(target: "audit", event = "email_changed", %user_id,
                    "the account moved to its verified new address; the old one was told");
                Ok(new_email)
            }
            Ok(None) => {
                tracing::info!(target: "audit", event = "email_verification_failed", reason = "unusable token");
                Err(InvalidRequest(vec![FieldViolation::new("token", UNUSABLE_TOKEN)]).into())
            }
            Err(StoreError::UniqueViolation) => {
                tracing::info!(target: "audit", event = "email_change_failed", reason = "address taken meanwhile");
                Err(AppError::EmailTaken)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Starts moving the caller's account to `new_email`, after checking the current password
    /// (counted like ChangePassword's): the new address gets a verification link, and nothing
    /// changes until it is opened. When Signup reveals accounts, a taken address is refused
    /// now (ALREADY_EXISTS); otherwise only when the link is opened, so this call tells nobody
    /// which addresses have accounts.
    pub async fn change_email(
        &self,
        caller: &VerifiedToken,
        current: &PresentedPassword,
        new_email: &Email,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let record = self.check_current_password(caller, current, requester, "email_change_failed").await?;
        let user_id = record.user.id;
        let current_email = Email::parse("email", &record.user.email).ok();
        if current_email.is_some_and(|email| email.normalized() == new_email.normalized()) {
            return Err(InvalidRequest(vec![FieldViolation::new(
                "new_email",
                "is already the account's email",
            )])
            .into());
        }
        if self.signup_reveals_accounts
            && self.store.find_user_by_email(&new_email.normalized()).await?.is_some()
        {
            return Err(AppError::EmailTaken);
        }
        let link = VerificationLink::new();
        match self
            .store
            .request_verification(user_id, Some(new_email), self.verification_token(&link))
            .await?
        {
            LinkRequested::Queued => {
                self.mail.wake();
                tracing::info!(target: "audit", event = "email_change_requested", %user_id);
                Ok(())
            }
            LinkRequested::Throttled => {
                tracing::info!(target: "audit", event = "email_change_throttled", %user_id,
                    max_per_hour = self.recovery.max_mail_per_hour, "hourly allowance used up: nothing sent");
                Ok(())
            }
            LinkRequested::NoAccount | LinkRequested::AlreadyVerified => {
                Err(AppError::Unauthenticated("the account no longer exists or is deactivated"))
            }
        }
    }

    /// Someone signed up with the address of an existing account, and Signup must not say so:
    /// its owner is told by mail instead (at most the hourly allowance of such notices).
    /// Best effort: the signup's answer does not depend on it.
    pub(super) async fn notify_existing_account(&self, email: &Email, requester: &Requester) {
        let content = MailContent { name: String::new(), link: None, expires_at: None };
        let now = self.clock.now();
        match self
            .store
            .notify_existing_account(&email.normalized(), content, now, self.recovery.max_mail_per_hour)
            .await
        {
            Ok(Some((user_id, LinkRequested::Queued))) => {
                self.mail.wake();
                tracing::info!(target: "audit", event = "signup_for_existing_account", %user_id,
                    client = %requester.client, "answered as a success; the owner is told by mail");
            }
            Ok(Some((user_id, _))) => {
                tracing::info!(target: "audit", event = "signup_for_existing_account", %user_id,
                    client = %requester.client, "answered as a success; hourly allowance used up: nothing sent");
            }
            // Taken by a look-alike address only: its owner did not type this one.
            Ok(None) => tracing::info!(target: "audit", event = "signup_for_existing_account",
                client = %requester.client, reason = "look-alike of an existing address", "answered as a success"),
            Err(error) => {
                tracing::warn!(%error, "could not queue the notice of a signup for an existing account")
            }
        }
    }
}
