//! Brute-force protection that slows the attacker instead of locking out the owner (OWASP
//! Authentication Cheat Sheet; NIST SP 800-63B-4 section 3.2.2).
//!
//! Two counters, both in the database so that every replica enforces them:
//! - **per (subject, client)**: a client's first `free_failures` wrong passwords on one email
//!   cost nothing; after that each attempt must wait `first_delay`, doubling per failure up to
//!   `max_delay`, before its password is even checked (RESOURCE_EXHAUSTED with RetryInfo, no
//!   hash spent). A success clears that client's delay. The attacker's own addresses slow down;
//!   the owner, on another address, is not affected.
//! - **per email, from all clients**: `lock_threshold` consecutive failures lock the email for
//!   `lock_duration`. A success from anyone resets the run.
//!
//! Every attempt is counted *before* its password is checked, in one atomic statement, so
//! parallel guesses cannot slip past a limit; an attempt that checked no password (shed by the
//! hash pool, refused by the email's lock) is taken back.
//!
//! An attempt refused only because the pair's free failures are taken up by checks still in
//! flight is not refused: it is parked (no CPU) until one of them ends, within its caller's
//! deadline, and asks again. A success among them clears the pair, so a client that logs in
//! with the right password from many requests at once is never refused for it; failures among
//! them leave the pair waiting and the parked attempt is refused then, so it checks nothing
//! more than it would have. Every other refusal is held for one hash job's time before it is
//! answered, so a client that resends at once makes no more requests than one whose password
//! is checked, and cheap refusals cannot take the cores from the hashing threads.
//!
//! ChangePassword uses the per-(account, client) counter with subject `user:<id>`, and ends the
//! caller's session at [`PASSWORD_CHANGE_FAILURES_END_SESSION`] failures.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::Identity;
use crate::{
    clients::Requester,
    domain::{NormalizedEmail, UserId},
    error::AppError,
    metrics::{LOCKOUTS, LOGIN_THROTTLED},
    store::{AccountCount, Admission, DelaySchedule},
};

/// How long a pair's failures are remembered after its last one. Shorter would hand an
/// attacker fresh free failures every time it expires; the rows it keeps are bounded by the
/// hash rate (every row was created by an attempt that cost a verify).
pub const THROTTLE_MEMORY: TimeDelta = TimeDelta::hours(24);

/// Wrong current passwords from one client on one account after which the session that sent
/// the last of them is revoked: a stolen access token buys at most this many guesses.
pub const PASSWORD_CHANGE_FAILURES_END_SESSION: i32 = 5;

/// Wait before retrying when the threshold is taken up by checks still in flight.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// How long a pair's checks count as in flight after its latest attempt: far longer than any
/// check takes (the hash pool's wait, one hash, a few queries), so a count left behind by a
/// replica that stopped mid-check, or by a caller that went away, stops parking anyone.
const IN_FLIGHT_LIFETIME: TimeDelta = TimeDelta::seconds(30);

/// The longest an attempt without a deadline stays parked behind checks of its pair.
const LONGEST_PARK: Duration = Duration::from_secs(10);

/// How often a parked attempt looks again on its own: checks on other replicas end without
/// waking this one.
const PARK_POLL: Duration = Duration::from_millis(100);

/// How long before its caller's deadline a held refusal is answered, so that the caller gets
/// RESOURCE_EXHAUSTED with its RetryInfo rather than DEADLINE_EXCEEDED.
const ANSWER_MARGIN: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub free_failures: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Consecutive failures per email that lock it; 0: never.
    pub lock_threshold: u32,
    pub lock_duration: Duration,
}

impl LockoutPolicy {
    pub(super) fn schedule(&self) -> DelaySchedule {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        DelaySchedule {
            free_failures: i32::try_from(self.free_failures).unwrap_or(i32::MAX),
            first_delay_ms: millis(self.first_delay),
            max_delay_ms: millis(self.max_delay.max(self.first_delay)),
        }
    }

