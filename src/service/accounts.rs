//! Signup, login, the current user and password changes. Callers get a [`User`]; the stored
//! hash (in the store's `UserRecord`) is read here and goes no further.

use super::Identity;
use super::{throttle::PASSWORD_CHANGE_FAILURES_END_SESSION, verification::VerificationLink};
use crate::metrics::{LOGINS, SESSIONS_ENDED_FOR_GUESSING};
use crate::{
    clients::Requester,
    domain::{
        Email, FullName, MAX_PASSWORD_BYTES, Password, PresentedPassword, RevocationReason, SessionOrigin,
        User, UserId,
    },
    error::AppError,
    passwords::HashError,
    store::{LoginAccount, NewUser, PasswordChange, StoreError, UserRecord},
    tokens::{AccessClaims, VerifiedToken},
};

pub struct SignupInput {
    pub email: Email,
    pub password: Password,
    pub full_name: FullName,
}

impl Identity {
    /// Creates an account and queues the verification message to its address. With
    /// `signup_reveals_accounts` off, a taken email answers exactly as a new account would (a
    /// `User` with a fresh id that is never stored, after the same hashing), so Signup tells
    /// nobody which emails have accounts; the owner is told by mail instead.
    pub async fn signup(&self, input: SignupInput, requester: &Requester) -> Result<User, AppError> {
        let hash = self.hasher.hash(&input.password, requester).await?;
        let user = NewUser {
            id: UserId::new(),
            email: &input.email,
            full_name: &input.full_name,
            password_hash: &hash,
            now: self.clock.now(),
        };
        // The account and its verification link are stored together.
        let link = VerificationLink::new();
        match self.store.insert_user_to_verify(&user, self.verification_token(&link)).await {
            Ok(user) => {
                self.mail.wake();
                tracing::info!(target: "audit", event = "signup", user_id = %user.id);
                Ok(user)
            }
            Err(StoreError::UniqueViolation) if !self.signup_reveals_accounts => {
                self.notify_existing_account(&input.email, requester).await;
                Ok(User {
                    id: user.id,
                    email: input.email.as_str().to_owned(),
                    full_name: input.full_name.as_str().to_owned(),
                    is_active: true,
                    created_at: user.now,
                    email_verified_at: None,
                    roles: Vec::new(),
                    external_id: None,
                })
            }
            Err(StoreError::UniqueViolation) => Err(AppError::EmailTaken),
            Err(error) => Err(error.into()),
        }
    }

