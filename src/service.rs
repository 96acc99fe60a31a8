//! The identity logic behind the RPCs: signup, login, sessions and token checks. It speaks in
//! domain types and `AppError`; the `rpc` layer converts to and from protobuf.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
    clock::Clock,
    domain::{Email, FullName, Password, PresentedPassword, normalize_email},
    error::AppError,
    passwords::PasswordHasher,
    store::{NewSession, NewUser, Store, StoreError, UserRecord},
    tokens::{
        AccessClaims, AccessTokenSubject, IssuedAccessToken, RefreshToken, TokenIssuer,
        TokenRejected,
    },
};

pub struct SignupInput {
    pub email: Email,
    pub password: Password,
    pub full_name: FullName,
}

/// The tokens of one session, as handed to the client once.
#[derive(Debug)]
pub struct SessionTokens {
    pub access: IssuedAccessToken,
    pub refresh: RefreshToken,
    pub refresh_expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

pub struct Identity {
    store: Store,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
    clock: Clock,
    refresh_ttl: TimeDelta,
}

impl Identity {
    pub fn new(
        store: Store,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        clock: Clock,
        refresh_ttl: Duration,
    ) -> Self {
        let refresh_ttl = TimeDelta::from_std(refresh_ttl).unwrap_or(TimeDelta::MAX);
        Self {
            store,
            hasher,
            tokens,
            clock,
            refresh_ttl,
        }
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn signup(&self, input: SignupInput) -> Result<UserRecord, AppError> {
        let hash = self.hasher.hash(&input.password).await?;
        let email_lower = input.email.normalized();
        let user = NewUser {
            id: Uuid::new_v4(),
            email: input.email.as_str(),
            email_lower: &email_lower,
            full_name: input.full_name.as_str(),
            password_hash: hash.expose(),
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
        email: &str,
        password: &PresentedPassword,
    ) -> Result<(UserRecord, SessionTokens), AppError> {
        let user = self
            .store
            .find_user_by_email(&normalize_email(email))
            .await?;
        let verified = self
            .hasher
            .verify(password, user.as_ref().map(|u| &u.password_hash))
            .await?;
        let user = match user {
            Some(user) if verified && user.is_active => user,
            Some(user) => {
                let reason = if verified {
                    "account deactivated"
                } else {
                    "wrong password"
                };
                tracing::info!(target: "audit", event = "login_failed", user_id = %user.id, reason);
                return Err(AppError::InvalidCredentials);
            }
            None => {
                tracing::info!(target: "audit", event = "login_failed", reason = "unknown email");
                return Err(AppError::InvalidCredentials);
            }
        };
        let tokens = self.start_session(&user).await?;
        tracing::info!(target: "audit", event = "login", user_id = %user.id);
        Ok((user, tokens))
    }

    async fn start_session(&self, user: &UserRecord) -> Result<SessionTokens, AppError> {
        let now = self.clock.now();
        let refresh = RefreshToken::generate();
        let session = NewSession {
            id: Uuid::new_v4(),
            user_id: user.id,
            refresh_token_digest: &refresh.digest(),
            created_at: now,
            expires_at: now + self.refresh_ttl,
        };
        self.store.insert_session(&session).await?;
        let access = self.issue_access_token(user, session.id, session.expires_at, now)?;
        Ok(SessionTokens {
            access,
            refresh,
            refresh_expires_at: session.expires_at,
            issued_at: now,
        })
    }

    fn issue_access_token(
        &self,
        user: &UserRecord,
        session_id: Uuid,
        session_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<IssuedAccessToken, AppError> {
        let subject = AccessTokenSubject {
            user_id: user.id,
            email: &user.email,
            full_name: &user.full_name,
            session_id,
            session_expires_at,
        };
        self.tokens.issue(&subject, now).map_err(AppError::internal)
    }

    /// The claims of `token` if it is active now: well signed, ours, unexpired and unrevoked.
    pub fn validate(&self, token: &str) -> Result<AccessClaims, TokenRejected> {
        self.tokens.verify(token, self.clock.now())
    }

    /// The account behind an active token; UNAUTHENTICATED if it is gone or deactivated.
    pub async fn current_user(&self, claims: &AccessClaims) -> Result<UserRecord, AppError> {
        let user_id = claims
            .user_id()
            .ok_or(AppError::Unauthenticated("invalid access token"))?;
        match self.store.find_user_by_id(user_id).await? {
            Some(user) if user.is_active => Ok(user),
            _ => Err(AppError::Unauthenticated(
                "the account no longer exists or is deactivated",
            )),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