    fn lock_threshold(&self) -> Option<i32> {
        (self.lock_threshold > 0).then(|| i32::try_from(self.lock_threshold).unwrap_or(i32::MAX))
    }
}

/// An attempt admitted past the counters, counted as a failure until it says otherwise.
pub(super) struct Ticket {
    subject: String,
    client: String,
    /// The pair's failures, this attempt included.
    pub(super) pair_failures: i32,
    /// The email's consecutive failures, this attempt included (`None`: not counted).
    account_failures: Option<i32>,
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn wait_until(now: DateTime<Utc>, until_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(until_ms.saturating_sub(millis(now))).unwrap_or(0))
}

pub(super) fn account_subject(user: UserId) -> String {
    format!("user:{user}")
}

impl Identity {
    /// Counts a login of `email` from `requester` before its password is checked, or refuses
    /// it (RESOURCE_EXHAUSTED with RetryInfo) while the pair waits out its delay or the email
    /// is locked. Unknown emails count exactly like registered ones, so nothing is revealed.
    pub(super) async fn admit_login(
        &self,
        email: &NormalizedEmail,
        requester: &Requester,
    ) -> Result<Ticket, AppError> {
        let mut ticket = self.admit(email.as_str().to_owned(), requester, "login").await?;
        let Some(threshold) = self.lockout.lock_threshold() else { return Ok(ticket) };
        let now = self.clock.now();
        match self.store.count_account_failure(&ticket.subject, millis(now), threshold).await? {
            AccountCount::Counted { failures } => {
                ticket.account_failures = Some(failures);
                Ok(ticket)
            }
            AccountCount::Locked { locked_until_ms } => {
                // This attempt checks no password: it must not cost the pair a turn either.
                self.store
                    .uncount_attempt(&ticket.subject, &ticket.client, millis(now), self.schedule)
                    .await?;
                self.settled.ended(&ticket.subject, &ticket.client);
                self.hold_refusal(requester).await;
                let retry_after =
                    if locked_until_ms == 0 { IN_FLIGHT_RETRY } else { wait_until(now, locked_until_ms) };
                metrics::counter!(crate::metrics::LOGINS, "outcome" => "locked_out").increment(1);
                tracing::info!(target: "audit", event = "login_locked_out", client = %requester.client,
                    retry_after_s = retry_after.as_secs());
                Err(AppError::LockedOut { retry_after })
            }
        }
    }

    /// Counts a ChangePassword attempt of `user` from `requester` (same delays as logins).
    pub(super) async fn admit_password_check(
        &self,
        user: UserId,
        requester: &Requester,
    ) -> Result<Ticket, AppError> {
        self.admit(account_subject(user), requester, "change_password").await
    }

