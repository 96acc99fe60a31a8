//! The store's one error type, sorted by what a caller should do about it (retry, report a
//! conflict, or treat as a bug), and the classification of database error codes behind it.

/// What went wrong in the database, sorted by what the caller should hear.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write (for users: the email is taken).
    #[error("unique constraint violated")]
    UniqueViolation,
    /// The database cannot be reached or is refusing work for now; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug, a schema mismatch.
    #[error("database error: {0}")]
    Internal(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::Database(db) if db.is_unique_violation() => Self::UniqueViolation,
            E::Database(db) if is_transient(db.code().as_deref()) => Self::Unavailable(error),
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
                Self::Unavailable(error)
            }
            _ => Self::Internal(error),
        }
    }
}

/// Postgres SQLSTATE classes 08 (connection), 53 (insufficient resources), 57P (operator
/// intervention: shutdown, cannot connect now) and 40001/40P01 (serialization, deadlock);
/// SQLite's BUSY (5) and LOCKED (6), with or without extended bits.
fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
    {
        return true;
    }
    code.parse::<u32>().is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn connection_and_lock_codes_are_transient_and_others_are_not() {
        for code in ["08006", "57P01", "53300", "40001", "5", "517", "6"] {
            assert!(is_transient(Some(code)), "{code}");
        }
        for code in ["23505", "42P01", "1", "19"] {
            assert!(!is_transient(Some(code)), "{code}");
        }
        assert!(!is_transient(None));
    }
}
