//! Signup, login, the current user and password changes. Callers get a [`User`]; the stored
//! hash (in the store's `UserRecord`) is read here and goes no further.

use super::Identity;
use crate::metrics::{LOCKOUTS, LOGINS};
use crate::{
    clients::Requester,
    domain::{Email, FullName, NormalizedEmail, Password, PresentedPassword, User, UserId},
    error::AppError,
    passwords::HashError,
    store::{NewUser, PasswordChange, StoreError, UserRecord},
    tokens::{AccessClaims, VerifiedToken},
};

pub struct SignupInput {
    pub email: Email,
    pub password: Password,
    pub full_name: FullName,
}

impl Identity {
    pub async fn signup(&self, input: SignupInput, requester: &Requester) -> Result<User, AppError> {
        let hash = self.hasher.hash(&input.password, requester).await?;
        let user = NewUser {
            id: UserId::new(),
            email: &input.email,
            full_name: &input.full_name,
            password_hash: &hash,
            now: self.clock.now(),
        };
        match self.store.insert_user(&user).await {
            Ok(user) => {
                tracing::info!(target: "audit", event = "signup", user_id = %user.id);
                Ok(user)
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
    ) -> Result<(User, super::SessionTokens), AppError> {
        let email_lower = email.normalized();
        let counted = self.count_attempt(&email_lower).await?;
        let user = self.store.find_user_by_email(&email_lower).await?;
        let verified =
            match self.hasher.verify(password, user.as_ref().map(|u| &u.password_hash), requester).await {
                Ok(verified) => verified,
                Err(error) => {
                    metrics::counter!(LOGINS, "outcome" => "shed").increment(1);
                    // Shed or failed before the password was checked: that attempt is not a failure.
                    if self.lockout.is_some() {
                        self.store.uncount_login_attempt(&email_lower).await?;
                    }
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
                tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason);
                self.note_failure(counted);
                return Err(AppError::InvalidCredentials);
            }
            None => {
                metrics::counter!(LOGINS, "outcome" => "unknown_email").increment(1);
                tracing::info!(target: "audit", event = "login_failed", reason = "unknown email");
                self.note_failure(counted);
                return Err(AppError::InvalidCredentials);
            }
        };
        if self.lockout.is_some() {
            self.store.clear_login_attempts(&email_lower).await?;
        }
        self.rehash_if_weaker(&user, password, requester).await;
        let UserRecord { user, .. } = user;
        let tokens = self.start_session(&user).await?;
        metrics::counter!(LOGINS, "outcome" => "success").increment(1);
        tracing::info!(target: "audit", event = "login", user_id = %user.id, session_id = %tokens.session_id);
        Ok((user, tokens))
    }

    /// Counts this attempt against the email's window (whether or not an account exists, so the
    /// lockout reveals nothing), and refuses it when the window already holds the maximum.
    /// Returns the attempts now counted in the window, this one included (0 without lockout).
    async fn count_attempt(&self, email_lower: &NormalizedEmail) -> Result<i64, AppError> {
        let Some(lockout) = &self.lockout else { return Ok(0) };
        let now = self.clock.now();
        let window = self.store.count_login_attempt(email_lower, now, now - lockout.window).await?;
        let counted = i64::from(window.failures);
        if counted <= i64::from(lockout.max_failures) {
            return Ok(counted);
        }
        // A refused attempt checks no password, so it must not count: otherwise a burst of
        // concurrent logins (right passwords included) would keep the email locked for the
        // whole window after the burst.
        self.store.uncount_login_attempt(email_lower).await?;
        // `window_started_at` comes from a database row: checked, not trusted to be sane.
        let retry_after = window
            .window_started_at
            .checked_add_signed(lockout.window)
            .and_then(|ends| (ends - now).to_std().ok())
            .unwrap_or_default();
        metrics::counter!(LOGINS, "outcome" => "locked_out").increment(1);
        tracing::info!(target: "audit", event = "login_locked_out", retry_after_s = retry_after.as_secs());
        Err(AppError::LockedOut { retry_after })
    }

    /// A wrong password that fills the window locks the email: the moment worth an alert.
    fn note_failure(&self, counted: i64) {
        if let Some(lockout) = &self.lockout
            && counted == i64::from(lockout.max_failures)
        {
            metrics::counter!(LOCKOUTS).increment(1);
            tracing::warn!(target: "audit", event = "lockout", window_s = lockout.window.num_seconds(),
                "too many failed logins for one email: locked until the window passes");
        }
    }

    /// Raising `IDENTITY_BCRYPT_COST` upgrades each user at their next successful login, the
    /// only time the service holds the plain password. Best effort: a failure here does not
    /// fail the login.
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
        let stronger = match self.hasher.hash_presented(password, requester).await {
            Ok(hash) => hash,
            Err(HashError::Overloaded) => return,
            Err(error) => {
                tracing::warn!(user_id = %user.id, %error, "could not rehash a password");
                return;
            }
        };
        match self.store.upgrade_password_hash(user.id, &record.password_hash, &stronger).await {
            Ok(_) => {
                tracing::info!(user_id = %user.id, cost = self.hasher.cost(), "password rehashed at the configured cost")
            }
            Err(error) => tracing::warn!(user_id = %user.id, %error, "could not store a rehashed password"),
        }
    }

    /// The account behind an active token; UNAUTHENTICATED if it is gone or deactivated.
    pub async fn current_user(&self, claims: &AccessClaims) -> Result<User, AppError> {
        Ok(self.active_account(claims).await?.user)
    }

    /// The active account behind `claims`, with its password hash.
    async fn active_account(&self, claims: &AccessClaims) -> Result<UserRecord, AppError> {
        match self.store.find_user_by_id(claims.sub).await? {
            Some(record) if record.user.is_active => Ok(record),
            _ => Err(AppError::Unauthenticated("the account no longer exists or is deactivated")),
        }
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
        let UserRecord { user, password_hash } = self.active_account(&caller.claims).await?;
        if !self.hasher.verify(current, Some(&password_hash), requester).await? {
            tracing::info!(target: "audit", event = "password_change_failed", user_id = %user.id, reason = "wrong current password");
            return Err(AppError::Unauthenticated("the current password is incorrect"));
        }
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
}
