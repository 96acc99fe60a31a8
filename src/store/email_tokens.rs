//! The `email_tokens` table: single-use tokens sent by email (password reset, verification of
//! the account's address, verification of a new address), each stored only as its digest and
//! queued with its message in one transaction; a newer token of one user and purpose deletes
//! the older. Consuming one is a single conditional UPDATE, so of two concurrent calls with one
//! token exactly one gets it. Reset tokens are issued by the mail worker answering a recorded
//! request (`reset_requests`), never on the request's own path.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

use super::{
    Store, StoreError,
    events::AppendEvents,
    outbox::{MailRoute, QueueMail},
    sessions::{Revocation, RevokeInTransaction, Target},
    users::{InsertUser, NewUser, UserRecord},
    with_pool,
};
use crate::domain::{
    Email, LinkPurpose, MailContent, MailKind, NewMail, NormalizedEmail, PasswordHash, RevocationReason,
    User, UserEvent, UserId,
};

/// A token to store and the message that carries it, for [`Store`]'s issuing methods.
pub struct LinkToken<'a> {
    /// SHA-256 of the token.
    pub digest: &'a [u8; 32],
    /// The message; its name is filled in from the account.
    pub content: MailContent,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Messages of this kind one address may get per hour.
    pub max_per_hour: u32,
}

/// What a request for a verification message (or a notice) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRequested {
    Queued,
    /// The address's hourly allowance of messages of this kind is used up: nothing stored.
    Throttled,
    /// Nothing to verify: the account's address is verified already.
    AlreadyVerified,
    /// No active account.
    NoAccount,
}

/// What a verification token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailVerified {
    /// The account's current address is verified.
    Verified { user_id: UserId, email: String },
    /// The account moved to the new address it had verified; the old one was told.
    Changed { user_id: UserId, old_email: String, new_email: String },
}

#[derive(sqlx::FromRow)]
pub(super) struct Account {
    pub(super) id: Uuid,
    pub(super) email: String,
    pub(super) full_name: String,
}

/// The statements every token flow shares, written once for both connection types: the hourly
/// allowance of an address, and storing a token with its message.
pub(super) trait LinkStatements {
    /// Messages of `kind` queued to `recipient` in the hour before `now`, counted up to
    /// `limit` (the allowance): the work is bounded by the allowance, not by the history of
    /// an address that is asked for again and again.
    async fn mail_this_hour(
        &mut self,
        recipient: &str,
        kind: MailKind,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<i64, sqlx::Error>;

    /// Deletes `user`'s older tokens of `purpose`, stores this one (for `email`, when it proves
    /// an address) and queues `mail` with it.
    async fn issue_link(
        &mut self,
        route: MailRoute,
        user: Uuid,
        purpose: LinkPurpose,
        email: Option<&str>,
        token: &LinkToken<'_>,
        mail: &NewMail,
    ) -> Result<(), sqlx::Error>;
}

const MAIL_THIS_HOUR: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM mail_outbox
     WHERE recipient = $1 AND kind = $2 AND created_at > $3 LIMIT $4) AS recent";
const SUPERSEDE: &str = "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2";
const STORE_TOKEN: &str =
    "INSERT INTO email_tokens (token_digest, purpose, user_id, email, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6)";

macro_rules! link_statements {
    ($connection:ty) => {
        impl LinkStatements for $connection {
            async fn mail_this_hour(
                &mut self,
                recipient: &str,
                kind: MailKind,
                now: DateTime<Utc>,
                limit: u32,
            ) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(MAIL_THIS_HOUR)
                    .bind(recipient)
                    .bind(kind.as_str())
                    .bind(now - TimeDelta::hours(1))
                    .bind(i64::from(limit))
                    .fetch_one(&mut *self)
                    .await
            }

            async fn issue_link(
                &mut self,
                route: MailRoute,
                user: Uuid,
                purpose: LinkPurpose,
                email: Option<&str>,
                token: &LinkToken<'_>,
                mail: &NewMail,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(SUPERSEDE).bind(user).bind(purpose.as_str()).execute(&mut *self).await?;
                sqlx::query(STORE_TOKEN)
                    .bind(&token.digest[..])
                    .bind(purpose.as_str())
                    .bind(user)
                    .bind(email)
                    .bind(token.now)
                    .bind(token.expires_at)
                    .execute(&mut *self)
                    .await?;
                self.queue_mail(route, UserId::from_uuid(user), mail, token.now).await
            }
        }
    };
}
link_statements!(PgConnection);
link_statements!(SqliteConnection);

/// Consumes an unused, unexpired token of one of two purposes: `(purpose, user, email)`.
const CONSUME: &str = "UPDATE email_tokens SET used_at = $1
     WHERE token_digest = $2 AND purpose IN ($3, $4) AND user_id IS NOT NULL AND used_at IS NULL AND expires_at > $1
     RETURNING purpose, user_id, email";

