//! Users and sessions in Postgres or SQLite, behind one sealed type: callers see [`Store`]'s
//! methods, which take and return domain types, never a pool or SQL. The SQL is written once
//! (both databases take `$N` placeholders, `RETURNING` and `ON CONFLICT`, and every timestamp is
//! bound by the service from its clock rather than taken from the database's `now()`) and
//! type-checked per backend by [`with_pool!`]. One file per table family: `users`, `sessions`,
//! `attempts`, the admin `directory` and its `listing`, `service_keys`, the mail `outbox`, the `email_tokens` its links carry and the `reset_requests` that ask for them, `imports` (and exports), the revocation `listener`, and a test-only API in `testing`. No business rules
//! live here.

mod attempts;
mod directory;
mod email_tokens;
mod error;
mod events;
mod guard;
mod imports;
mod listener;
mod listing;
mod mfa;
mod outbox;
mod reset_requests;
mod sequence;
mod service_keys;
mod sessions;
#[cfg(any(test, feature = "test-helpers"))]
mod testing;
mod users;

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqliteOperation, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tokio::sync::Notify;

pub use attempts::{AccountCount, Admission, DelaySchedule};
pub use directory::{RoleChange, RolesChanged, UserChanges, UserKey};
pub use email_tokens::{EmailVerified, LinkRequested, LinkToken};
pub use error::StoreError;
pub use events::{EVENTS_CHANNEL, EventBounds};
pub use imports::{CollisionKind, ImportMode, ImportOutcome, ImportedUser, PageCursor, SchemeCount};
pub use listener::{EVENT_LISTENER_APPLICATION_NAME, Hints, LISTENER_APPLICATION_NAME};
pub use listing::{UserCursor, UserFilter};
pub use mfa::{LoginAccount, TotpConfirmation, TotpCredential, TotpEnrollment};
pub use outbox::{FailedAttempt, MailClaim};
pub use reset_requests::{ResetAnswered, ResetLink, ResetRecorded, ResetRequested};
pub use service_keys::ServiceKeyRecord;
pub use sessions::{
    NewSession, REVOCATION_CHANNEL, Revocation, RevocationPosition, RevokedSession, Rotation, SessionAuth,
};
#[cfg(any(test, feature = "test-helpers"))]
pub use testing::MailRow;
pub use users::{NewUser, PasswordChange, UserRecord, UserUpdate};

/// The connection pool of whichever database `IDENTITY_DATABASE_URL` names. Sealed: the pools
/// are reachable only from this module's files.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    guard: Arc<guard::Guard>,
    /// SQLite: woken when this process writes a user event (the connection's update hook), so
    /// that the stream hears of it at once. Postgres announces events by NOTIFY instead.
    events_written: Option<Arc<Notify>>,
    /// `IDENTITY_MAIL=none`: a message is recorded as a `message_requested` user event instead
    /// of being queued in the outbox.
    mail_as_events: bool,
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// How many connections a process opens and how long any database call may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Postgres pool size (SQLite always uses one connection).
    pub max_connections: u32,
    /// How long a call waits for a pooled connection (or for a new one to be opened).
    pub acquire_timeout: Duration,
    /// How long a call's statements may take once it has a connection; enforced here, because
    /// a server that stops answering never enforces anything, and on Postgres as the server's
    /// `statement_timeout` too.
    pub statement_timeout: Duration,
}

/// The statement bound when none is configured (`IDENTITY_DATABASE_STATEMENT_TIMEOUT`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows one purge statement deletes: small enough that each batch is a short transaction that
/// never holds SQLite's single writer (or Postgres's row locks) for long.
pub const PURGE_BATCH: u32 = 1000;

/// The cutoff a batched purge binds as `$1`: a timestamp, or milliseconds since the epoch for the
/// tables that store times so (the login throttle).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cutoff {
    At(DateTime<Utc>),
    Millis(i64),
    /// A position in the commit sequence (the user-events purge).
    Position(i64),
}