    /// Checks the credentials and starts a session. Every failure is the same
    /// `InvalidCredentials`, and costs the same bcrypt work whether or not the account exists.
    pub async fn login(
        &self,
        email: &Email,
        password: &PresentedPassword,
        requester: &Requester,
        origin: &SessionOrigin,
    ) -> Result<super::LoginOutcome, AppError> {
        let email_lower = email.normalized();
        let ticket = self.admit_login(&email_lower, requester).await?;
        let (user, second_factor) = match self.store.find_login_account(&email_lower).await? {
            Some(LoginAccount { record, second_factor }) => (Some(record), second_factor),
            None => (None, false),
        };
        let verified =
            match self.hasher.verify(password, user.as_ref().map(|u| &u.password_hash), requester).await {
                Ok(verified) => verified,
                Err(error) => {
                    metrics::counter!(LOGINS, "outcome" => "shed").increment(1);
                    // Shed or failed before the password was checked: that attempt is not a failure.
                    self.attempt_unchecked(&ticket).await?;
                    return Err(error.into());
                }
            };
        let user = match user {
            Some(record) if verified && record.user.is_active => record,
            Some(UserRecord { user, .. }) => {
                let (reason, outcome) = if verified {
                    ("account deactivated", "deactivated")
                } else {
                    ("wrong password", "wrong_password")
                };
                metrics::counter!(LOGINS, "outcome" => outcome).increment(1);
                tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason,
                    client = %requester.client);
                self.login_failed(&ticket).await?;
                return Err(AppError::InvalidCredentials);
            }
            None => {
                metrics::counter!(LOGINS, "outcome" => "unknown_email").increment(1);
                tracing::info!(target: "audit", event = "login_failed", reason = "unknown email",
                    client = %requester.client);
                self.login_failed(&ticket).await?;
                return Err(AppError::InvalidCredentials);
            }
        };
        // Read with the account, acted on only now that the password is proven: neither the
        // answers nor the work before this point depend on whether the account has a second
        // factor.
        if !second_factor {
            self.attempt_succeeded(&ticket).await?;
        }
        // With a second factor, the attempt stays counted until the challenge is completed
        // (`complete_login` clears it): a stolen password alone never resets the throttle that
        // limits guessing codes.
        self.rehash_if_weaker(&user, password, requester).await;
        let UserRecord { user, .. } = user;
        if self.recovery.require_verified_email && !user.email_verified() {
            // The password is proven, so saying this reveals nothing; a new link goes out
            // (within the allowance), since the user cannot ask for one without a session.
            if let Err(error) = self.queue_verification(user.id).await {
                tracing::warn!(user_id = %user.id, %error, "could not queue a verification message");
            }
            metrics::counter!(LOGINS, "outcome" => "email_not_verified").increment(1);
            tracing::info!(target: "audit", event = "login_refused", user_id = %user.id, reason = "email not verified");
            return Err(AppError::EmailNotVerified);
        }
        if second_factor {
            let challenge = self.start_mfa_challenge(user.id).await?;
            metrics::counter!(LOGINS, "outcome" => "mfa_required").increment(1);
            tracing::info!(target: "audit", event = "login_mfa_required", user_id = %user.id);
            return Ok(super::LoginOutcome::SecondFactorRequired(challenge));
        }
        let tokens = self.start_session(&user, origin, None).await?;
        metrics::counter!(LOGINS, "outcome" => "success").increment(1);
        tracing::info!(target: "audit", event = "login", user_id = %user.id, session_id = %tokens.session_id);
        Ok(super::LoginOutcome::Tokens(user, tokens))
    }

    /// Raising `IDENTITY_BCRYPT_COST` upgrades each user at their next successful login, the
    /// only time the service holds the plain password, and so does an imported hash (another
    /// scheme) become bcrypt at the configured cost. A password bcrypt cannot hold in full
    /// (over [`MAX_PASSWORD_BYTES`] in NFKC: only an imported hash can be of one) keeps its
    /// imported hash, still counted by `identity user hash-schemes`, until its owner changes
    /// it. Best effort: a failure here does not fail the login.
    async fn rehash_if_weaker(
        &self,
        record: &UserRecord,
        password: &PresentedPassword,
        requester: &Requester,
    ) {
        let user = &record.user;
        if !self.hasher.needs_rehash(&record.password_hash) {
            return;
        }
        if password.expose().len() > MAX_PASSWORD_BYTES {
            tracing::info!(user_id = %user.id, scheme = record.password_hash.scheme_name(),
                "password too long for bcrypt: the imported hash stays until the password is changed");
            return;
        }
        let stronger = match self.hasher.hash_presented(password, requester).await {
            Ok(hash) => hash,
            Err(HashError::Overloaded) => return,
            Err(error) => {
                tracing::warn!(user_id = %user.id, %error, "could not rehash a password");
                return;
            }
        };
        match self.store.upgrade_password_hash(user.id, &record.password_hash, &stronger).await {
            Ok(_) => tracing::info!(user_id = %user.id, cost = self.hasher.cost(),
                from = record.password_hash.scheme_name(), "password rehashed at the configured cost"),
            Err(error) => tracing::warn!(user_id = %user.id, %error, "could not store a rehashed password"),
        }
    }

    /// The account behind an active token; UNAUTHENTICATED if it is gone or deactivated.
    pub async fn current_user(&self, claims: &AccessClaims) -> Result<User, AppError> {
        Ok(self.active_account(claims).await?.user)
    }

    /// The active account behind `claims`, with its password hash.
    pub(super) async fn active_account(&self, claims: &AccessClaims) -> Result<UserRecord, AppError> {
        match self.store.find_user_by_id(claims.sub).await? {
            Some(record) if record.user.is_active => Ok(record),
            _ => Err(AppError::Unauthenticated("the account no longer exists or is deactivated")),
        }
    }

    /// Checks the caller's current password, counted per (account, client) like a login: a
    /// wrong one is UNAUTHENTICATED (audited as `failed_event`), and after
    /// [`PASSWORD_CHANGE_FAILURES_END_SESSION`] of them the session ends. Returns the account.
    pub(super) async fn check_current_password(
        &self,
        caller: &VerifiedToken,
        current: &PresentedPassword,
        requester: &Requester,
        failed_event: &'static str,
    ) -> Result<UserRecord, AppError> {
        let record = self.active_account(&caller.claims).await?;
        let user_id = record.user.id;
        let ticket = self.admit_password_check(user_id, requester).await?;
        let verified = match self.hasher.verify(current, Some(&record.password_hash), requester).await {
            Ok(verified) => verified,
            Err(error) => {
                self.attempt_unchecked(&ticket).await?;
                return Err(error.into());
            }
        };
        if !verified {
            tracing::info!(target: "audit", event = failed_event, %user_id,
                reason = "wrong current password", failures = ticket.pair_failures, client = %requester.client);
            self.attempt_failed(&ticket).await?;
            if ticket.pair_failures >= PASSWORD_CHANGE_FAILURES_END_SESSION {
                return Err(self
                    .end_guessing_session(
                        caller,
                        user_id,
                        "the current password is incorrect; the session has ended",
                    )
                    .await);
            }
            return Err(AppError::Unauthenticated("the current password is incorrect"));
        }
        self.attempt_succeeded(&ticket).await?;
        Ok(record)
    }

    /// Sets a new password after checking the current one, and ends every other session of the
    /// user; the caller's session stays valid.
    pub async fn change_password(
        &self,
        caller: &VerifiedToken,
        current: &PresentedPassword,
        new: &Password,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let UserRecord { user, password_hash } =
            self.check_current_password(caller, current, requester, "password_change_failed").await?;
        let new_hash = self.hasher.hash(new, requester).await?;
        let now = self.clock.now();
        let change = self
            .store
            .change_password(user.id, &password_hash, &new_hash, Some(caller.claims.sid), now)
            .await?;
        let revoked = match change {
            PasswordChange::Changed(revocation) => revocation,
            // Another change won the race since we read the hash: the caller's current password
            // is no longer the current one.
            PasswordChange::Conflict => {
                return Err(AppError::Unauthenticated("the current password is incorrect"));
            }
        };
        let sessions_revoked = revoked.as_ref().map_or(0, |r| r.session_ids.len());
        if let Some(revocation) = &revoked {
            self.revoked_here(revocation);
        }
        tracing::info!(target: "audit", event = "password_changed", user_id = %user.id,
            session_id = %caller.claims.sid, sessions_revoked);
        Ok(())
    }

    /// Someone holding this session keeps guessing its account's password: whoever it is,
    /// the session ends (revoked like a logout, so every replica and verifier learns of it).
    pub(super) async fn end_guessing_session(
        &self,
        caller: &VerifiedToken,
        user: UserId,
        message: &'static str,
    ) -> AppError {
        let session_id = caller.claims.sid;
        match self
            .store
            .revoke_session(session_id, RevocationReason::PasswordGuessing, self.clock.now())
            .await
        {
            Ok(revocation) => {
                if let Some(revocation) = &revocation {
                    self.revoked_here(revocation);
                }
                metrics::counter!(SESSIONS_ENDED_FOR_GUESSING).increment(1);
                tracing::warn!(target: "audit", event = "session_ended_for_password_guessing", user_id = %user,
                    %session_id, failures = PASSWORD_CHANGE_FAILURES_END_SESSION,
                    "repeated wrong current passwords or codes: session revoked");
                AppError::Unauthenticated(message)
            }
            Err(error) => error.into(),
        }
    }
}
