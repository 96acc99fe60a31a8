//! The `login_attempts` table: the failed-login counter behind brute-force lockout, keyed by
//! normalized email whether or not an account has it.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, with_pool};
use crate::domain::NormalizedEmail;

/// The state of an email's login window after counting one more attempt.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct AttemptWindow {
    /// Attempts in the window, this one included, that have not been cleared by a success.
    pub failures: i32,
    pub window_started_at: DateTime<Utc>,
}

impl Store {
    /// Counts a login attempt for `email` in one atomic upsert, before the password is
    /// checked, so that parallel guesses cannot slip past the limit. A window older than
    /// `window_start_cutoff` starts over.
    pub async fn count_login_attempt(
        &self,
        email: &NormalizedEmail,
        now: DateTime<Utc>,
        window_start_cutoff: DateTime<Utc>,
    ) -> Result<AttemptWindow, StoreError> {
        const SQL: &str =
            "INSERT INTO login_attempts (email_lower, failures, window_started_at) VALUES ($1, 1, $2)
             ON CONFLICT (email_lower) DO UPDATE SET
                 failures = CASE WHEN login_attempts.window_started_at <= $3 THEN 1
                                 ELSE login_attempts.failures + 1 END,
                 window_started_at = CASE WHEN login_attempts.window_started_at <= $3 THEN $2
                                          ELSE login_attempts.window_started_at END
             RETURNING failures, window_started_at";
        let window = with_pool!(self, pool => sqlx::query_as::<_, AttemptWindow>(SQL)
            .bind(email.as_str())
            .bind(now)
            .bind(window_start_cutoff)
            .fetch_one(pool)
            .await)?;
        Ok(window)
    }

    /// A successful login clears the count.
    pub async fn clear_login_attempts(&self, email: &NormalizedEmail) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM login_attempts WHERE email_lower = $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(email.as_str()).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Takes back one counted attempt whose password was never checked (the hash pool shed it).
    pub async fn uncount_login_attempt(&self, email: &NormalizedEmail) -> Result<(), StoreError> {
        const SQL: &str =
            "UPDATE login_attempts SET failures = failures - 1 WHERE email_lower = $1 AND failures > 0";
        with_pool!(self, pool => sqlx::query(SQL).bind(email.as_str()).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Forgets windows that started before `before`.
    pub async fn purge_login_attempts(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM login_attempts WHERE email_lower IN
             (SELECT email_lower FROM login_attempts WHERE window_started_at < $1 LIMIT $2)";
        self.delete_in_batches(SQL, before).await
    }
}
