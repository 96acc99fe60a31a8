//! The `mail_outbox` table: messages queued in the transaction that creates what they carry,
//! claimed by delivery workers under a lease, and marked sent (their link erased) or retried
//! later or failed. On Postgres a claim skips rows another replica holds (`FOR UPDATE SKIP
//! LOCKED`), so each message goes to one worker; the lease returns a message to the queue if
//! its worker died before reporting.

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use sqlx::{PgConnection, SqliteConnection};
use uuid::Uuid;

use super::{Pool, Store, StoreError, events::AppendEvents, with_pool};
use crate::domain::{FailedMail, MailContent, MailId, MailKind, NewMail, OutboxMessage, UserEvent, UserId};

/// The stored form of [`MailContent`]: JSON text.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    name: String,
    #[serde(default)]
    link: Option<String>,
    /// Microseconds since the epoch.
    #[serde(default)]
    expires_at: Option<i64>,
}

fn payload(content: &MailContent) -> Result<String, sqlx::Error> {
    let payload = Payload {
        name: content.name.clone(),
        link: content.link().map(str::to_owned),
        expires_at: content.expires_at.map(|at| at.timestamp_micros()),
    };
    serde_json::to_string(&payload).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// A message for a deliverer.
const INSERT: &str =
    "INSERT INTO mail_outbox (id, kind, recipient, payload, status, attempts, next_attempt_at, created_at)
     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)";
/// The record of a message handed on as a user event: sent at once, without its link (the
/// stream carries it), so that the hourly allowances still count it.
const HANDED_ON: &str = "INSERT INTO mail_outbox
         (id, kind, recipient, payload, status, attempts, next_attempt_at, created_at, sent_at)
     VALUES ($1, $2, $3, '{}', 'sent', 0, $4, $4, $4)";
/// Where a message goes: the outbox, for a deliverer; or, with `IDENTITY_MAIL=none`, the
/// user-events stream, as a `message_requested` event for the team's own notification service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MailRoute {
    Outbox,
    Events,
}

/// Queues a message inside a caller's transaction, so it exists exactly when what it carries
/// (a token) does: the one place every message kind goes through.
pub(super) trait QueueMail {
    /// Queues `mail` to `user` (none: an operator's message) by `route`.
    async fn write_mail(
        &mut self,
        route: MailRoute,
        user: Option<UserId>,
        mail: &NewMail,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error>;

    /// Queues `mail` to `user` by `route`.
    async fn queue_mail(
        &mut self,
        route: MailRoute,
        user: UserId,
        mail: &NewMail,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        self.write_mail(route, Some(user), mail, now).await
    }
}

macro_rules! queue_mail {
    ($connection:ty) => {
        impl QueueMail for $connection {
            async fn write_mail(
                &mut self,
                route: MailRoute,
                user: Option<UserId>,
                mail: &NewMail,
                now: DateTime<Utc>,
            ) -> Result<(), sqlx::Error> {
                let id = MailId::new().into_uuid();
                match route {
                    MailRoute::Outbox => sqlx::query(INSERT)
                        .bind(id)
                        .bind(mail.kind.as_str())
                        .bind(&mail.recipient)
                        .bind(payload(&mail.content)?)
                        .bind(now),
                    MailRoute::Events => sqlx::query(HANDED_ON)
                        .bind(id)
                        .bind(mail.kind.as_str())
                        .bind(&mail.recipient)
                        .bind(now),
                }
                .execute(&mut *self)
                .await?;
                let (MailRoute::Events, Some(user)) = (route, user) else { return Ok(()) };
                let event = UserEvent::MessageRequested {
                    message_kind: mail.kind,
                    recipient: mail.recipient.clone(),
                    name: mail.content.name.clone(),
                    link: mail.content.link.clone(),
                    expires_at: mail.content.expires_at,
                };
                self.append_events(&[(user, event)], now).await
            }
        }
    };
}
queue_mail!(PgConnection);
queue_mail!(SqliteConnection);

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    kind: String,
    recipient: String,
    payload: String,
    attempts: i32,
    created_at: DateTime<Utc>,
}

