//! The `sessions` table family (sessions, retired refresh tokens, the revocation cursor):
//! creation, refresh-token rotation with reuse detection, revocation, purge. Every revocation
//! also tells the other replicas (Postgres NOTIFY, in the same transaction); other families
//! revoke inside their own transactions through [`RevokeInTransaction`].

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

use super::{
    Store, StoreError, UserRecord, events::AppendEvents, sequence::CommitSequence, users::UserRow, with_pool,
};
use crate::domain::{
    Actor, RefreshTokenDigest, RevocationReason, SessionId, SessionInfo, SessionOrigin, User, UserEvent,
    UserId,
};

pub struct NewSession<'a> {
    pub id: SessionId,
    pub user_id: UserId,
    pub refresh_token_digest: &'a RefreshTokenDigest,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub origin: &'a SessionOrigin,
    /// Whether the login proved a second factor (the `amr` of the session's tokens).
    pub second_factor: bool,
}

/// How a session was authenticated: its tokens' `auth_time` and `amr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAuth {
    /// The login, or the latest step-up.
    pub at: DateTime<Utc>,
    pub second_factor: bool,
}

pub(super) const INSERT_SESSION: &str =
    "INSERT INTO sessions (id, user_id, refresh_token_digest, created_at, expires_at,
         last_used_at, client_address, user_agent, authenticated_at, second_factor)
     VALUES ($1, $2, $3, $4, $5, $4, $6, $7, $4, $8)";

/// The insert of `session`, to run on a pool's connection or inside a transaction.
macro_rules! insert_session_query {
    ($session:expr) => {{
        let session: &$crate::store::NewSession<'_> = $session;
        sqlx::query($crate::store::sessions::INSERT_SESSION)
            .bind(session.id.into_uuid())
            .bind(session.user_id.into_uuid())
            .bind(session.refresh_token_digest.as_bytes())
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(session.origin.address.as_deref())
            .bind(session.origin.user_agent.as_deref())
            .bind(session.second_factor)
    }};
}
pub(super) use insert_session_query;

/// The Postgres channel revocations are announced on; see [`Revocation::payload`].
pub const REVOCATION_CHANNEL: &str = "identity_session_revoked";
/// Session ids per NOTIFY payload, well under Postgres's 8000-byte limit.
const IDS_PER_NOTIFICATION: usize = 200;

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// The token was current: it is now retired and the session carries the new digest.
    Rotated { session_id: SessionId, expires_at: DateTime<Utc>, user: User, auth: SessionAuth },
    /// The token had already been rotated away: someone replayed it, and the session must be
    /// revoked (RFC 9700 §4.14.2), which the caller does in a transaction of its own.
    Reused { session_id: SessionId },
    /// Unknown, expired or already revoked.
    Refused,
}

/// Sessions ended by one transaction. `cursor` comes from a single counter row whose lock is
/// held to commit, so cursors increase in commit order across every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub cursor: u64,
    pub revoked_at: DateTime<Utc>,
    pub session_ids: Vec<SessionId>,
}

impl Revocation {
    /// `cursor;revoked_at in µs;id,id,...`, one NOTIFY per chunk of ids. Receivers of this
    /// release ignore the payload (a notification is only a hint to read the table); it keeps
    /// its old form for replicas of the previous release during a rolling upgrade.
    fn payloads(&self) -> impl Iterator<Item = String> + '_ {
        self.session_ids.chunks(IDS_PER_NOTIFICATION).map(|chunk| {
            let ids = chunk.iter().map(SessionId::to_string).collect::<Vec<_>>().join(",");
            format!("{};{};{ids}", self.cursor, self.revoked_at.timestamp_micros())
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    client_address: Option<String>,
    user_agent: Option<String>,
}

impl From<SessionRow> for SessionInfo {
    fn from(row: SessionRow) -> Self {
        Self {
            id: SessionId::from_uuid(row.id),
            user_id: UserId::from_uuid(row.user_id),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            origin: SessionOrigin { address: row.client_address, user_agent: row.user_agent },
        }
    }
}

#[derive(sqlx::FromRow)]
struct RotatedRow {
    id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    authenticated_at: Option<DateTime<Utc>>,
    second_factor: bool,
}

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct RevokedSession {
    #[sqlx(try_from = "Uuid")]
    pub id: SessionId,
    pub revoked_at: DateTime<Utc>,
    /// `None` for sessions revoked before cursors existed.
    pub revocation_seq: Option<i64>,
}

/// Where a reader of revocations has got to: everything up to `cursor`, and within `cursor`
/// the sessions up to `session` (all of them when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPosition {
    pub cursor: u64,
    pub session: Option<SessionId>,
}

impl RevokedSession {
    /// Where a reader is once it has read this row.
    pub fn position(&self) -> RevocationPosition {
        RevocationPosition { cursor: self.cursor(), session: Some(self.id) }
    }

