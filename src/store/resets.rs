//! The `password_reset_tokens` table: a reset request stores a token's digest and queues its
//! message in one transaction; a reset consumes the token, sets the password, clears the
//! email's lock and ends every session in another. A request runs the same statements
//! whether or not the email has an account (and whether or not it is over its hourly
//! allowance), so neither its answer nor its work tells the two apart.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Store, StoreError,
    outbox::{INSERT_IF, payload},
    sessions::{Revocation, RevokeInTransaction, Target},
    with_pool,
};
use crate::domain::{MailContent, MailId, MailKind, NormalizedEmail, PasswordHash, UserId};

/// What a reset request asks of the store.
pub struct ResetRequest<'a> {
    pub email: &'a NormalizedEmail,
    /// SHA-256 of the token.
    pub digest: &'a [u8; 32],
    /// The message, for whichever account answers; its name is filled in from the account.
    pub content: MailContent,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_per_hour: u32,
}

/// What a reset request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetRequested {
    /// A token was stored and its message queued.
    Queued { user_id: UserId },
    /// The account's hourly allowance of messages is used up: nothing stored.
    Throttled { user_id: UserId },
    /// No active account has this email: nothing stored.
    NoAccount,
}

/// The outcome, and how many statements ran (the same on every path; tests compare it).
#[derive(Debug, Clone)]
pub struct ResetRequestWork {
    pub outcome: ResetRequested,
    pub statements: u32,
}

#[derive(sqlx::FromRow)]
struct Account {
    id: Uuid,
    email: String,
    full_name: String,
}

impl Store {
    pub async fn request_password_reset(
        &self,
        request: ResetRequest<'_>,
    ) -> Result<ResetRequestWork, StoreError> {
        const ACCOUNT: &str = "SELECT id, email, full_name FROM users WHERE email_lower = $1 AND is_active";
        // The hour's messages of this kind to the address the account has now (none for an
        // address nobody has, which is still counted, over nothing).
        const RECENT: &str =
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND kind = $2 AND created_at > $3";
        const SUPERSEDE: &str = "DELETE FROM password_reset_tokens WHERE user_id = $1";
        const STORE: &str =
            "INSERT INTO password_reset_tokens (token_digest, user_id, created_at, expires_at)
             SELECT $1, $2, $3, $4 WHERE $5";
        let hour_ago = request.now - chrono::TimeDelta::hours(1);
        let work = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let account: Option<Account> =
                sqlx::query_as(ACCOUNT).bind(request.email.as_str()).fetch_optional(&mut *tx).await?;
            let recipient = account.as_ref().map_or_else(|| request.email.as_str().to_owned(), |a| a.email.clone());
            let recent: i64 = sqlx::query_scalar(RECENT)
                .bind(&recipient)
                .bind(MailKind::PasswordReset.as_str())
                .bind(hour_ago)
                .fetch_one(&mut *tx)
                .await?;
            let allowed = recent < i64::from(request.max_per_hour);
            let user_id = account.as_ref().map(|a| a.id);
            let proceed = allowed && user_id.is_some();
            // With no account these match nothing and insert nothing, at the same cost.
            sqlx::query(SUPERSEDE).bind(user_id.filter(|_| allowed)).execute(&mut *tx).await?;
            sqlx::query(STORE)
                .bind(&request.digest[..])
                .bind(user_id)
                .bind(request.now)
                .bind(request.expires_at)
                .bind(proceed)
                .execute(&mut *tx)
                .await?;
            let mut content = request.content.clone();
            if let Some(account) = &account {
                content.name = account.full_name.clone();
            }
            sqlx::query(INSERT_IF)
                .bind(MailId::new().into_uuid())
                .bind(MailKind::PasswordReset.as_str())
                .bind(&recipient)
                .bind(payload(&content)?)
                .bind(request.now)
                .bind(proceed)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let outcome = match (user_id, allowed) {
                (Some(id), true) => ResetRequested::Queued { user_id: UserId::from_uuid(id) },
                (Some(id), false) => ResetRequested::Throttled { user_id: UserId::from_uuid(id) },
                (None, _) => ResetRequested::NoAccount,
            };
            Ok::<_, sqlx::Error>(ResetRequestWork { outcome, statements: 5 })
        })?;
        Ok(work)
    }

    /// Consumes the reset token with this digest (unused and unexpired), sets the new password,
    /// clears the lock of the account's email (`login_failures`) and ends every session, in one
    /// transaction. `None` when the token is unknown, used, expired or superseded, or its
    /// account is gone or deactivated. Of two concurrent calls with one token, one gets it:
    /// the consuming UPDATE locks the row, and the second finds `used_at` set.
    pub async fn reset_password(
        &self,
        digest: &[u8; 32],
        new_hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, Option<Revocation>)>, StoreError> {
        const CONSUME: &str = "UPDATE password_reset_tokens SET used_at = $1
             WHERE token_digest = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id";
        const SET_PASSWORD: &str = "UPDATE users SET password_hash = $1, updated_at = $2
             WHERE id = $3 AND is_active RETURNING email_lower";
        // The email's lock and run of failures end; per-client delays stay, so an attacker's
        // addresses are not handed fresh free guesses by the owner's reset.
        const CLEAR_LOCKOUT: &str = "DELETE FROM login_failures WHERE email_lower = $1";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let user: Option<Uuid> =
                sqlx::query_scalar(CONSUME).bind(now).bind(&digest[..]).fetch_optional(&mut *tx).await?;
            let Some(user_id) = user else { return Ok(None) };
            let email_lower: Option<String> = sqlx::query_scalar(SET_PASSWORD)
                .bind(new_hash.expose())
                .bind(now)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(email_lower) = email_lower else { return Ok(None) };
            sqlx::query(CLEAR_LOCKOUT).bind(email_lower).execute(&mut *tx).await?;
            let user_id = UserId::from_uuid(user_id);
            let revocation = tx.revoke(Target::User { user_id, except: None }, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((user_id, revocation)))
        })?;
        Ok(outcome)
    }

    /// Deletes reset tokens that expired before `before`.
    pub async fn purge_reset_tokens(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM password_reset_tokens WHERE token_digest IN
             (SELECT token_digest FROM password_reset_tokens WHERE expires_at < $1 LIMIT $2)";
        self.delete_in_batches(SQL, before).await
    }
}
