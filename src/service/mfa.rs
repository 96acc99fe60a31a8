//! The second factor of an account: TOTP enrolment (RFC 6238: SHA-1, 6 digits, 30 s steps, as
//! every authenticator app reads them), recovery codes, the login challenge between a right
//! password and the tokens, and step-up. A code is accepted within one step either side of now
//! and each time step once (the last accepted step is stored); wrong codes are counted by the
//! same throttle as wrong passwords. The secret is sealed at rest (`crate::sealing`) and leaves
//! the server only in BeginTotpEnrollment's answer.

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use totp_rs::{Algorithm, Builder, Totp};

use super::{
    Identity, PASSWORD_CHANGE_FAILURES_END_SESSION,
    recovery::OneTimeToken,
    sessions::{INVALID_CHALLENGE, MAX_CHALLENGE_FAILURES},
};
use crate::{
    clients::Requester,
    domain::{
        Actor, Caller, NormalizedEmail, PresentedPassword, RECOVERY_CODES, RecoveryCode, SecondFactor,
        SessionOrigin, TotpCode, User, UserId,
    },
    error::AppError,
    metrics::LOGINS,
    sealing::Sealer,
    store::{SessionAuth, TotpConfirmation, TotpEnrollment},
    tokens::{IssuedAccessToken, VerifiedToken},
};

/// How long a login challenge lives.
const CHALLENGE_TTL: TimeDelta = TimeDelta::minutes(5);
/// Bytes of a new TOTP secret: 160 bits, RFC 4226's recommendation (the HMAC-SHA-1 block).
const SECRET_BYTES: usize = 20;

const NOT_CONFIGURED: &str = "the second factor is not available on this server: it needs \
     IDENTITY_ENCRYPTION_KEY_FILE (shared by every replica) on Postgres";
const WRONG_CODE: &str = "the code is incorrect or was used already";

/// What the second factor runs with.
pub struct MfaSettings {
    /// Seals TOTP secrets; `None` on Postgres without `IDENTITY_ENCRYPTION_KEY_FILE`.
    pub sealer: Option<Sealer>,
    /// The issuer authenticator apps show (`IDENTITY_TOTP_ISSUER`).
    pub issuer: String,
}

/// A started enrolment, shown to the user once: the secret as an `otpauth://` URI, as a QR code
/// of that URI (PNG), and in base32 for typing in by hand.
pub struct TotpEnrollmentStart {
    pub otpauth_uri: SecretString,
    pub qr_png: Vec<u8>,
    pub secret_base32: SecretString,
}

/// A right password for an account with a second factor: the handle that CompleteLogin takes
/// (256 random bits, stored as a digest), and when it dies.
pub struct MfaChallenge {
    pub handle: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// What a login with the right password leads to.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per login and moved once: a box would only add an allocation"
)]
pub enum LoginOutcome {
    Tokens(User, super::SessionTokens),
    SecondFactorRequired(MfaChallenge),
}

fn totp(secret: Vec<u8>, account: Option<(&str, &str)>) -> Result<Totp, AppError> {
    let builder =
        Builder::new().with_algorithm(Algorithm::SHA1).with_digits(6).with_step_duration(30).with_skew(1);
    let builder = match account {
        // `:` separates issuer and account in the URI's label; an address could hold one.
        Some((issuer, email)) => builder.with_issuer(Some(issuer)).with_account_name(email.replace(':', "_")),
        None => builder,
    };
    builder.with_secret(secret).build().map_err(|error| AppError::internal(error.to_string()))
}

/// The time step (30 s) within one step of `now` whose code is `code`, if any.
fn matching_step(totp: &Totp, code: &TotpCode, now: DateTime<Utc>) -> Option<i64> {
    let seconds = u64::try_from(now.timestamp()).ok()?;
    totp.check(code.expose(), seconds).and_then(|step| i64::try_from(step).ok())
}

fn new_recovery_codes() -> (Vec<RecoveryCode>, Vec<[u8; 32]>) {
    let codes: Vec<RecoveryCode> = (0..RECOVERY_CODES).map(|_| RecoveryCode::generate()).collect();
    let digests = codes.iter().map(RecoveryCode::digest).collect();
    (codes, digests)
}