    pub fn cursor(&self) -> u64 {
        self.revocation_seq.and_then(|seq| u64::try_from(seq).ok()).unwrap_or(0)
    }
}

/// Which sessions a revocation ends.
pub(super) enum Target<'a> {
    Session(SessionId),
    /// A session, only if it belongs to this user.
    SessionOf {
        session_id: SessionId,
        user_id: UserId,
    },
    /// The session of a refresh token, current or already rotated away.
    RefreshToken(&'a RefreshTokenDigest),
    /// Every session of a user, but `except`.
    User {
        user_id: UserId,
        except: Option<SessionId>,
    },
}

const REVOKE_SESSION: &str = "UPDATE sessions SET revoked_at = $1, revocation_seq = $2
     WHERE id = $3 AND revoked_at IS NULL RETURNING id, user_id";
const REVOKE_SESSION_OF: &str = "UPDATE sessions SET revoked_at = $1, revocation_seq = $2
     WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL AND expires_at > $1 RETURNING id, user_id";
const REVOKE_BY_REFRESH_TOKEN: &str = "UPDATE sessions SET revoked_at = $1, revocation_seq = $2
     WHERE revoked_at IS NULL AND (refresh_token_digest = $3
        OR id = (SELECT session_id FROM retired_refresh_tokens WHERE token_digest = $3))
     RETURNING id, user_id";
const REVOKE_USER: &str = "UPDATE sessions SET revoked_at = $1, revocation_seq = $2
     WHERE user_id = $3 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4) RETURNING id, user_id";

/// Postgres, before revoking every session of a user: whether there is one to revoke. When
/// there is none, no position is taken, so a role removal or deactivation of a user without
/// sessions never holds the commit sequence's lock (which every event writer waits for). It
/// locks nothing: the sessions are locked after the sequence, as every revocation does, or a
/// single-session revocation holding the sequence could wait for them in the opposite order. A
/// session revoked meanwhile by another transaction makes the update below find nothing, as
/// before. SQLite, one writer at a time, skips it.
const USER_HAS_OPEN_SESSIONS: &str = "SELECT EXISTS (SELECT 1 FROM sessions
     WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2))";

/// Revoking inside a transaction: take the next position of the commit sequence, mark the
/// sessions, record a `session_revoked` user event for each, and tell the other processes (a
/// NOTIFY on Postgres, delivered at commit; nothing on SQLite, whose servers poll).
pub(super) trait RevokeInTransaction {
    /// Revokes `target` for `reason`; its events name `actor` (`None`: the account's owner).
    async fn revoke_by(
        &mut self,
        target: Target<'_>,
        reason: RevocationReason,
        actor: Option<&Actor>,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, sqlx::Error>;

    async fn revoke(
        &mut self,
        target: Target<'_>,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, sqlx::Error> {
        self.revoke_by(target, reason, None, now).await
    }
}

/// One body for both connection types; only the announcement differs.
macro_rules! revoke_in_transaction {
    ($connection:ty, $looks_first:literal, $announce:expr) => {
        impl RevokeInTransaction for $connection {
            async fn revoke_by(
                &mut self,
                target: Target<'_>,
                reason: RevocationReason,
                actor: Option<&Actor>,
                now: DateTime<Utc>,
            ) -> Result<Option<Revocation>, sqlx::Error> {
                if let (true, Target::User { user_id, except }) = ($looks_first, &target) {
                    let open: bool = sqlx::query_scalar(USER_HAS_OPEN_SESSIONS)
                        .bind(user_id.into_uuid())
                        .bind(except.map(SessionId::into_uuid))
                        .fetch_one(&mut *self)
                        .await?;
                    if !open {
                        return Ok(None);
                    }
                }
                let cursor = *self.take_positions(1).await?.end();
                let query = match target {
                    Target::Session(id) => {
                        sqlx::query_as(REVOKE_SESSION).bind(now).bind(cursor).bind(id.into_uuid())
                    }
                    Target::SessionOf { session_id, user_id } => sqlx::query_as(REVOKE_SESSION_OF)
                        .bind(now)
                        .bind(cursor)
                        .bind(session_id.into_uuid())
                        .bind(user_id.into_uuid()),
                    Target::RefreshToken(digest) => {
                        sqlx::query_as(REVOKE_BY_REFRESH_TOKEN).bind(now).bind(cursor).bind(digest.as_bytes())
                    }
                    Target::User { user_id, except } => sqlx::query_as(REVOKE_USER)
                        .bind(now)
                        .bind(cursor)
                        .bind(user_id.into_uuid())
                        .bind(except.map(SessionId::into_uuid)),
                };
                let revoked: Vec<(Uuid, Uuid)> = query.fetch_all(&mut *self).await?;
                if revoked.is_empty() {
                    // The cursor value is spent; gaps are harmless.
                    return Ok(None);
                }
                let events: Vec<(UserId, UserEvent)> = revoked
                    .iter()
                    .map(|(session, user)| {
                        let session_id = SessionId::from_uuid(*session);
                        (UserId::from_uuid(*user), UserEvent::SessionRevoked { session_id, reason })
                    })
                    .collect();
                self.append_events_by(&events, actor, now).await?;
                let session_ids =
                    revoked.into_iter().map(|(session, _)| SessionId::from_uuid(session)).collect();
                let revocation =
                    Revocation { cursor: u64::try_from(cursor).unwrap_or(0), revoked_at: now, session_ids };
                let announce = $announce;
                announce(self, &revocation).await?;
                Ok(Some(revocation))
            }
        }
    };
}

revoke_in_transaction!(PgConnection, true, async |connection: &mut PgConnection, revocation: &Revocation| {
    for payload in revocation.payloads() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REVOCATION_CHANNEL)
            .bind(payload)
            .execute(&mut *connection)
            .await?;
    }
    Ok::<_, sqlx::Error>(())
});
revoke_in_transaction!(SqliteConnection, false, async |_: &mut SqliteConnection, _: &Revocation| Ok::<
    _,
    sqlx::Error,
>(()));

