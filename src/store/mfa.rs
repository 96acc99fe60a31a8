//! The second-factor tables: `totp_credentials` (one sealed RFC 6238 secret per user, with the
//! last accepted time step), `recovery_codes` (SHA-256 digests) and `mfa_challenges` (the step
//! between a right password and the tokens). Enabling and disabling write their user event in
//! the same transaction; completing a challenge starts the session in the same transaction
//! that uses the challenge up, so a challenge yields at most one session.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    NewSession, Store, StoreError, UserRecord,
    events::AppendEvents,
    sessions::{Revocation, RevokeInTransaction, Target, insert_session_query},
    users::{UserRow, user_columns},
    with_pool,
};
use crate::{
    domain::{Actor, NormalizedEmail, RevocationReason, SessionId, UserEvent, UserId},
    sealing::Sealed,
};

/// An account as a login reads it: the user with their password hash, and whether they have a
/// confirmed second factor.
#[derive(Debug, Clone)]
pub struct LoginAccount {
    pub record: UserRecord,
    pub second_factor: bool,
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    #[sqlx(flatten)]
    user: UserRow,
    second_factor: bool,
}

/// What confirming an enrolment did.
#[derive(Debug)]
pub enum TotpConfirmation {
    /// The code was not right for a pending enrolment (or its step was used already).
    Refused,
    /// The second factor is on; the user's other sessions, opened with the password alone,
    /// ended (`None`: there were none).
    Enabled(Option<Revocation>),
}

/// A user's TOTP credential as stored.
#[derive(Debug, Clone)]
pub struct TotpCredential {
    pub sealed: Sealed,
    pub confirmed: bool,
    /// The last time step a code was accepted for (0: none yet).
    pub last_step: i64,
}

/// What starting an enrolment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpEnrollment {
    /// A pending (unconfirmed) credential now holds the new secret.
    Pending,
    /// The user has a confirmed credential already: nothing changed.
    AlreadyEnabled,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    secret_sealed: Vec<u8>,
    nonce: Vec<u8>,
    key_id: String,
    confirmed_at: Option<DateTime<Utc>>,
    last_step: i64,
}

const INSERT_CODE: &str = "INSERT INTO recovery_codes (user_id, code_digest, created_at) VALUES ($1, $2, $3)";
const DELETE_CODES: &str = "DELETE FROM recovery_codes WHERE user_id = $1";

/// Replaces the user's recovery codes, inside a caller's transaction.
macro_rules! replace_codes {
    ($tx:expr, $user:expr, $digests:expr, $now:expr) => {{
        sqlx::query(DELETE_CODES).bind($user).execute(&mut *$tx).await?;
        for digest in $digests {
            sqlx::query(INSERT_CODE).bind($user).bind(&digest[..]).bind($now).execute(&mut *$tx).await?;
        }
    }};
}

impl Store {
    /// Stores `sealed` as the user's pending TOTP secret (replacing an earlier pending one),
    /// unless the user has a confirmed credential.
    pub async fn begin_totp(
        &self,
        user: UserId,
        sealed: &Sealed,
        now: DateTime<Utc>,
    ) -> Result<TotpEnrollment, StoreError> {
        const SQL: &str = "INSERT INTO totp_credentials (user_id, secret_sealed, nonce, key_id, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, nonce = excluded.nonce,
                 key_id = excluded.key_id, created_at = excluded.created_at, last_step = 0
             WHERE totp_credentials.confirmed_at IS NULL
             RETURNING user_id";
        let written: Option<Uuid> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(user.into_uuid())
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .bind(&sealed.key_id)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
        Ok(if written.is_some() { TotpEnrollment::Pending } else { TotpEnrollment::AlreadyEnabled })
    }