impl ClaimedRow {
    /// `None` for a row this version cannot read (an unknown kind, a damaged payload).
    fn into_message(self) -> Result<OutboxMessage, (MailId, &'static str)> {
        let id = MailId::from_uuid(self.id);
        let kind = MailKind::parse(&self.kind).ok_or((id, "unknown message kind"))?;
        let payload: Payload = serde_json::from_str(&self.payload).map_err(|_| (id, "unreadable payload"))?;
        Ok(OutboxMessage {
            id,
            kind,
            recipient: self.recipient,
            content: MailContent {
                name: payload.name,
                link: payload.link.map(SecretString::from),
                expires_at: payload.expires_at.and_then(DateTime::from_timestamp_micros),
            },
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct FailedRow {
    id: Uuid,
    kind: String,
    recipient: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
}

/// A batch of messages claimed by one worker: the claim id proves the lease when reporting.
#[derive(Debug)]
pub struct MailClaim {
    pub claim: Uuid,
    pub messages: Vec<OutboxMessage>,
}

/// What became of a message whose delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedAttempt {
    /// Queued again for `next_attempt_at`.
    Retrying,
    /// Given up: kept as failed for the operator.
    GaveUp,
    /// The lease had run out and another worker owns the message now.
    LeaseLost,
}

/// Messages marked sent per statement (a claim holds at most a batch of 32).
const SENT_CHUNK: usize = 100;

/// The claim, with the due rows locked and skipped by concurrent claimers.
const CLAIM_POSTGRES: &str = "UPDATE mail_outbox SET claim = $1, claimed_until = $2, attempts = attempts + 1
     WHERE id IN (
         SELECT id FROM mail_outbox
         WHERE status = 'pending' AND next_attempt_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3)
         ORDER BY next_attempt_at
         LIMIT $4
         FOR UPDATE SKIP LOCKED)
     RETURNING id, kind, recipient, payload, attempts, created_at";
/// SQLite runs one writer at a time: the same claim without row locks.
const CLAIM_SQLITE: &str = "UPDATE mail_outbox SET claim = $1, claimed_until = $2, attempts = attempts + 1
     WHERE id IN (
         SELECT id FROM mail_outbox
         WHERE status = 'pending' AND next_attempt_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3)
         ORDER BY next_attempt_at
         LIMIT $4)
     RETURNING id, kind, recipient, payload, attempts, created_at";

impl Store {
    /// Queues one message to nobody's account (an operator's test message) on its own, in the
    /// outbox whatever the route (the transactional path is [`QueueMail`]).
    pub async fn queue_mail(&self, mail: &NewMail, now: DateTime<Utc>) -> Result<(), StoreError> {
        with_pool!(self, pool => pool.write_mail(MailRoute::Outbox, None, mail, now).await)?;
        Ok(())
    }

    /// Where this store sends messages.
    pub(super) fn mail_route(&self) -> MailRoute {
        if self.mail_as_events { MailRoute::Events } else { MailRoute::Outbox }
    }

    /// Claims up to `limit` due messages for `lease`, counting the attempt. Rows this version
    /// cannot read are marked failed on the spot rather than claimed forever.
    pub async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: u32,
    ) -> Result<MailClaim, StoreError> {
        let claim = Uuid::new_v4();
        let until = now.checked_add_signed(lease).unwrap_or(now);
        let sql = match &self.pool {
            Pool::Postgres(_) => CLAIM_POSTGRES,
            Pool::Sqlite(_) => CLAIM_SQLITE,
        };
        let rows: Vec<ClaimedRow> = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(claim)
            .bind(until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            match row.into_message() {
                Ok(message) => messages.push(message),
                Err((id, why)) => {
                    self.mail_attempt_failed(id, claim, why, now, 0).await?;
                }
            }
        }
        Ok(MailClaim { claim, messages })
    }