impl Store {
    pub async fn insert_session(&self, session: &NewSession<'_>) -> Result<(), StoreError> {
        with_pool!(self, pool => insert_session_query!(session).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Records a step-up on a live session of `user_id`: authenticated now, with a second
    /// factor. Returns the session's expiry; `None` when it is not live.
    pub async fn step_up_session(
        &self,
        session_id: SessionId,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        const SQL: &str = "UPDATE sessions SET authenticated_at = $1, second_factor = TRUE
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1 RETURNING expires_at";
        let expires_at = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(now)
            .bind(session_id.into_uuid())
            .bind(user_id.into_uuid())
            .fetch_optional(pool)
            .await)?;
        Ok(expires_at)
    }

    /// Swaps `old` for `new` in one conditional write, so of two racing calls exactly one
    /// matches; the loser (and any later replay) finds `old` retired and revokes the session.
    /// The session's expiry does not move: its lifetime is absolute.
    pub async fn rotate_refresh_token(
        &self,
        old: &RefreshTokenDigest,
        new: &RefreshTokenDigest,
        now: DateTime<Utc>,
    ) -> Result<Rotation, StoreError> {
        const ROTATE: &str = "UPDATE sessions SET refresh_token_digest = $1, last_used_at = $2
             WHERE refresh_token_digest = $3 AND revoked_at IS NULL AND expires_at > $2
             RETURNING id, user_id, expires_at, created_at, authenticated_at, second_factor";
        const RETIRE: &str =
            "INSERT INTO retired_refresh_tokens (token_digest, session_id, retired_at) VALUES ($1, $2, $3)";
        const USER: &str = concat!("SELECT ", super::users::user_columns!(), " FROM users WHERE id = $1");
        const RETIRED: &str = "SELECT session_id FROM retired_refresh_tokens WHERE token_digest = $1";
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let rotated: Option<RotatedRow> = sqlx::query_as(ROTATE)
                .bind(new.as_bytes())
                .bind(now)
                .bind(old.as_bytes())
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match rotated {
                Some(row) => {
                    sqlx::query(RETIRE).bind(old.as_bytes()).bind(row.id).bind(now).execute(&mut *tx).await?;
                    let user: UserRow = sqlx::query_as(USER).bind(row.user_id).fetch_one(&mut *tx).await?;
                    Rotation::Rotated {
                        session_id: SessionId::from_uuid(row.id),
                        expires_at: row.expires_at,
                        user: UserRecord::from(user).user,
                        // Sessions from before the column existed were authenticated at login.
                        auth: SessionAuth {
                            at: row.authenticated_at.unwrap_or(row.created_at),
                            second_factor: row.second_factor,
                        },
                    }
                }
                None => {
                    let retired: Option<Uuid> =
                        sqlx::query_scalar(RETIRED).bind(old.as_bytes()).fetch_optional(&mut *tx).await?;
                    match retired {
                        // Not revoked here: a losing UPDATE above may hold the session's row lock
                        // (Postgres locks the row it re-checks), and revoking takes the cursor
                        // lock first, so doing it in this transaction can deadlock with another
                        // loser. The caller revokes in a new transaction, in the usual order.
                        Some(session_id) => Rotation::Reused { session_id: SessionId::from_uuid(session_id) },
                        None => Rotation::Refused,
                    }
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(outcome)
        })?;
        Ok(outcome)
    }

    /// Revokes the session a refresh token (current or already rotated) belongs to. `None`
    /// when it was unknown or already revoked.
    pub async fn revoke_session_by_refresh_token(
        &self,
        digest: &RefreshTokenDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        self.revoke(Target::RefreshToken(digest), RevocationReason::Logout, now).await
    }

    /// Revokes one session by id (a deactivated owner found at refresh, a reused refresh token,
    /// a session guessing its password), for `reason`.
    pub async fn revoke_session(
        &self,
        session_id: SessionId,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        self.revoke(Target::Session(session_id), reason, now).await
    }

    /// Revokes the session `session_id` if it is a live session of `user_id`; `None` when it is
    /// not (unknown, someone else's, expired or already revoked).
    /// `actor` is who ended it (`None`: its owner).
    pub async fn revoke_session_of(
        &self,
        user_id: UserId,
        session_id: SessionId,
        reason: RevocationReason,
        actor: Option<&Actor>,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        self.revoke_by(Target::SessionOf { session_id, user_id }, reason, actor, now).await
    }

    /// The live sessions of a user (neither revoked nor expired), most recently used first, at
    /// most `limit`.
    pub async fn live_sessions(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        const SQL: &str =
            "SELECT id, user_id, created_at, last_used_at, expires_at, client_address, user_agent
             FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
             ORDER BY last_used_at DESC, id LIMIT $3";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, SessionRow>(SQL)
            .bind(user_id.into_uuid())
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(SessionInfo::from).collect())
    }

