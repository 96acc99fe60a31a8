//! The `user_events` table: the ordered stream of changes to accounts. Every write path appends
//! its events inside its own transaction through [`AppendEvents`] (so an event exists exactly
//! when its change does), taking positions from the [commit sequence](super::sequence) that
//! revocations use, and announces them (a NOTIFY on Postgres, delivered at commit; on SQLite an
//! in-process wake, see [`Store::open`]). Readers page through by position; the purge deletes a
//! prefix of the stream and records how far it went, so a reader can tell that it fell behind.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, QueryBuilder, SqliteConnection};
use uuid::Uuid;

use super::{Cutoff, Store, StoreError, sequence::CommitSequence, with_pool};
use crate::domain::{Actor, EventRecord, UserEvent, UserId};

/// The Postgres channel new events are announced on. A notification is only a hint: its
/// payload is empty and never read.
pub const EVENTS_CHANNEL: &str = "identity_user_events";
/// Rows per INSERT: 6 parameters each, well under SQLite's 32766.
const INSERT_CHUNK: usize = 1000;

/// Appending events inside a caller's transaction. Call it after the transaction's own row
/// writes (see the lock order in [`super::sequence`]).
pub(super) trait AppendEvents {
    /// Records `events`, in order, at `now`, as made by `actor` (`None`: the account's owner).
    async fn append_events_by(
        &mut self,
        events: &[(UserId, UserEvent)],
        actor: Option<&Actor>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error>;

    /// Records `events`, in order, at `now`, as the accounts' owners' own changes.
    async fn append_events(
        &mut self,
        events: &[(UserId, UserEvent)],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        self.append_events_by(events, None, now).await
    }
}

fn json(event: &UserEvent) -> Result<String, sqlx::Error> {
    event.to_json().map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Postgres appends a batch in one statement: it takes the positions (the sequence's lock, held
/// from here to commit), inserts the rows and queues the announcement, so the lock is held for
/// one round trip and the commit rather than three and the commit (on a busy server, every
/// round trip under the lock is time every other writer waits; see docs/operations.md).
const APPEND_POSTGRES: &str = "WITH taken AS (
         UPDATE revocation_cursor SET value = value + $1 WHERE id = 1 RETURNING value
     ), appended AS (
         INSERT INTO user_events (seq, user_id, kind, payload, occurred_at, actor)
         SELECT taken.value - $1 + e.n, e.user_id, e.kind, e.payload, $5, $6
         FROM taken, unnest($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS e (user_id, kind, payload, n)
         RETURNING 1
     )
     SELECT pg_notify($7, '') FROM (SELECT count(*) FROM appended) AS done";

async fn append_postgres(
    connection: &mut PgConnection,
    events: &[(UserId, UserEvent)],
    actor: Option<&Actor>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let count = i64::try_from(events.len()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let users: Vec<Uuid> = events.iter().map(|(user, _)| user.into_uuid()).collect();
    let kinds: Vec<&str> = events.iter().map(|(_, event)| event.kind()).collect();
    let payloads = events.iter().map(|(_, event)| json(event)).collect::<Result<Vec<_>, _>>()?;
    sqlx::query(APPEND_POSTGRES)
        .bind(count)
        .bind(users)
        .bind(kinds)
        .bind(payloads)
        .bind(now)
        .bind(actor.map(Actor::as_str))
        .bind(EVENTS_CHANNEL)
        .execute(connection)
        .await
        .map(drop)
}

/// SQLite takes the positions, then inserts in chunks (its parameter limit); its one writer at
/// a time makes the order, and its readers are woken by the connection's update hook (see
/// `Store::open`).
async fn append_sqlite(
    connection: &mut SqliteConnection,
    events: &[(UserId, UserEvent)],
    actor: Option<&Actor>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let count = u32::try_from(events.len()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut seq = *connection.take_positions(count).await?.start();
    for chunk in events.chunks(INSERT_CHUNK) {
        let rows = chunk
            .iter()
            .map(|(user, event)| {
                let row = (seq, user.into_uuid(), event.kind(), json(event)?);
                seq += 1;
                Ok(row)
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let mut insert = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO user_events (seq, user_id, kind, payload, occurred_at, actor) ",
        );
        insert.push_values(rows, |mut row, (seq, user, kind, payload)| {
            row.push_bind(seq).push_bind(user).push_bind(kind).push_bind(payload).push_bind(now);
            row.push_bind(actor.map(Actor::as_str));
        });
        insert.build().execute(&mut *connection).await?;
    }
    Ok(())
}

/// The one body of both backends' appends, each with its own statements.
macro_rules! append_events {
    ($connection:ty, $append:ident) => {
        impl AppendEvents for $connection {
            async fn append_events_by(
                &mut self,
                events: &[(UserId, UserEvent)],
                actor: Option<&Actor>,
                now: DateTime<Utc>,
            ) -> Result<(), sqlx::Error> {
                if events.is_empty() {
                    return Ok(());
                }
                $append(self, events, actor, now).await
            }
        }
    };
}
append_events!(PgConnection, append_postgres);
append_events!(SqliteConnection, append_sqlite);

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    user_id: Uuid,
    payload: String,
    occurred_at: DateTime<Utc>,
    actor: Option<String>,
}

/// The part of the stream a reader can still have: events after `purged_through`, up to `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBounds {
    /// The highest position the purge deleted (0: none).
    pub purged_through: u64,
    /// The latest position of the commit sequence handed out (committed or spent).
    pub head: u64,
}

fn position(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn bind_position(cursor: u64) -> i64 {
    i64::try_from(cursor).unwrap_or(i64::MAX)
}

impl Store {
    /// Up to `limit` events after position `after`, in commit order. A row this version cannot
    /// read (a kind added by a newer release, during a rolling upgrade) is skipped with a
    /// warning; its position is passed all the same.
    pub async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        const SQL: &str = "SELECT seq, user_id, payload, occurred_at, actor FROM user_events
             WHERE seq > $1 ORDER BY seq LIMIT $2";
        let rows: Vec<EventRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(bind_position(after))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match UserEvent::from_json(&row.payload) {
                Ok(event) => Some(EventRecord {
                    cursor: position(row.seq),
                    user_id: UserId::from_uuid(row.user_id),
                    occurred_at: row.occurred_at,
                    event,
                    actor: row.actor.map(Actor::from_stored),
                }),
                Err(error) => {
                    tracing::warn!(cursor = row.seq, %error, "skipping a user event this version cannot read");
                    None
                }
            })
            .collect())
    }

    /// The position of the latest event written (0: none yet).
    pub async fn latest_event_cursor(&self) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(seq), 0) FROM user_events";
        let latest: i64 = with_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(position(latest))
    }

