//! The two tables behind brute-force protection: `login_throttle`, progressive delays per
//! (subject, client), and `login_failures`, consecutive failed logins per email from every
//! client. Each step is one atomic statement, so parallel guesses on any replica cannot slip
//! past a limit. Times are Unix milliseconds (the service's clock, never the database's).

use super::{Store, StoreError, with_pool};

/// How delays grow for one (subject, client) pair.
#[derive(Debug, Clone, Copy)]
pub struct DelaySchedule {
    /// Failures that cost no wait; the next one waits `first_delay_ms`.
    pub free_failures: i32,
    pub first_delay_ms: i64,
    /// Each further failure doubles the wait, up to this.
    pub max_delay_ms: i64,
}

/// What counting one attempt for a (subject, client) pair decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted as a failure in advance (a success clears it), and as a check in flight until
    /// it is settled; `failures` includes this one.
    Admitted { failures: i32 },
    /// The pair must wait until `retry_at_ms`; nothing was counted. `in_flight`: checks of the
    /// pair counted in advance that have not ended, so the wait may end sooner (a success
    /// among them clears it).
    Throttled { retry_at_ms: i64, in_flight: i32 },
}

/// What counting one failure against an email's consecutive total decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCount {
    /// Counted in advance; `failures` includes this one.
    Counted { failures: i32 },
    /// The email is locked until `locked_until_ms` (0: the threshold is taken up by checks
    /// still in flight); nothing was counted.
    Locked { locked_until_ms: i64 },
}