impl Identity {
    fn sealer(&self) -> Result<&Sealer, AppError> {
        self.mfa.sealer.as_ref().ok_or(AppError::FailedPrecondition(NOT_CONFIGURED))
    }

    /// The owner's TOTP secret, opened; re-sealed under the current key when an old one sealed
    /// it (key rotation), best effort.
    async fn open_secret(&self, user: UserId, sealed: &crate::sealing::Sealed) -> Result<Vec<u8>, AppError> {
        let sealer = self.sealer()?;
        let owner = user.into_uuid();
        let secret = sealer.open(sealed, owner.as_bytes()).map_err(AppError::internal)?;
        if sealer.is_stale(sealed) {
            let resealed = sealer.seal(&secret, owner.as_bytes());
            match self.store.reseal_totp(user, &resealed).await {
                Ok(()) => tracing::info!(user_id = %user, "TOTP secret re-sealed under the current key"),
                Err(error) => tracing::warn!(user_id = %user, %error, "could not re-seal a TOTP secret"),
            }
        }
        Ok(secret)
    }

    /// Starts (or restarts) a TOTP enrolment with a fresh secret; FAILED_PRECONDITION when the
    /// caller has a second factor already.
    pub async fn begin_totp_enrollment(
        &self,
        caller: &VerifiedToken,
    ) -> Result<TotpEnrollmentStart, AppError> {
        let record = self.active_account(&caller.claims).await?;
        let user = record.user.id;
        let secret: Vec<u8> = (0..SECRET_BYTES).map(|_| rand::random::<u8>()).collect();
        let sealed = self.sealer()?.seal(&secret, user.into_uuid().as_bytes());
        let totp = totp(secret, Some((&self.mfa.issuer, &record.user.email)))?;
        let uri = totp.to_url().map_err(|error| AppError::internal(error.to_string()))?;
        let qr_png = totp.to_qr_png().map_err(|error| AppError::internal(error.to_string()))?;
        let secret_base32 = totp.secret().to_base32();
        match self.store.begin_totp(user, &sealed, self.clock.now()).await? {
            TotpEnrollment::Pending => {
                tracing::info!(target: "audit", event = "totp_enrollment_started", user_id = %user);
                Ok(TotpEnrollmentStart {
                    otpauth_uri: SecretString::from(uri),
                    qr_png,
                    secret_base32: SecretString::from(secret_base32),
                })
            }
            TotpEnrollment::AlreadyEnabled => Err(AppError::FailedPrecondition(
                "a second factor is enabled already: disable it (DisableTotp) before enrolling again",
            )),
        }
    }

    /// Activates the pending enrolment with a current code; returns the recovery codes, shown
    /// this once. Wrong codes are counted like wrong current passwords.
    pub async fn confirm_totp_enrollment(
        &self,
        caller: &VerifiedToken,
        code: &TotpCode,
        requester: &Requester,
    ) -> Result<Vec<RecoveryCode>, AppError> {
        let user = self.active_account(&caller.claims).await?.user.id;
        let credential = match self.store.totp_credential(user).await? {
            Some(credential) if !credential.confirmed => credential,
            Some(_) => return Err(AppError::FailedPrecondition("the second factor is enabled already")),
            None => {
                return Err(AppError::FailedPrecondition(
                    "no enrolment is pending: call BeginTotpEnrollment first",
                ));
            }
        };
        let ticket = self.admit_password_check(user, requester).await?;
        let secret = self.open_secret(user, &credential.sealed).await?;
        let now = self.clock.now();
        let (codes, digests) = new_recovery_codes();
        let confirmation = match matching_step(&totp(secret, None)?, code, now) {
            Some(step) => self.store.confirm_totp(user, step, &digests, caller.claims.sid, now).await?,
            None => TotpConfirmation::Refused,
        };
        let TotpConfirmation::Enabled(revocation) = confirmation else {
            // Stays counted; no longer in flight (see `throttle`).
            self.attempt_failed(&ticket).await?;
            return Err(self.wrong_code(caller, user, ticket.pair_failures, requester).await);
        };
        self.attempt_succeeded(&ticket).await?;
        // Sessions opened with the password alone, perhaps by whoever prompted the enrolment,
        // must not keep refreshing past it: only the enrolling one stays.
        let sessions_revoked = revocation.as_ref().map_or(0, |r| r.session_ids.len());
        if let Some(revocation) = &revocation {
            self.revoked_here(revocation);
        }
        tracing::info!(target: "audit", event = "mfa_enabled", user_id = %user, sessions_revoked);
        Ok(codes)
    }