    pub async fn event_bounds(&self) -> Result<EventBounds, StoreError> {
        const SQL: &str = "SELECT r.purged_through, c.value FROM user_events_retention r, revocation_cursor c
             WHERE r.id = 1 AND c.id = 1";
        let (purged, head): (i64, i64) = with_pool!(self, pool => sqlx::query_as(SQL).fetch_one(pool).await)?;
        Ok(EventBounds { purged_through: position(purged), head: position(head) })
    }

    /// Deletes the events older than `before`: the prefix of the stream up to the newest of
    /// them, in batches. The new bound is recorded first, so a reader resuming below it hears
    /// OUT_OF_RANGE rather than silently missing what is about to go. Returns the rows deleted.
    pub async fn purge_user_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const NEWEST_EXPIRED: &str = "SELECT MAX(seq) FROM user_events WHERE occurred_at < $1";
        const RECORD: &str = "UPDATE user_events_retention
             SET purged_through = CASE WHEN purged_through < $1 THEN $1 ELSE purged_through END WHERE id = 1";
        const DELETE: &str = "DELETE FROM user_events WHERE seq IN
             (SELECT seq FROM user_events WHERE seq <= $1 ORDER BY seq LIMIT $2)";
        let newest: Option<i64> =
            with_pool!(self, pool => sqlx::query_scalar(NEWEST_EXPIRED).bind(before).fetch_one(pool).await)?;
        let Some(through) = newest else { return Ok(0) };
        with_pool!(self, pool => sqlx::query(RECORD).bind(through).execute(pool).await.map(drop))?;
        self.delete_in_batches(DELETE, Cutoff::Position(through)).await
    }
}
