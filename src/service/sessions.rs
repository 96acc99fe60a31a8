//! Sessions: start one at login, rotate its refresh token, end it.

use chrono::{DateTime, Utc};

use super::Identity;
use crate::{
    domain::{RevocationReason, SessionId, SessionOrigin, User},
    error::AppError,
    store::{NewSession, Rotation, SessionAuth},
    tokens::{AccessTokenSubject, IssuedAccessToken, RefreshToken},
};

/// The tokens of one session, as handed to the client once.
#[derive(Debug)]
pub struct SessionTokens {
    pub session_id: SessionId,
    pub access: IssuedAccessToken,
    pub refresh: RefreshToken,
    pub refresh_expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

const INVALID_REFRESH_TOKEN: &str = "invalid or expired refresh token";
/// Said for a login challenge that cannot be completed: unknown, used, expired or failed.
pub(super) const INVALID_CHALLENGE: &str = "invalid or expired login challenge: log in again";
/// Wrong codes after which a login challenge is dead.
pub(super) const MAX_CHALLENGE_FAILURES: i32 = 5;

impl Identity {
    /// Starts a session of `user`: at once after a password login, or by completing the login
    /// challenge whose handle has the digest `challenge` (in the same transaction that uses the
    /// challenge up, so one challenge never yields two sessions).
    pub(super) async fn start_session(
        &self,
        user: &User,
        origin: &SessionOrigin,
        challenge: Option<&[u8; 32]>,
    ) -> Result<SessionTokens, AppError> {
        let now = self.clock.now();
        let refresh = RefreshToken::generate();
        let session = NewSession {
            id: SessionId::new(),
            user_id: user.id,
            refresh_token_digest: &refresh.digest(),
            created_at: now,
            expires_at: now + self.refresh_ttl,
            origin,
            second_factor: challenge.is_some(),
        };
        match challenge {
            None => self.store.insert_session(&session).await?,
            Some(digest) => {
                if !self.store.complete_mfa_challenge(digest, MAX_CHALLENGE_FAILURES, &session).await? {
                    return Err(AppError::Unauthenticated(INVALID_CHALLENGE));
                }
            }
        }
        let auth = SessionAuth { at: now, second_factor: session.second_factor };
        let access = self.issue_access_token(user, session.id, session.expires_at, now, auth)?;
        Ok(SessionTokens {
            session_id: session.id,
            access,
            refresh,
            refresh_expires_at: session.expires_at,
            issued_at: now,
        })
    }

    pub(super) fn issue_access_token(
        &self,
        user: &User,
        session_id: SessionId,
        session_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        auth: SessionAuth,
    ) -> Result<IssuedAccessToken, AppError> {
        let subject = AccessTokenSubject {
            user_id: user.id,
            email: &user.email,
            full_name: &user.full_name,
            email_verified: user.email_verified(),
            session_id,
            session_expires_at,
            roles: &user.roles,
            auth_time: auth.at,
            second_factor: auth.second_factor,
        };
        self.tokens.issue(&subject, now).map_err(AppError::internal)
    }

    /// Exchanges a refresh token for a new access token and a new refresh token of the same
    /// session. The presented token stops working at once; presenting it again revokes the
    /// session. Access tokens already issued keep working until their `exp`.
    pub async fn refresh(&self, presented: &RefreshToken) -> Result<SessionTokens, AppError> {
        let now = self.clock.now();
        let next = RefreshToken::generate();
        match self.store.rotate_refresh_token(&presented.digest(), &next.digest(), now).await? {
            Rotation::Rotated { session_id, expires_at, user, auth } => {
                if !user.is_active {
                    if let Some(revocation) = self
                        .store
                        .revoke_session(session_id, RevocationReason::AccountDeactivated, now)
                        .await?
                    {
                        self.revoked_here(&revocation);
                    }
                    return Err(AppError::Unauthenticated(INVALID_REFRESH_TOKEN));
                }
                let access = self.issue_access_token(&user, session_id, expires_at, now, auth)?;
                tracing::info!(target: "audit", event = "refresh", user_id = %user.id, %session_id);
                Ok(SessionTokens {
                    session_id,
                    access,
                    refresh: next,
                    refresh_expires_at: expires_at,
                    issued_at: now,
                })
            }
            Rotation::Reused { session_id } => {
                let revocation =
                    self.store.revoke_session(session_id, RevocationReason::RefreshTokenReused, now).await?;
                metrics::counter!(crate::metrics::REFRESH_TOKEN_REUSE).increment(1);
                if let Some(revocation) = &revocation {
                    self.revoked_here(revocation);
                }
                tracing::warn!(target: "audit", event = "refresh_token_reuse", %session_id,
                    "a rotated refresh token was presented again: session revoked");
                Err(AppError::Unauthenticated(INVALID_REFRESH_TOKEN))
            }
            Rotation::Refused => Err(AppError::Unauthenticated(INVALID_REFRESH_TOKEN)),
        }
    }

    /// Ends the session `presented` belongs to. Idempotent, and quiet about unknown tokens
    /// (RFC 7009 §2.2): the caller's goal, a dead token, is met either way.
    pub async fn logout(&self, presented: &RefreshToken) -> Result<(), AppError> {
        let now = self.clock.now();
        if let Some(revocation) = self.store.revoke_session_by_refresh_token(&presented.digest(), now).await?
        {
            self.revoked_here(&revocation);
            for session_id in &revocation.session_ids {
                tracing::info!(target: "audit", event = "logout", %session_id);
            }
        }
        Ok(())
    }
}