    /// New recovery codes for the caller (the old ones stop working), once the current
    /// password and a second factor are proven.
    pub async fn regenerate_recovery_codes(
        &self,
        caller: &VerifiedToken,
        password: &PresentedPassword,
        factor: &SecondFactor,
        requester: &Requester,
    ) -> Result<Vec<RecoveryCode>, AppError> {
        let user = self
            .check_password_and_factor(caller, password, factor, requester, "recovery_codes_failed")
            .await?;
        let (codes, digests) = new_recovery_codes();
        self.store.replace_recovery_codes(user, &digests, self.clock.now()).await?;
        tracing::info!(target: "audit", event = "recovery_codes_regenerated", user_id = %user);
        Ok(codes)
    }

    /// Removes the caller's second factor, once the current password and a second factor are
    /// proven.
    pub async fn disable_totp(
        &self,
        caller: &VerifiedToken,
        password: &PresentedPassword,
        factor: &SecondFactor,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let user =
            self.check_password_and_factor(caller, password, factor, requester, "disable_mfa_failed").await?;
        self.store.remove_mfa(user, None, self.clock.now()).await?;
        tracing::info!(target: "audit", event = "mfa_disabled", user_id = %user, by = "user");
        Ok(())
    }

    /// The caller's current password, then a second factor of theirs; returns the user.
    async fn check_password_and_factor(
        &self,
        caller: &VerifiedToken,
        password: &PresentedPassword,
        factor: &SecondFactor,
        requester: &Requester,
        failed_event: &'static str,
    ) -> Result<UserId, AppError> {
        let user = self.check_current_password(caller, password, requester, failed_event).await?.user.id;
        if !self.store.has_mfa(user).await? {
            return Err(AppError::FailedPrecondition("no second factor is enabled"));
        }
        self.check_factor_counted(caller, user, factor, requester).await?;
        Ok(user)
    }

    /// Checks a second factor of the caller, counted per (account, client) like a current
    /// password: UNAUTHENTICATED when wrong, and the session ends after as many failures.
    async fn check_factor_counted(
        &self,
        caller: &VerifiedToken,
        user: UserId,
        factor: &SecondFactor,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let ticket = self.admit_password_check(user, requester).await?;
        if !self.check_second_factor(user, factor).await? {
            self.attempt_failed(&ticket).await?;
            return Err(self.wrong_code(caller, user, ticket.pair_failures, requester).await);
        }
        self.attempt_succeeded(&ticket).await?;
        Ok(())
    }

    async fn wrong_code(
        &self,
        caller: &VerifiedToken,
        user: UserId,
        failures: i32,
        requester: &Requester,
    ) -> AppError {
        tracing::info!(target: "audit", event = "second_factor_failed", user_id = %user, failures,
            client = %requester.client);
        if failures >= PASSWORD_CHANGE_FAILURES_END_SESSION {
            return self
                .end_guessing_session(caller, user, "the code is incorrect; the session has ended")
                .await;
        }
        AppError::Unauthenticated(WRONG_CODE)
    }

    /// Whether `factor` is a valid second factor of `user` now, using it up: a TOTP code of a
    /// time step later than any accepted before, or an unused recovery code.
    async fn check_second_factor(&self, user: UserId, factor: &SecondFactor) -> Result<bool, AppError> {
        let now = self.clock.now();
        match factor {
            SecondFactor::Totp(code) => {
                let Some(credential) = self.store.totp_credential(user).await?.filter(|c| c.confirmed) else {
                    return Ok(false);
                };
                let secret = self.open_secret(user, &credential.sealed).await?;
                match matching_step(&totp(secret, None)?, code, now) {
                    Some(step) if step > credential.last_step => {
                        Ok(self.store.accept_totp_step(user, step).await?)
                    }
                    _ => Ok(false),
                }
            }
            SecondFactor::Recovery(code) => {
                Ok(self.store.use_recovery_code(user, &code.digest(), now).await?)
            }
        }
    }