    /// The user's TOTP credential, pending or confirmed.
    pub async fn totp_credential(&self, user: UserId) -> Result<Option<TotpCredential>, StoreError> {
        const SQL: &str = "SELECT secret_sealed, nonce, key_id, confirmed_at, last_step FROM totp_credentials WHERE user_id = $1";
        let row: Option<CredentialRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).bind(user.into_uuid()).fetch_optional(pool).await)?;
        Ok(row.map(|row| TotpCredential {
            sealed: Sealed { ciphertext: row.secret_sealed, nonce: row.nonce, key_id: row.key_id },
            confirmed: row.confirmed_at.is_some(),
            last_step: row.last_step,
        }))
    }

    /// The account a login names, with whether it has a confirmed second factor, in one
    /// statement: a second factor costs a login no extra round trip. Every login with a known
    /// email makes the same index probe whether or not the account has one, and the answer is
    /// only acted on once the password is proven.
    pub async fn find_login_account(
        &self,
        email: &NormalizedEmail,
    ) -> Result<Option<LoginAccount>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            ", EXISTS (SELECT 1 FROM totp_credentials
                 WHERE totp_credentials.user_id = users.id AND confirmed_at IS NOT NULL) AS second_factor
             FROM users WHERE email_lower = $1 AND deleted_at IS NULL"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, LoginRow>(SQL)
            .bind(email.as_str())
            .fetch_optional(pool)
            .await)?;
        Ok(row
            .map(|row| LoginAccount { record: UserRecord::from(row.user), second_factor: row.second_factor }))
    }

    /// Whether the user has a confirmed second factor.
    pub async fn has_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL";
        let count: i64 =
            with_pool!(self, pool => sqlx::query_scalar(SQL).bind(user.into_uuid()).fetch_one(pool).await)?;
        Ok(count > 0)
    }

    /// Accepts the time step `step` for the user's confirmed credential if it is later than
    /// every step accepted before: of two requests with the same code, one wins.
    pub async fn accept_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE totp_credentials SET last_step = $2
             WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(user.into_uuid())
            .bind(step)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    /// Re-seals the user's secret under the current key (after a key rotation).
    pub async fn reseal_totp(&self, user: UserId, sealed: &Sealed) -> Result<(), StoreError> {
        const SQL: &str =
            "UPDATE totp_credentials SET secret_sealed = $2, nonce = $3, key_id = $4 WHERE user_id = $1";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(user.into_uuid())
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .bind(&sealed.key_id)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Confirms the user's pending credential with the code of `step`, stores the digests of
    /// the new recovery codes and records `mfa_enabled`, in one transaction. `false` when
    /// there is no pending credential (or the step was used).
    pub async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        code_digests: &[[u8; 32]],
        enrolling_session: SessionId,
        now: DateTime<Utc>,
    ) -> Result<TotpConfirmation, StoreError> {
        const CONFIRM: &str = "UPDATE totp_credentials SET confirmed_at = $2, last_step = $3
             WHERE user_id = $1 AND confirmed_at IS NULL AND last_step < $3";
        let uuid = user.into_uuid();
        let confirmation = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(CONFIRM).bind(uuid).bind(now).bind(step).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Ok(TotpConfirmation::Refused);
            }
            replace_codes!(tx, uuid, code_digests, now);
            tx.append_events(&[(user, UserEvent::MfaEnabled)], now).await?;
            let others = Target::User { user_id: user, except: Some(enrolling_session) };
            let revocation = tx.revoke(others, RevocationReason::MfaEnabled, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(TotpConfirmation::Enabled(revocation))
        })?;
        Ok(confirmation)
    }

    /// Replaces the user's recovery codes (the old ones stop working), in one transaction.
    pub async fn replace_recovery_codes(
        &self,
        user: UserId,
        code_digests: &[[u8; 32]],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let uuid = user.into_uuid();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            replace_codes!(tx, uuid, code_digests, now);
            tx.commit().await
        })?;
        Ok(())
    }

    /// Uses up one of the user's recovery codes; `false` when it is not an unused one of theirs.
    pub async fn use_recovery_code(
        &self,
        user: UserId,
        digest: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE recovery_codes SET used_at = $3
             WHERE user_id = $1 AND code_digest = $2 AND used_at IS NULL";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(user.into_uuid())
            .bind(&digest[..])
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    /// Removes the user's second factor (credential, recovery codes, open challenges) and, if
    /// it was enabled, records `mfa_disabled`, in one transaction. Returns whether a confirmed
    /// credential was removed. `actor` is the operator who removed it (`None`: the owner).
    pub async fn remove_mfa(
        &self,
        user: UserId,
        actor: Option<&Actor>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const CREDENTIAL: &str = "DELETE FROM totp_credentials WHERE user_id = $1 RETURNING confirmed_at";
        const CHALLENGES: &str = "DELETE FROM mfa_challenges WHERE user_id = $1";
        let uuid = user.into_uuid();
        let removed = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let confirmed: Option<Option<DateTime<Utc>>> =
                sqlx::query_scalar(CREDENTIAL).bind(uuid).fetch_optional(&mut *tx).await?;
            sqlx::query(DELETE_CODES).bind(uuid).execute(&mut *tx).await?;
            sqlx::query(CHALLENGES).bind(uuid).execute(&mut *tx).await?;
            let was_enabled = confirmed.flatten().is_some();
            if was_enabled {
                tx.append_events_by(&[(user, UserEvent::MfaDisabled)], actor, now).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(was_enabled)
        })?;
        Ok(removed)
    }

    /// Records a login challenge for `user`, known by the digest of its handle.
    pub async fn insert_mfa_challenge(
        &self,
        digest: &[u8; 32],
        user: UserId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO mfa_challenges (handle_digest, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(&digest[..])
            .bind(user.into_uuid())
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// The user of a live challenge: unused, unexpired, with fewer than `max_failures` wrong
    /// codes.
    pub async fn live_mfa_challenge(
        &self,
        digest: &[u8; 32],
        now: DateTime<Utc>,
        max_failures: i32,
    ) -> Result<Option<UserId>, StoreError> {
        const SQL: &str = "SELECT user_id FROM mfa_challenges
             WHERE handle_digest = $1 AND consumed_at IS NULL AND expires_at > $2 AND failures < $3";
        let user: Option<Uuid> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(&digest[..])
            .bind(now)
            .bind(max_failures)
            .fetch_optional(pool)
            .await)?;
        Ok(user.map(UserId::from_uuid))
    }

    /// Counts a wrong code against the challenge.
    pub async fn mfa_challenge_failed(&self, digest: &[u8; 32]) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE mfa_challenges SET failures = failures + 1 WHERE handle_digest = $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(&digest[..]).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Uses up the challenge and starts `session` in one transaction; `false` (and no
    /// session) when the challenge is no longer live, e.g. a parallel call used it first.
    pub async fn complete_mfa_challenge(
        &self,
        digest: &[u8; 32],
        max_failures: i32,
        session: &NewSession<'_>,
    ) -> Result<bool, StoreError> {
        const CONSUME: &str = "UPDATE mfa_challenges SET consumed_at = $2
             WHERE handle_digest = $1 AND user_id = $3 AND consumed_at IS NULL AND expires_at > $2 AND failures < $4";
        let completed = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(CONSUME)
                .bind(&digest[..])
                .bind(session.created_at)
                .bind(session.user_id.into_uuid())
                .bind(max_failures)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            insert_session_query!(session).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        })?;
        Ok(completed)
    }

    /// Deletes challenges that expired before `before`. Returns how many.
    pub async fn purge_mfa_challenges(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM mfa_challenges WHERE handle_digest IN
             (SELECT handle_digest FROM mfa_challenges WHERE expires_at < $1 LIMIT $2)";
        self.delete_in_batches(SQL, before).await
    }
}