    async fn revoke(
        &self,
        target: Target<'_>,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        self.revoke_by(target, reason, None, now).await
    }

    async fn revoke_by(
        &self,
        target: Target<'_>,
        reason: RevocationReason,
        actor: Option<&Actor>,
        now: DateTime<Utc>,
    ) -> Result<Option<Revocation>, StoreError> {
        let revocation = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let revocation = tx.revoke_by(target, reason, actor, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(revocation)
        })?;
        Ok(revocation)
    }

    /// Sessions revoked after `since`: what a replica loads at start and after losing its
    /// notification connection (by time, so that revocations without a cursor are found too).
    pub async fn sessions_revoked_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<RevokedSession>, StoreError> {
        const SQL: &str = "SELECT id, revoked_at, revocation_seq FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at > $1";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, RevokedSession>(SQL).bind(since).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Up to `limit` revoked sessions after `after` in (cursor, session id) order: the database's
    /// answer to "what was revoked since I last looked". One revocation can end many sessions
    /// under one cursor, hence the id in the position.
    pub async fn revocations_after(
        &self,
        after: RevocationPosition,
        limit: u32,
    ) -> Result<Vec<RevokedSession>, StoreError> {
        const SQL: &str = "SELECT id, revoked_at, revocation_seq FROM sessions
             WHERE revocation_seq > $1 OR (revocation_seq = $1 AND id > $2)
             ORDER BY revocation_seq, id LIMIT $3";
        let cursor = i64::try_from(after.cursor).unwrap_or(i64::MAX);
        let rows = with_pool!(self, pool => sqlx::query_as::<_, RevokedSession>(SQL)
            .bind(cursor)
            .bind(after.session.map_or(Uuid::max(), SessionId::into_uuid))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// The latest cursor handed out, committed or spent.
    pub async fn revocation_cursor(&self) -> Result<u64, StoreError> {
        let value: i64 =
            with_pool!(self, pool => sqlx::query_scalar(super::sequence::LATEST).fetch_one(pool).await)?;
        Ok(u64::try_from(value).unwrap_or(0))
    }

    /// Deletes sessions that expired or were revoked before `before`, a few thousand per
    /// transaction (their retired refresh tokens go with them: `ON DELETE CASCADE`). Returns
    /// how many. Two statements rather than one with `OR`: each then walks one index and stops
    /// after a batch, where an `OR` gathers every match from both indexes for each batch.
    pub async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const EXPIRED: &str = "DELETE FROM sessions WHERE id IN
             (SELECT id FROM sessions WHERE expires_at < $1 LIMIT $2)";
        const REVOKED: &str = "DELETE FROM sessions WHERE id IN
             (SELECT id FROM sessions WHERE revoked_at < $1 LIMIT $2)";
        Ok(self.delete_in_batches(EXPIRED, before).await? + self.delete_in_batches(REVOKED, before).await?)
    }
}