    /// A login challenge for `user`, whose password was just proven.
    pub(super) async fn start_mfa_challenge(&self, user: UserId) -> Result<MfaChallenge, AppError> {
        let handle = OneTimeToken::generate();
        let now = self.clock.now();
        let expires_at = now + CHALLENGE_TTL;
        self.store.insert_mfa_challenge(&handle.digest(), user, now, expires_at).await?;
        Ok(MfaChallenge { handle: handle.into_secret(), expires_at })
    }

    /// The second step of a login: a live challenge and a second factor of its user start the
    /// session. A wrong code counts against the challenge (dead after
    /// [`MAX_CHALLENGE_FAILURES`]) and against the same throttle as a wrong password.
    pub async fn complete_login(
        &self,
        handle: &str,
        factor: &SecondFactor,
        requester: &Requester,
        origin: &SessionOrigin,
    ) -> Result<(User, super::SessionTokens), AppError> {
        let digest = OneTimeToken::digest_of(handle);
        let now = self.clock.now();
        let Some(user_id) = self.store.live_mfa_challenge(&digest, now, MAX_CHALLENGE_FAILURES).await? else {
            metrics::counter!(LOGINS, "outcome" => "invalid_challenge").increment(1);
            return Err(AppError::Unauthenticated(INVALID_CHALLENGE));
        };
        let user = match self.store.find_user_by_id(user_id).await? {
            Some(record) if record.user.is_active => record.user,
            _ => return Err(AppError::Unauthenticated(INVALID_CHALLENGE)),
        };
        let ticket = self.admit_login(&NormalizedEmail::of_stored(&user.email), requester).await?;
        if !self.check_second_factor(user.id, factor).await? {
            self.store.mfa_challenge_failed(&digest).await?;
            self.login_failed(&ticket).await?;
            metrics::counter!(LOGINS, "outcome" => "wrong_code").increment(1);
            tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason = "wrong second factor",
                client = %requester.client);
            return Err(AppError::Unauthenticated(WRONG_CODE));
        }
        self.attempt_succeeded(&ticket).await?;
        let tokens = self.start_session(&user, origin, Some(&digest)).await?;
        metrics::counter!(LOGINS, "outcome" => "success").increment(1);
        tracing::info!(target: "audit", event = "login", user_id = %user.id, session_id = %tokens.session_id,
            second_factor = true);
        Ok((user, tokens))
    }

    /// Renews the caller's session authentication with a second factor: a new access token
    /// with `amr` `["pwd", "otp"]` and `auth_time` now (and so do the session's later refreshes).
    pub async fn step_up(
        &self,
        caller: &VerifiedToken,
        factor: &SecondFactor,
        requester: &Requester,
    ) -> Result<IssuedAccessToken, AppError> {
        let user = self.active_account(&caller.claims).await?.user;
        if !self.store.has_mfa(user.id).await? {
            return Err(AppError::FailedPrecondition(
                "no second factor is enabled: enrol one (BeginTotpEnrollment) first",
            ));
        }
        self.check_factor_counted(caller, user.id, factor, requester).await?;
        let now = self.clock.now();
        let Some(expires_at) = self.store.step_up_session(caller.claims.sid, user.id, now).await? else {
            return Err(AppError::Unauthenticated("the session has ended"));
        };
        let auth = SessionAuth { at: now, second_factor: true };
        let access = self.issue_access_token(&user, caller.claims.sid, expires_at, now, auth)?;
        tracing::info!(target: "audit", event = "step_up", user_id = %user.id, session_id = %caller.claims.sid);
        Ok(access)
    }

    /// Whether the user has a confirmed second factor (for AdminService.GetUser).
    pub async fn admin_has_mfa(&self, user: UserId) -> Result<bool, AppError> {
        Ok(self.store.has_mfa(user).await?)
    }

    /// Removes the user's second factor for an operator (a user who lost both the app and the
    /// recovery codes); NOT_FOUND for an unknown user. Returns whether there was one.
    pub async fn admin_reset_mfa(&self, caller: &Caller, user: UserId) -> Result<bool, AppError> {
        self.admin_user(user).await?;
        let removed = self.store.remove_mfa(user, Some(&Actor::caller(caller)), self.clock.now()).await?;
        tracing::info!(target: "audit", event = "admin_mfa_reset", caller = %caller.name, via = caller.kind.as_str(),
            user_id = %user, removed);
        Ok(removed)
    }
}