impl Store {
    /// Inserts a new account and, in the same transaction, its verification token and message
    /// (to the address it signed up with). `StoreError::UniqueViolation` as for `insert_user`.
    pub async fn insert_user_to_verify(
        &self,
        user: &NewUser<'_>,
        token: LinkToken<'_>,
    ) -> Result<User, StoreError> {
        let created = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = tx.insert_user(user).await?;
            let mut content = token.content.clone();
            content.name = user.full_name.as_str().to_owned();
            let mail = NewMail { kind: MailKind::VerifyEmail, recipient: user.email.as_str().to_owned(), content };
            let id = user.id.into_uuid();
            let route = self.mail_route();
            tx.issue_link(route, id, LinkPurpose::VerifyEmail, Some(user.email.as_str()), &token, &mail).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row)
        })?;
        Ok(UserRecord::from(created).user)
    }

    /// A verification message for the account's current address (`new_email` `None`: unless
    /// it is verified already), or for `new_email`, to move the account there when its link is
    /// opened ([`Store::verify_email`]). Nothing is stored beyond the recipient's hourly
    /// allowance.
    pub async fn request_verification(
        &self,
        user_id: UserId,
        new_email: Option<&Email>,
        token: LinkToken<'_>,
    ) -> Result<LinkRequested, StoreError> {
        const ACCOUNT: &str =
            "SELECT id, email, full_name, email_verified FROM users WHERE id = $1 AND is_active";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let account: Option<(Uuid, String, String, bool)> =
                sqlx::query_as(ACCOUNT).bind(user_id.into_uuid()).fetch_optional(&mut *tx).await?;
            let Some((id, email, full_name, verified)) = account else { return Ok(LinkRequested::NoAccount) };
            let (purpose, recipient) = match new_email {
                Some(new_email) => (LinkPurpose::ChangeEmail, new_email.as_str().to_owned()),
                None if verified => return Ok(LinkRequested::AlreadyVerified),
                None => (LinkPurpose::VerifyEmail, email),
            };
            if tx.mail_this_hour(&recipient, MailKind::VerifyEmail, token.now, token.max_per_hour).await?
                >= i64::from(token.max_per_hour)
            {
                return Ok(LinkRequested::Throttled);
            }
            let mut content = token.content.clone();
            content.name = full_name;
            let mail = NewMail { kind: MailKind::VerifyEmail, recipient: recipient.clone(), content };
            tx.issue_link(self.mail_route(), id, purpose, Some(&recipient), &token, &mail).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(LinkRequested::Queued)
        })?;
        Ok(outcome)
    }

    /// Consumes a verification token: marks the account's address verified, or moves the
    /// account to the new address the token proves (uniqueness, look-alikes included, checked
    /// by the database now; `StoreError::UniqueViolation` if it was taken meanwhile, and
    /// nothing changes), tells the old address and ends the account's other email tokens.
    /// `None` when the token is unknown, used, expired or superseded, or no longer matches
    /// the account (its address changed since, or it is deactivated).
    pub async fn verify_email(
        &self,
        digest: &[u8; 32],
        notice: MailContent,
        now: DateTime<Utc>,
    ) -> Result<Option<EmailVerified>, StoreError> {
        const MARK_VERIFIED: &str = "UPDATE users SET email_verified = TRUE, email_verified_at = $1
             WHERE id = $2 AND email = $3 AND is_active";
        const ACCOUNT: &str = "SELECT id, email, full_name FROM users WHERE id = $1 AND is_active";
        const MOVE: &str = "UPDATE users SET email = $1, email_lower = $2, email_skeleton = $3,
                 email_verified = TRUE, email_verified_at = $4, updated_at = $4
             WHERE id = $5";
        // Links sent to the old address (a reset among them) must not outlive the move.
        const END_TOKENS: &str = "DELETE FROM email_tokens WHERE user_id = $1 AND used_at IS NULL";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let consumed: Option<(String, Uuid, Option<String>)> = sqlx::query_as(CONSUME)
                .bind(now)
                .bind(&digest[..])
                .bind(LinkPurpose::VerifyEmail.as_str())
                .bind(LinkPurpose::ChangeEmail.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some((purpose, user, Some(email))) = consumed else { return Ok(None) };
            let user_id = UserId::from_uuid(user);
            if purpose == LinkPurpose::VerifyEmail.as_str() {
                let marked =
                    sqlx::query(MARK_VERIFIED).bind(now).bind(user).bind(&email).execute(&mut *tx).await?;
                if marked.rows_affected() == 0 {
                    return Ok(None);
                }
                tx.append_events(&[(user_id, UserEvent::EmailVerified { email: email.clone() })], now).await?;
                tx.commit().await?;
                return Ok(Some(EmailVerified::Verified { user_id, email }));
            }
            let account: Option<Account> = sqlx::query_as(ACCOUNT).bind(user).fetch_optional(&mut *tx).await?;
            let Some(account) = account else { return Ok(None) };
            let Ok(new_email) = Email::parse("email", &email) else { return Ok(None) };
            let normalized = new_email.normalized();
            sqlx::query(MOVE)
                .bind(new_email.as_str())
                .bind(normalized.as_str())
                .bind(normalized.confusable_key().as_str())
                .bind(now)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            sqlx::query(END_TOKENS).bind(user).execute(&mut *tx).await?;
            let moved = [
                (user_id, UserEvent::UserUpdated { email: Some(email.clone()), full_name: None }),
                (user_id, UserEvent::EmailVerified { email: email.clone() }),
            ];
            tx.append_events(&moved, now).await?;
            let mut content = notice.clone();
            content.name = account.full_name;
            let mail = NewMail { kind: MailKind::EmailChanged, recipient: account.email.clone(), content };
            tx.queue_mail(self.mail_route(), user_id, &mail, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(EmailVerified::Changed { user_id, old_email: account.email, new_email: email }))
        })?;
        Ok(outcome)
    }

    /// Tells the owner of the account with this email that someone signed up with it, unless
    /// the address's hourly allowance of such notices is used up. `None` when no account has
    /// exactly this (normalized) address.
    pub async fn notify_existing_account(
        &self,
        email: &NormalizedEmail,
        content: MailContent,
        now: DateTime<Utc>,
        max_per_hour: u32,
    ) -> Result<Option<(UserId, LinkRequested)>, StoreError> {
        const ACCOUNT: &str = "SELECT id, email, full_name FROM users WHERE email_lower = $1";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let account: Option<Account> =
                sqlx::query_as(ACCOUNT).bind(email.as_str()).fetch_optional(&mut *tx).await?;
            let Some(account) = account else { return Ok(None) };
            let user_id = UserId::from_uuid(account.id);
            if tx.mail_this_hour(&account.email, MailKind::AccountExists, now, max_per_hour).await?
                >= i64::from(max_per_hour)
            {
                return Ok(Some((user_id, LinkRequested::Throttled)));
            }
            let mut content = content.clone();
            content.name = account.full_name;
            let mail = NewMail { kind: MailKind::AccountExists, recipient: account.email, content };
            tx.queue_mail(self.mail_route(), user_id, &mail, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((user_id, LinkRequested::Queued)))
        })?;
        Ok(outcome)
    }

    /// Consumes the reset token with this digest (unused and unexpired), sets the new password,
    /// marks the email verified (the link proved control of the inbox), clears the lock of the
    /// account's email (`login_failures`) and ends every session, in one transaction. `None`
    /// when the token is unknown, used, expired or superseded, or its account is gone or
    /// deactivated. Of two concurrent calls with one token, one gets it: the consuming UPDATE
    /// locks the row, and the second finds `used_at` set.
    pub async fn reset_password(
        &self,
        digest: &[u8; 32],
        new_hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, Option<Revocation>)>, StoreError> {
        const SET_PASSWORD: &str =
            "UPDATE users SET password_hash = $1, password_normalized = $4, password_scheme = $5, updated_at = $2,
                 email_verified_at = CASE WHEN email_verified THEN email_verified_at ELSE $2 END,
                 email_verified = TRUE
             WHERE id = $3 AND is_active RETURNING email_lower, email, email_verified_at = $2";
        // The email's lock and run of failures end; per-client delays stay, so an attacker's
        // addresses are not handed fresh free guesses by the owner's reset.
        const CLEAR_LOCKOUT: &str = "DELETE FROM login_failures WHERE email_lower = $1";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let reset = LinkPurpose::PasswordReset.as_str();
            let consumed: Option<(String, Uuid, Option<String>)> = sqlx::query_as(CONSUME)
                .bind(now)
                .bind(&digest[..])
                .bind(reset)
                .bind(reset)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((_, user_id, _)) = consumed else { return Ok(None) };
            // The last column: whether this reset is what verified the address.
            let updated: Option<(String, String, bool)> = sqlx::query_as(SET_PASSWORD)
                .bind(new_hash.expose())
                .bind(now)
                .bind(user_id)
                .bind(new_hash.is_of_normalized_text())
                .bind(new_hash.scheme_name())
                .fetch_optional(&mut *tx)
                .await?;
            let Some((email_lower, email, newly_verified)) = updated else { return Ok(None) };
            sqlx::query(CLEAR_LOCKOUT).bind(email_lower).execute(&mut *tx).await?;
            let user_id = UserId::from_uuid(user_id);
            let mut events = vec![(user_id, UserEvent::PasswordChanged)];
            if newly_verified {
                events.push((user_id, UserEvent::EmailVerified { email }));
            }
            tx.append_events(&events, now).await?;
            let revocation =
                tx.revoke(Target::User { user_id, except: None }, RevocationReason::PasswordReset, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((user_id, revocation)))
        })?;
        Ok(outcome)
    }

    /// Deletes email tokens that expired before `before`.
    pub async fn purge_email_tokens(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM email_tokens WHERE token_digest IN
             (SELECT token_digest FROM email_tokens WHERE expires_at < $1 LIMIT $2)";
        self.delete_in_batches(SQL, before).await
    }
}
