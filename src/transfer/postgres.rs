//! Reading an old app's users table in Postgres, row by row (the server streams them; nothing
//! holds the whole table), as [`Line`]s. The defaults are the FastAPI tutorial's `users` table:
//! integer `id`, `email`, `hashed_password` (bytea holding bcrypt's text, or text),
//! `full_name`, `is_active`.

use std::{str::FromStr, time::Duration};

use sqlx::{Connection, PgConnection, Row, postgres::PgConnectOptions};
use tokio_stream::StreamExt;

use super::jsonl::Line;

/// How long connecting, and waiting for each next row, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ROW_TIMEOUT: Duration = Duration::from_secs(60);

/// Which table and columns hold what.
#[derive(Debug, Clone, clap::Args)]
pub struct Columns {
    /// The table (optionally schema-qualified: `public.users`).
    #[arg(long, default_value = "users")]
    pub table: String,
    /// The old id, kept as the external id.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    #[arg(long, default_value = "email")]
    pub email_column: String,
    /// bytea or text holding the hash.
    #[arg(long, default_value = "hashed_password")]
    pub password_column: String,
    /// "" when the table has no name column.
    #[arg(long, default_value = "full_name")]
    pub name_column: String,
    /// Honoured only with --keep-inactive ("" when there is none).
    #[arg(long, default_value = "is_active")]
    pub active_column: String,
    /// When the account was created ("" when there is none: the import time is used).
    #[arg(long, default_value = "")]
    pub created_column: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0} is not a valid table or column name")]
    BadName(String),
    #[error("cannot read the source database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the source database did not answer within {0:?}")]
    Timeout(Duration),
}

/// `name` quoted as a Postgres identifier, each dot-separated part on its own.
fn quoted(name: &str) -> Result<String, SourceError> {
    if name.is_empty() || name.split('.').any(|part| part.is_empty() || part.contains('\0')) {
        return Err(SourceError::BadName(name.to_owned()));
    }
    Ok(name.split('.').map(|part| format!("\"{}\"", part.replace('"', "\"\""))).collect::<Vec<_>>().join("."))
}

/// A column's value as text in the select list, or NULL when no column is named.
fn text_column(name: &str) -> Result<String, SourceError> {
    if name.is_empty() { Ok("NULL::text".into()) } else { Ok(format!("CAST({} AS text)", quoted(name)?)) }
}

/// The rows of the source table, in the id's order.
pub struct Source {
    connection: PgConnection,
    sql: String,
    keep_inactive: bool,
}

impl Source {
    pub async fn connect(url: &str, columns: &Columns, keep_inactive: bool) -> Result<Self, SourceError> {
        let active = if !columns.active_column.is_empty() {
            format!("CAST({} AS boolean)", quoted(&columns.active_column)?)
        } else {
            "NULL::boolean".into()
        };
        let created = if columns.created_column.is_empty() {
            "NULL::text".into()
        } else {
            // RFC 3339, as JSON Lines carries it.
            format!(
                "to_char(CAST({} AS timestamptz) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                quoted(&columns.created_column)?
            )
        };
        let sql = format!(
            "SELECT {id} AS id, {email} AS email, {hash} AS hash, {name} AS name, {active} AS active, \
             {created} AS created FROM {table} ORDER BY {order}",
            id = text_column(&columns.id_column)?,
            email = text_column(&columns.email_column)?,
            hash = quoted(&columns.password_column)?,
            name = text_column(&columns.name_column)?,
            table = quoted(&columns.table)?,
            order = quoted(&columns.id_column)?,
        );
        let options = PgConnectOptions::from_str(url)?
            .application_name("identity-import")
            .options([("default_transaction_read_only", "on")]);
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| SourceError::Timeout(CONNECT_TIMEOUT))??;
        Ok(Self { connection, sql, keep_inactive })
    }

    /// How many rows there are (for the progress bar).
    pub async fn count(&mut self, columns: &Columns) -> Result<u64, SourceError> {
        let sql = format!("SELECT count(*) FROM {}", quoted(&columns.table)?);
        let count: i64 =
            tokio::time::timeout(ROW_TIMEOUT, sqlx::query_scalar(&sql).fetch_one(&mut self.connection))
                .await
                .map_err(|_| SourceError::Timeout(ROW_TIMEOUT))??;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Calls `each` with every row as a [`Line`] and whether the source marked it inactive, in
    /// order; stops at the first error `each` returns. Without `keep_inactive` every line is
    /// active: the tutorial's `is_active` defaults to false and its login never reads it.
    pub async fn for_each<E: From<SourceError>>(
        mut self,
        mut each: impl AsyncFnMut(Line, bool) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rows = sqlx::query(&self.sql).fetch(&mut self.connection);
        loop {
            let next = tokio::time::timeout(ROW_TIMEOUT, rows.next())
                .await
                .map_err(|_| SourceError::Timeout(ROW_TIMEOUT))?;
            let Some(row) = next else { return Ok(()) };
            let row = row.map_err(SourceError::from)?;
            // bytea (what the tutorial stores) or text.
            let hash = match row.try_get::<Option<Vec<u8>>, _>("hash") {
                Ok(bytes) => bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                Err(_) => row.try_get::<Option<String>, _>("hash").map_err(SourceError::from)?,
            };
            let active: Option<bool> = row.try_get("active").map_err(SourceError::from)?;
            let line = Line {
                email: row
                    .try_get::<Option<String>, _>("email")
                    .map_err(SourceError::from)?
                    .unwrap_or_default(),
                full_name: row.try_get("name").map_err(SourceError::from)?,
                password_hash: hash,
                active: if self.keep_inactive { active } else { Some(true) },
                created: row.try_get("created").map_err(SourceError::from)?,
                external_id: row.try_get("id").map_err(SourceError::from)?,
                roles: Vec::new(),
            };
            each(line, active == Some(false)).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_part_by_part() {
        assert_eq!(quoted("users").unwrap(), "\"users\"");
        assert_eq!(quoted("public.users").unwrap(), "\"public\".\"users\"");
        assert_eq!(quoted("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert!(quoted("").is_err() && quoted("a..b").is_err());
    }
}
