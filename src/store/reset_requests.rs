//! The `reset_requests` table: password-reset requests waiting for the mail worker. Recording
//! one is a single insert of the normalized address and the time, the same for an address with
//! an account and one without (a request while one is pending for the address inserts nothing,
//! again whoever owns it), so the request's work tells nobody which it was. Answering one is a
//! transaction of its own that takes the oldest row (deleting it; on Postgres skipping rows
//! another replica holds), looks the account up, checks the hourly allowance, and only then
//! has the token made and stores it with its message; if anything fails the transaction rolls
//! back and the request waits for the next try.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Pool, Store, StoreError,
    email_tokens::{Account, LinkStatements, LinkToken},
    with_pool,
};
use crate::domain::{LinkPurpose, MailContent, MailKind, NewMail, NormalizedEmail, UserId};

/// What answering a reset request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetRequested {
    /// A token was stored and its message queued.
    Queued { user_id: UserId },
    /// The account's hourly allowance of messages is used up: nothing stored.
    Throttled { user_id: UserId },
    /// No active account has this email: nothing stored.
    NoAccount,
}

/// What recording a reset request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetRecorded {
    /// A row was added for the address.
    Recorded,
    /// A request for the address is waiting already: it stands for this one too.
    AlreadyPending,
    /// The table holds the most requests allowed: nothing recorded.
    QueueFull,
}

/// The link a reset message carries, made by the caller (who holds the token itself) for a
/// request being answered.
pub struct ResetLink {
    /// SHA-256 of the token.
    pub digest: [u8; 32],
    /// The message; its name is filled in from the account.
    pub content: MailContent,
    pub expires_at: DateTime<Utc>,
}

/// A reset request taken from the table and answered.
#[derive(Debug, Clone)]
pub struct ResetAnswered {
    pub requested_at: DateTime<Utc>,
    pub outcome: ResetRequested,
}

/// Adds the request unless `$3` are waiting already (counting stops at `$3`, so a full table
/// costs at most that many index entries; concurrent requests on Postgres may each see room,
/// so the table can pass `$3` by as many as arrive at once) or one for the address is.
const RECORD: &str = "INSERT INTO reset_requests (email_lower, requested_at)
     SELECT $1, $2 WHERE (SELECT count(*) FROM (SELECT 1 FROM reset_requests LIMIT $3) AS waiting) < $3
     ON CONFLICT (email_lower) DO NOTHING";
const PENDING_FOR: &str = "SELECT EXISTS (SELECT 1 FROM reset_requests WHERE email_lower = $1)";
/// Takes the oldest request; its row stays locked (deleted, uncommitted) until the answer is
/// committed, so a concurrent claimer skips it and a new request for the address waits.
const TAKE_POSTGRES: &str = "DELETE FROM reset_requests WHERE email_lower = (
         SELECT email_lower FROM reset_requests ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING email_lower, requested_at";
/// SQLite: the delete takes the one write lock at once and holds it to the commit.
const TAKE_SQLITE: &str = "DELETE FROM reset_requests WHERE email_lower = (
         SELECT email_lower FROM reset_requests ORDER BY requested_at LIMIT 1)
     RETURNING email_lower, requested_at";

impl Store {
    /// Records a reset request for `email` at `now`, unless one is pending for it already or
    /// `max_pending` are. One statement when it is recorded; a second only when it is not, to
    /// tell which (a request answered in between reads as a full table: the caller retries).
    pub async fn request_password_reset(
        &self,
        email: &NormalizedEmail,
        now: DateTime<Utc>,
        max_pending: u32,
    ) -> Result<ResetRecorded, StoreError> {
        let recorded = with_pool!(self, pool => {
            let inserted = sqlx::query(RECORD)
                .bind(email.as_str())
                .bind(now)
                .bind(i64::from(max_pending))
                .execute(&mut *pool)
                .await?
                .rows_affected();
            if inserted > 0 {
                return Ok(ResetRecorded::Recorded);
            }
            let pending: bool = sqlx::query_scalar(PENDING_FOR).bind(email.as_str()).fetch_one(&mut *pool).await?;
            Ok::<_, sqlx::Error>(if pending { ResetRecorded::AlreadyPending } else { ResetRecorded::QueueFull })
        })?;
        Ok(recorded)
    }

    /// Takes the oldest pending reset request and answers it at `now`, in one transaction: for
    /// an active account within its hourly allowance (`max_per_hour` messages), supersedes its
    /// older reset tokens, stores the link `make_link` makes and queues its message (or, with
    /// `IDENTITY_MAIL=none`, records the `message_requested` event). `make_link` is called only
    /// then, so a poll that finds nothing waiting, an unknown address and a used-up allowance
    /// cost no token. `None` when no request is pending (or every one is held by another
    /// replica).
    pub async fn answer_reset_request(
        &self,
        now: DateTime<Utc>,
        max_per_hour: u32,
        make_link: impl FnOnce() -> ResetLink,
    ) -> Result<Option<ResetAnswered>, StoreError> {
        const ACCOUNT: &str = "SELECT id, email, full_name FROM users WHERE email_lower = $1 AND is_active";
        let take = match &self.pool {
            Pool::Postgres(_) => TAKE_POSTGRES,
            Pool::Sqlite(_) => TAKE_SQLITE,
        };
        let answered = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let taken: Option<(String, DateTime<Utc>)> = sqlx::query_as(take).fetch_optional(&mut *tx).await?;
            let Some((email, requested_at)) = taken else { return Ok(None) };
            let account: Option<Account> = sqlx::query_as(ACCOUNT).bind(&email).fetch_optional(&mut *tx).await?;
            let outcome = match account {
                None => ResetRequested::NoAccount,
                Some(account) => {
                    let user_id = UserId::from_uuid(account.id);
                    let recent =
                        tx.mail_this_hour(&account.email, MailKind::PasswordReset, now, max_per_hour).await?;
                    if recent >= i64::from(max_per_hour) {
                        ResetRequested::Throttled { user_id }
                    } else {
                        let ResetLink { digest, content, expires_at } = make_link();
                        let token = LinkToken { digest: &digest, content, now, expires_at, max_per_hour };
                        let mut content = token.content.clone();
                        content.name = account.full_name;
                        let mail = NewMail { kind: MailKind::PasswordReset, recipient: account.email, content };
                        let id: Uuid = account.id;
                        tx.issue_link(self.mail_route(), id, LinkPurpose::PasswordReset, None, &token, &mail).await?;
                        ResetRequested::Queued { user_id }
                    }
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(ResetAnswered { requested_at, outcome }))
        })?;
        Ok(answered)
    }

    /// Reset requests waiting to be answered.
    pub async fn pending_reset_requests(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM reset_requests";
        let count = with_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(count)
    }
}