    /// Marks messages of one claim sent and erases their links, in one statement; returns how
    /// many were still held by the claim (the rest lost their lease meanwhile).
    pub async fn mail_sent(
        &self,
        ids: &[MailId],
        claim: Uuid,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut updated = 0;
        for chunk in ids.chunks(SENT_CHUNK) {
            let places: Vec<String> = (0..chunk.len()).map(|n| format!("${}", n + 3)).collect();
            let sql = format!(
                "UPDATE mail_outbox SET status = 'sent', sent_at = $1, payload = '{{}}',
                     claim = NULL, claimed_until = NULL, last_error = NULL
                 WHERE claim = $2 AND status = 'pending' AND id IN ({})",
                places.join(", ")
            );
            updated += with_pool!(self, pool => {
                let mut query = sqlx::query(&sql).bind(now).bind(claim);
                for id in chunk {
                    query = query.bind(id.into_uuid());
                }
                query.execute(pool).await.map(|done| done.rows_affected())
            })?;
        }
        Ok(usize::try_from(updated).unwrap_or(usize::MAX))
    }

    /// Records a failed attempt: the message is retried at `next_attempt_at`, or kept as failed
    /// once it has had `max_attempts` (0: give up now).
    pub async fn mail_attempt_failed(
        &self,
        id: MailId,
        claim: Uuid,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<FailedAttempt, StoreError> {
        const SQL: &str = "UPDATE mail_outbox SET
                 status = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'pending' END,
                 next_attempt_at = $2, last_error = $3, claim = NULL, claimed_until = NULL
             WHERE id = $4 AND claim = $5 AND status = 'pending'
             RETURNING status";
        let error: String = error.chars().take(500).collect();
        let status: Option<String> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(i64::from(max_attempts))
            .bind(next_attempt_at)
            .bind(error)
            .bind(id.into_uuid())
            .bind(claim)
            .fetch_optional(pool)
            .await)?;
        Ok(match status.as_deref() {
            None => FailedAttempt::LeaseLost,
            Some("failed") => FailedAttempt::GaveUp,
            Some(_) => FailedAttempt::Retrying,
        })
    }

    /// Failed messages, oldest first, at most `limit`.
    pub async fn failed_mail(&self, limit: u32) -> Result<Vec<FailedMail>, StoreError> {
        const SQL: &str = "SELECT id, kind, recipient, attempts, last_error, created_at FROM mail_outbox
             WHERE status = 'failed' ORDER BY created_at, id LIMIT $1";
        let rows: Vec<FailedRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|row| FailedMail {
                id: MailId::from_uuid(row.id),
                kind: row.kind,
                recipient: row.recipient,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                last_error: row.last_error,
                created_at: row.created_at,
            })
            .collect())
    }

    /// Queues failed messages again with a fresh count of attempts: the one named, or all of
    /// them. Returns how many were queued.
    pub async fn retry_failed_mail(&self, id: Option<MailId>, now: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE mail_outbox SET status = 'pending', attempts = 0, next_attempt_at = $1
             WHERE status = 'failed' AND ($2 IS NULL OR id = $2)";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(now)
            .bind(id.map(MailId::into_uuid))
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated)
    }

    /// Messages waiting to be delivered, and messages given up on.
    pub async fn mail_queue_depth(&self) -> Result<(i64, i64), StoreError> {
        // Each count reads its own partial index, never the day of sent rows beside them.
        const SQL: &str = "SELECT
                 (SELECT COUNT(*) FROM mail_outbox WHERE status = 'pending'),
                 (SELECT COUNT(*) FROM mail_outbox WHERE status = 'failed')";
        let depth = with_pool!(self, pool => sqlx::query_as::<_, (i64, i64)>(SQL).fetch_one(pool).await)?;
        Ok(depth)
    }

    /// Deletes records of messages sent before `before` (they no longer hold a link).
    pub async fn purge_sent_mail(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM mail_outbox WHERE id IN
             (SELECT id FROM mail_outbox WHERE status = 'sent' AND sent_at < $1 LIMIT $2)";
        self.delete_in_batches(SQL, before).await
    }
}
