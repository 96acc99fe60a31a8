//! Users and sessions in Postgres or SQLite, behind one sealed type: callers see [`Store`]'s
//! methods, which take and return domain types, never a pool or SQL. The SQL is written once
//! (both databases take `$N` placeholders, `RETURNING` and `ON CONFLICT`, and every timestamp is
//! bound by the service from its clock rather than taken from the database's `now()`) and
//! type-checked per backend by [`with_pool!`]. One file per table family: `users`, `sessions`,
//! `attempts`, `service_keys`, the revocation `listener`, and a test-only API in `testing`. No business rules
//! live here.

mod attempts;
mod error;
mod listener;
mod service_keys;
mod sessions;
#[cfg(any(test, feature = "test-helpers"))]
mod testing;
mod users;

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use attempts::AttemptWindow;
pub use error::StoreError;
pub use listener::{LISTENER_APPLICATION_NAME, RevocationListener};
pub use service_keys::ServiceKeyRecord;
pub use sessions::{
    NewSession, REVOCATION_CHANNEL, Revocation, RevocationPosition, RevokedSession, Rotation,
};
pub use users::{NewUser, PasswordChange, UserRecord, UserUpdate};

/// The connection pool of whichever database `IDENTITY_DATABASE_URL` names. Sealed: the pools
/// are reachable only from this module's files.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to a connection of the concrete pool, so that one piece of
/// sqlx code is type-checked once per backend without a tower of generic bounds. `$body`
/// evaluates to a `Result<_, sqlx::Error>`.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Postgres(pool) => match $crate::store::acquire(pool).await {
                Ok(mut connection) => {
                    let $pool = &mut *connection;
                    $body
                }
                Err(error) => Err(error),
            },
            $crate::store::Pool::Sqlite(pool) => match $crate::store::acquire(pool).await {
                Ok(mut connection) => {
                    let $pool = &mut *connection;
                    $body
                }
                Err(error) => Err(error),
            },
        }
    };
}
use with_pool;

/// Takes a connection from the pool, recording how long that waited.
async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
    let started = std::time::Instant::now();
    let connection = pool.acquire().await;
    metrics::histogram!(crate::metrics::DB_ACQUIRE).record(started.elapsed().as_secs_f64());
    connection
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// Opens a pool. Postgres connects lazily, so a database that is down at start is reported
    /// by the first query (and by health) rather than by a crash loop.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(acquire_timeout)
                .connect_lazy(url)
                .map_err(StoreError::from)?;
            return Ok(Self { pool: Pool::Postgres(pool) });
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::from)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }
        // One connection: SQLite runs one writer at a time anyway, and writers that collide on
        // several connections wait in SQLite's busy handler, which sleeps in growing steps (up
        // to 100 ms); waiting in the pool's queue instead is fair and prompt. Reads take
        // microseconds. `max_connections` is for Postgres.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await
            .map_err(StoreError::from)?;
        Ok(Self { pool: Pool::Sqlite(pool) })
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

    /// One trivial round trip: does the database answer?
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Runs a purge statement whose only parameter is a cutoff; returns the rows deleted.
    async fn delete_before(&self, sql: &'static str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = with_pool!(self, pool => sqlx::query(sql)
            .bind(before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(deleted)
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