    async fn admit(
        &self,
        subject: String,
        requester: &Requester,
        rpc: &'static str,
    ) -> Result<Ticket, AppError> {
        let client = requester.client.to_string();
        // Parked no later than leaves time for a hash before the caller's deadline.
        let park_until = {
            let longest = Instant::now() + LONGEST_PARK;
            requester.deadline.map_or(longest, |deadline| {
                longest.min(deadline.checked_sub(self.hasher.one_job()).unwrap_or_else(Instant::now))
            })
        };
        loop {
            let next_end = self.settled.next_end(&subject, &client);
            let now = self.clock.now();
            let stale_before = millis(now - IN_FLIGHT_LIFETIME);
            let admission =
                self.store.admit_attempt(&subject, &client, millis(now), self.schedule, stale_before).await?;
            let (retry_at_ms, in_flight) = match admission {
                Admission::Admitted { failures } => {
                    return Ok(Ticket { subject, client, pair_failures: failures, account_failures: None });
                }
                Admission::Throttled { retry_at_ms, in_flight } => (retry_at_ms, in_flight > 0),
            };
            let parked_at = Instant::now();
            if parked_at < park_until {
                // The wait ended between the two queries (a success cleared the pair, or an
                // unchecked attempt was taken back): ask again at once.
                if retry_at_ms <= millis(now) {
                    continue;
                }
                if in_flight {
                    let wake_at = park_until.min(parked_at + PARK_POLL);
                    let _ = tokio::time::timeout_at(wake_at.into(), next_end).await;
                    continue;
                }
            }
            metrics::counter!(LOGIN_THROTTLED, "rpc" => rpc).increment(1);
            if rpc == "login" {
                metrics::counter!(crate::metrics::LOGINS, "outcome" => "throttled").increment(1);
            }
            // Parked until its time ran out: it has waited already.
            let retry_after = if in_flight {
                IN_FLIGHT_RETRY
            } else {
                self.hold_refusal(requester).await;
                wait_until(now, retry_at_ms)
            };
            tracing::info!(target: "audit", event = "attempt_throttled", rpc, client = %requester.client,
                retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
            return Err(AppError::LockedOut { retry_after });
        }
    }

    /// Holds a refusal that cost no hash for one hash job's time, never past its caller's
    /// deadline (less a margin to answer): see the module.
    pub(super) async fn hold_refusal(&self, requester: &Requester) {
        let until = Instant::now() + self.hasher.one_job();
        let until = requester.deadline.map_or(until, |deadline| {
            until.min(deadline.checked_sub(ANSWER_MARGIN).unwrap_or_else(Instant::now))
        });
        tokio::time::sleep_until(until.into()).await;
    }

    /// The attempt checked no password (the hash pool shed it): take it back everywhere.
    pub(super) async fn attempt_unchecked(&self, ticket: &Ticket) -> Result<(), AppError> {
        let now = millis(self.clock.now());
        self.store.uncount_attempt(&ticket.subject, &ticket.client, now, self.schedule).await?;
        self.settled.ended(&ticket.subject, &ticket.client);
        if ticket.account_failures.is_some() {
            self.store.uncount_account_failure(&ticket.subject).await?;
        }
        Ok(())
    }

    /// The password was right: this client's delay and the email's run of failures end.
    pub(super) async fn attempt_succeeded(&self, ticket: &Ticket) -> Result<(), AppError> {
        self.store.clear_attempts(&ticket.subject, &ticket.client).await?;
        self.settled.ended(&ticket.subject, &ticket.client);
        if ticket.account_failures.is_some() {
            self.store.clear_account_failures(&ticket.subject).await?;
        }
        Ok(())
    }

    /// The password was wrong: the attempt stays counted, and is no longer in flight.
    pub(super) async fn attempt_failed(&self, ticket: &Ticket) -> Result<(), AppError> {
        self.store.settle_failed_attempt(&ticket.subject, &ticket.client).await?;
        self.settled.ended(&ticket.subject, &ticket.client);
        Ok(())
    }

    /// A login's password was wrong (see [`Self::attempt_failed`]). The failure that reaches
    /// the threshold locks the email: the moment worth an alert.
    pub(super) async fn login_failed(&self, ticket: &Ticket) -> Result<(), AppError> {
        self.attempt_failed(ticket).await?;
        let (Some(failures), Some(threshold)) = (ticket.account_failures, self.lockout.lock_threshold())
        else {
            return Ok(());
        };
        if failures < threshold {
            return Ok(());
        }
        let until =
            self.clock.now() + TimeDelta::from_std(self.lockout.lock_duration).unwrap_or(TimeDelta::MAX);
        if self.store.lock_account(&ticket.subject, millis(until), threshold).await? {
            metrics::counter!(LOCKOUTS).increment(1);
            tracing::warn!(target: "audit", event = "lockout", failures, lock_s = self.lockout.lock_duration.as_secs(),
                "consecutive failed logins from all clients reached the threshold: email locked");
        }
        Ok(())
    }

    /// Forgets pairs and emails with no failure for [`THROTTLE_MEMORY`].
    pub(super) async fn purge_throttle(&self, now: DateTime<Utc>) {
        match self.store.purge_login_throttle(millis(now - THROTTLE_MEMORY)).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged old login throttle rows"),
            Err(error) => tracing::warn!(%error, "could not purge old login throttle rows"),
        }
    }
}