impl From<DateTime<Utc>> for Cutoff {
    fn from(at: DateTime<Utc>) -> Self {
        Self::At(at)
    }
}

impl From<i64> for Cutoff {
    fn from(ms: i64) -> Self {
        Self::Millis(ms)
    }
}

/// Runs `$body` with `$pool` bound to a connection of the concrete pool, so that one piece of
/// sqlx code is type-checked once per backend without a tower of generic bounds. `$body`
/// evaluates to a `Result<_, sqlx::Error>`; it runs within the statement timeout (see
/// [`guard`]), and while the health probe finds the database down it does not run at all.
/// When the request is traced, the call (the wait for a connection included) is a span named
/// after the `Store` method it is in.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::with_pool!(@run $store, connection, $pool => $body)
    };
    (@run $store:expr, $acquire:ident, $pool:ident => $body:expr) => {{
        let store: &$crate::store::Store = &$store;
        // Trace level: no log subscriber shows it unless asked; the fields are only evaluated
        // for a subscriber that records it (a traced request's).
        let span = tracing::trace_span!(
            "db",
            otel.name = $crate::telemetry::function_name({
                fn here() {}
                std::any::type_name_of_val(&here)
            }),
            otel.kind = "client",
            db.system.name = store.db_system(),
        );
        // sqlx's SQLite worker keeps the current span: under a traced request, let it be none
        // of the request's (see `telemetry::outside_traces`).
        let outside = $crate::telemetry::outside_traces(&span);
        let call = async { match &store.pool {
            $crate::store::Pool::Postgres(pool) => match store.guard.$acquire(pool).await {
                Ok(mut connection) => {
                    let outcome = tokio::time::timeout(store.guard.statement_timeout(), async {
                        let $pool = &mut *connection;
                        $body
                    })
                    .await;
                    store.guard.finish(connection, outcome)
                }
                Err(error) => Err(error),
            },
            $crate::store::Pool::Sqlite(pool) => match store.guard.$acquire(pool).await {
                Ok(mut connection) => {
                    let outcome = tokio::time::timeout(store.guard.statement_timeout(), async {
                        let $pool = &mut *connection;
                        $body
                    })
                    .await;
                    store.guard.finish(connection, outcome)
                }
                Err(error) => Err(error),
            },
        } };
        tracing::Instrument::instrument(tracing::instrument::WithSubscriber::with_subscriber(call, outside), span).await
    }};
}
use with_pool;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// Opens a pool with the default statement timeout.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let limits =
            Limits { max_connections, acquire_timeout, statement_timeout: DEFAULT_STATEMENT_TIMEOUT };
        Self::open(url, limits).await
    }

    /// Opens a pool. Postgres connects lazily, so a database that is down at start is reported
    /// by the first query (and by health) rather than by a crash loop. A SQLite file and the
    /// directory it is created in are private to the server's user (0600, 0700).
    pub async fn open(url: &str, limits: Limits) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(StoreError::from)?
                .options([("statement_timeout", format!("{}ms", limits.statement_timeout.as_millis()))]);
            let server = guard::tcp_server(&options);
            // No TCP keepalive or user timeout here: sqlx 0.8 opens the socket itself and
            // exposes neither; the client-side statement timeout and the health probe stand in.
            let pool = PgPoolOptions::new()
                .max_connections(limits.max_connections)
                .acquire_timeout(limits.acquire_timeout)
                .connect_lazy_with(options);
            return Ok(Self {
                pool: Pool::Postgres(pool),
                guard: guard::Guard::new(limits, server),
                events_written: None,
                mail_as_events: false,
            });
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(limits.statement_timeout.min(Duration::from_secs(5)))
            .foreign_keys(true);
        let file = options.get_filename().to_owned();
        if !(url.contains(":memory:") || url.contains("mode=memory")) {
            crate::secret_files::create_private_file(&file)
                .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }
        // One connection: SQLite runs one writer at a time anyway, and writers that collide on
        // several connections wait in SQLite's busy handler, which sleeps in growing steps (up
        // to 100 ms); waiting in the pool's queue instead is fair and prompt. Reads take
        // microseconds. `max_connections` is for Postgres.
        let events_written = Arc::new(Notify::new());
        let wake = Arc::clone(&events_written);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(limits.acquire_timeout)
            .after_connect(move |connection, _| {
                let wake = Arc::clone(&wake);
                Box::pin(async move {
                    // Called inside the writing transaction: the reader it wakes waits for the
                    // one connection, so it reads after the commit (or finds nothing after a
                    // rollback).
                    connection.lock_handle().await?.set_update_hook(move |change| {
                        if change.table == "user_events"
                            && matches!(change.operation, SqliteOperation::Insert)
                        {
                            wake.notify_one();
                        }
                    });
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::from)?;
        // SQLite gives -wal and -shm the main file's mode; a file made by an older version (or
        // copied in) is tightened here, companions included.
        crate::secret_files::make_private_with_companions(&file);
        Ok(Self {
            pool: Pool::Sqlite(pool),
            guard: guard::Guard::new(limits, None),
            events_written: Some(events_written),
            mail_as_events: false,
        })
    }

    /// With `true` (`IDENTITY_MAIL=none`), messages become `message_requested` user events
    /// instead of outbox rows.
    #[must_use]
    pub fn with_mail_as_events(mut self, mail_as_events: bool) -> Self {
        self.mail_as_events = mail_as_events;
        self
    }

    /// Applies pending migrations. sqlx takes a lock first, so replicas starting together are safe.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.pool {
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match &self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// The database's name in the OpenTelemetry conventions (`db.system.name`).
    fn db_system(&self) -> &'static str {
        match &self.pool {
            Pool::Postgres(_) => "postgresql",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// One trivial round trip: does the database answer? This is the health watcher's probe,
    /// and the only call made while the database is known to be down: its answer decides
    /// whether the other calls are tried (see [`guard`]). A probe abandoned before it answers
    /// counts as "no".
    pub async fn ping(&self) -> Result<(), StoreError> {
        let verdict = self.guard.probe_started();
        let answered = with_pool!(@run self, connection_for_probe, pool =>
            sqlx::query("SELECT 1").execute(pool).await.map(drop));
        verdict.record(answered.is_ok());
        Ok(answered?)
    }

    /// Runs a batched purge statement (parameters: a cutoff, then [`PURGE_BATCH`]) until a
    /// batch comes back short. Each batch is its own statement and transaction and takes its
    /// connection anew, so requests waiting for one get their turn between batches; after each
    /// batch the purge rests as long as the batch took, so it never has more than half of the
    /// database's time (it is background work: nobody waits for it). Returns the rows deleted.
    async fn delete_in_batches(
        &self,
        sql: &'static str,
        before: impl Into<Cutoff>,
    ) -> Result<u64, StoreError> {
        let before = before.into();
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let deleted = with_pool!(self, pool => {
                let query = sqlx::query(sql);
                let query = match before {
                    Cutoff::At(at) => query.bind(at),
                    Cutoff::Millis(ms) | Cutoff::Position(ms) => query.bind(ms),
                };
                query
                .bind(i64::from(PURGE_BATCH))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
            })?;
            total += deleted;
            if deleted < u64::from(PURGE_BATCH) {
                return Ok(total);
            }
            tokio::time::sleep(started.elapsed().min(Duration::from_secs(1))).await;
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    /// Connections open in the pool, and how many of them are idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        match &self.pool {
            Pool::Postgres(pool) => (pool.size(), pool.num_idle()),
            Pool::Sqlite(pool) => (pool.size(), pool.num_idle()),
        }
    }
}