impl Store {
    /// Counts an attempt of `client` on `subject` before its password is checked, unless the
    /// pair is still waiting out its delay. The delay after the `n`th failure is 0 while `n` is
    /// below the free failures, then `first_delay_ms`, doubling up to `max_delay_ms`. Checks in
    /// flight are counted too; those of a pair with no attempt since `stale_before_ms` are taken
    /// to have been lost (a replica stopped, or a caller went away, mid-check).
    pub async fn admit_attempt(
        &self,
        subject: &str,
        client: &str,
        now_ms: i64,
        schedule: DelaySchedule,
        stale_before_ms: i64,
    ) -> Result<Admission, StoreError> {
        // $4 free failures, $5 first delay, $6 max delay. In an upsert's SET every column
        // reference is the old row, on both databases.
        const SQL: &str = "INSERT INTO login_throttle
                 (subject, client, failures, delay_ms, next_attempt_ms, last_failure_ms, checking)
             VALUES ($1, $2, 1, CASE WHEN 1 < $4 THEN 0 ELSE $5 END,
                     $3 + CASE WHEN 1 < $4 THEN 0 ELSE $5 END, $3, 1)
             ON CONFLICT (subject, client) DO UPDATE SET
                 checking = CASE WHEN login_throttle.last_failure_ms < $7 THEN 1
                                 ELSE login_throttle.checking + 1 END,
                 failures = login_throttle.failures + 1,
                 delay_ms = CASE WHEN login_throttle.failures + 1 < $4 THEN 0
                                 WHEN login_throttle.delay_ms = 0 THEN $5
                                 WHEN login_throttle.delay_ms * 2 > $6 THEN $6
                                 ELSE login_throttle.delay_ms * 2 END,
                 next_attempt_ms = $3 + CASE WHEN login_throttle.failures + 1 < $4 THEN 0
                                 WHEN login_throttle.delay_ms = 0 THEN $5
                                 WHEN login_throttle.delay_ms * 2 > $6 THEN $6
                                 ELSE login_throttle.delay_ms * 2 END,
                 last_failure_ms = $3
             WHERE login_throttle.next_attempt_ms <= $3
             RETURNING failures";
        const WAITING: &str = "SELECT next_attempt_ms,
                 CASE WHEN last_failure_ms < $3 THEN 0 ELSE checking END
             FROM login_throttle WHERE subject = $1 AND client = $2";
        let admitted: Option<i32> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(subject)
            .bind(client)
            .bind(now_ms)
            .bind(schedule.free_failures)
            .bind(schedule.first_delay_ms)
            .bind(schedule.max_delay_ms)
            .bind(stale_before_ms)
            .fetch_optional(pool)
            .await)?;
        if let Some(failures) = admitted {
            return Ok(Admission::Admitted { failures });
        }
        let waiting: Option<(i64, i32)> = with_pool!(self, pool => sqlx::query_as(WAITING)
            .bind(subject)
            .bind(client)
            .bind(stale_before_ms)
            .fetch_optional(pool)
            .await)?;
        // The row can only have vanished through a success or a purge in between: retry at once.
        let (retry_at_ms, in_flight) = waiting.unwrap_or((now_ms, 0));
        Ok(Admission::Throttled { retry_at_ms, in_flight })
    }

    /// A check of the pair ended with a wrong password: it stays counted as a failure, and is
    /// no longer in flight.
    pub async fn settle_failed_attempt(&self, subject: &str, client: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE login_throttle
             SET checking = CASE WHEN checking > 0 THEN checking - 1 ELSE 0 END
             WHERE subject = $1 AND client = $2";
        with_pool!(self, pool => sqlx::query(SQL).bind(subject).bind(client).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Takes back an attempt whose password was never checked (shed, or refused by the
    /// email's lock): the pair may try again at once, with its earlier delay restored.
    pub async fn uncount_attempt(
        &self,
        subject: &str,
        client: &str,
        now_ms: i64,
        schedule: DelaySchedule,
    ) -> Result<(), StoreError> {
        const FIRST: &str = "DELETE FROM login_throttle WHERE subject = $1 AND client = $2 AND failures <= 1";
        const LATER: &str = "UPDATE login_throttle SET
                 failures = failures - 1,
                 delay_ms = CASE WHEN failures - 1 < $4 THEN 0 ELSE delay_ms / 2 END,
                 next_attempt_ms = $3,
                 checking = CASE WHEN checking > 0 THEN checking - 1 ELSE 0 END
             WHERE subject = $1 AND client = $2 AND failures > 1";
        with_pool!(self, pool => sqlx::query(FIRST).bind(subject).bind(client).execute(pool).await.map(drop))?;
        with_pool!(self, pool => sqlx::query(LATER)
            .bind(subject)
            .bind(client)
            .bind(now_ms)
            .bind(schedule.free_failures)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// A success clears the pair's delay.
    pub async fn clear_attempts(&self, subject: &str, client: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM login_throttle WHERE subject = $1 AND client = $2";
        with_pool!(self, pool => sqlx::query(SQL).bind(subject).bind(client).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Counts a login for `email` against its consecutive failures before the password is
    /// checked, unless the email is locked or `threshold` checks are already counted. An
    /// expired lock starts the count over.
    pub async fn count_account_failure(
        &self,
        email: &str,
        now_ms: i64,
        threshold: i32,
    ) -> Result<AccountCount, StoreError> {
        const SQL: &str =
            "INSERT INTO login_failures (email_lower, failures, locked_until_ms, last_failure_ms)
             VALUES ($1, 1, 0, $2)
             ON CONFLICT (email_lower) DO UPDATE SET
                 failures = CASE WHEN login_failures.locked_until_ms <> 0 THEN 1
                                 ELSE login_failures.failures + 1 END,
                 locked_until_ms = 0,
                 last_failure_ms = $2
             WHERE (login_failures.locked_until_ms <> 0 AND login_failures.locked_until_ms <= $2)
                OR (login_failures.locked_until_ms = 0 AND login_failures.failures < $3)
             RETURNING failures";
        const LOCKED: &str = "SELECT locked_until_ms FROM login_failures WHERE email_lower = $1";
        let counted: Option<i32> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(email)
            .bind(now_ms)
            .bind(threshold)
            .fetch_optional(pool)
            .await)?;
        if let Some(failures) = counted {
            return Ok(AccountCount::Counted { failures });
        }
        let locked_until_ms: Option<i64> =
            with_pool!(self, pool => sqlx::query_scalar(LOCKED).bind(email).fetch_optional(pool).await)?;
        Ok(AccountCount::Locked { locked_until_ms: locked_until_ms.unwrap_or(0) })
    }

    /// Locks `email` until `until_ms` once its count has reached `threshold`. True when this
    /// call locked it (so the lock is reported once).
    pub async fn lock_account(&self, email: &str, until_ms: i64, threshold: i32) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE login_failures SET locked_until_ms = $2
             WHERE email_lower = $1 AND failures >= $3 AND locked_until_ms = 0";
        let locked = with_pool!(self, pool => sqlx::query(SQL)
            .bind(email)
            .bind(until_ms)
            .bind(threshold)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(locked > 0)
    }

    /// Takes back a counted login whose password was never checked.
    pub async fn uncount_account_failure(&self, email: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE login_failures SET failures = failures - 1
             WHERE email_lower = $1 AND failures > 0 AND locked_until_ms = 0";
        with_pool!(self, pool => sqlx::query(SQL).bind(email).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// A successful login ends the run of consecutive failures.
    pub async fn clear_account_failures(&self, email: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM login_failures WHERE email_lower = $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(email).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Forgets pairs and emails with no failure since `before_ms` (an email also only once its
    /// lock, if any, ended before then), in batches like the other purges. Returns the rows
    /// deleted.
    pub async fn purge_login_throttle(&self, before_ms: i64) -> Result<u64, StoreError> {
        const PAIRS: &str = "DELETE FROM login_throttle WHERE (subject, client) IN
             (SELECT subject, client FROM login_throttle WHERE last_failure_ms < $1 LIMIT $2)";
        const EMAILS: &str = "DELETE FROM login_failures WHERE email_lower IN
             (SELECT email_lower FROM login_failures
              WHERE last_failure_ms < $1 AND locked_until_ms < $1 LIMIT $2)";
        let mut total = 0;
        for sql in [PAIRS, EMAILS] {
            total += self.delete_in_batches(sql, before_ms).await?;
        }
        Ok(total)
    }
}
