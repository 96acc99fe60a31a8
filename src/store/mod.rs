//! Users and sessions in Postgres or SQLite, behind one type. The SQL is written once: both
//! databases take `$N` placeholders, `RETURNING` and `ON CONFLICT`, and every timestamp is bound
//! by the service (from its clock) rather than taken from the database's `now()`. No business
//! rules live here.

mod attempts;
mod error;
mod listener;
mod sessions;

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use uuid::Uuid;

pub use attempts::AttemptWindow;
pub use error::StoreError;
pub use listener::{LISTENER_APPLICATION_NAME, RevocationListener};
pub use sessions::{PasswordChange, REVOCATION_CHANNEL, Revocation, RevokedSession, Rotation};

use crate::tokens::RefreshTokenDigest;

/// A user row. `password_hash` is only read by the login path.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub full_name: String,
    #[sqlx(try_from = "String")]
    pub password_hash: crate::passwords::PasswordHash,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<String> for crate::passwords::PasswordHash {
    fn from(hash: String) -> Self {
        Self::new(hash)
    }
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub email_lower: &'a str,
    pub full_name: &'a str,
    pub password_hash: &'a str,
    pub now: DateTime<Utc>,
}

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub refresh_token_digest: &'a RefreshTokenDigest,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The connection pool of whichever database `IDENTITY_DATABASE_URL` names.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to a connection of the concrete pool, so that one piece of
/// sqlx code is type-checked once per backend without a tower of generic bounds. `$body`
/// evaluates to a `Result<_, sqlx::Error>`.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Postgres(pool) => match $crate::store::acquire(pool).await {
                Ok(mut connection) => {
                    let $pool = &mut *connection;
                    $body
                }
                Err(error) => Err(error),
            },
            Store::Sqlite(pool) => match $crate::store::acquire(pool).await {
                Ok(mut connection) => {
                    let $pool = &mut *connection;
                    $body
                }
                Err(error) => Err(error),
            },
        }
    };
}
pub(crate) use with_pool;

/// Takes a connection from the pool, recording how long that waited.
pub(crate) async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
    let started = std::time::Instant::now();
    let connection = pool.acquire().await;
    metrics::histogram!(crate::metrics::DB_ACQUIRE).record(started.elapsed().as_secs_f64());
    connection
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The columns `UserRecord` reads, in one place for every query that returns users.
macro_rules! user_columns {
    () => {
        "id, email, full_name, password_hash, is_active, created_at"
    };
}
pub(crate) use user_columns;

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
            return Ok(Self::Postgres(pool));
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
        Ok(Self::Sqlite(pool))
    }

    /// Applies pending migrations. sqlx takes a lock first, so replicas starting together are safe.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Self::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            Self::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
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
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }

    /// Connections open in the pool, and how many of them are idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        match self {
            Self::Postgres(pool) => (pool.size(), pool.num_idle()),
            Self::Sqlite(pool) => (pool.size(), pool.num_idle()),
        }
    }

    /// Inserts a user; `StoreError::UniqueViolation` when the lower-cased email is taken.
    pub async fn insert_user(&self, user: &NewUser<'_>) -> Result<UserRecord, StoreError> {
        const SQL: &str = concat!("INSERT INTO users (id, email, email_lower, full_name, password_hash, is_active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6)
             RETURNING ", user_columns!());
        let row = with_pool!(self, pool => sqlx::query_as::<_, UserRecord>(SQL)
            .bind(user.id)
            .bind(user.email)
            .bind(user.email_lower)
            .bind(user.full_name)
            .bind(user.password_hash)
            .bind(user.now)
            .fetch_one(pool)
            .await)?;
        Ok(row)
    }

    pub async fn find_user_by_email(&self, email_lower: &str) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE email_lower = $1");
        let row = with_pool!(self, pool => sqlx::query_as::<_, UserRecord>(SQL)
            .bind(email_lower)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }

    pub async fn find_user_by_id(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        let row = with_pool!(self, pool => sqlx::query_as::<_, UserRecord>(SQL)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row)
    }
}

impl Store {
    /// Activates or deactivates an account by email; false when there is no such account.
    pub async fn set_user_active(
        &self,
        email_lower: &str,
        active: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET is_active = $1, updated_at = $2 WHERE email_lower = $3";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(active)
            .bind(now)
            .bind(email_lower)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }
}
