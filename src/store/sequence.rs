//! The commit sequence: one counter row (`revocation_cursor`, named after its first user) from
//! which every transaction that must be read in commit order takes its positions: revocations
//! (WatchRevocations' cursor) and user events (WatchUserEvents' cursor). Taking a position
//! updates the row, and its lock is held until the transaction ends, so positions are handed
//! out in commit order across every replica: whoever sees position N committed has seen every
//! lower position that will ever commit. On SQLite, one writer at a time gives the same order.
//!
//! Lock order: a transaction takes the sequence after its own row writes (the revocation's
//! session rows excepted, which it marks right after), so that two writers never wait for each
//! other in opposite orders. Every statement sent while holding the lock is time every other
//! writer waits, on every replica (docs/operations.md, "What limits events per second"): take it
//! last, and send as little as possible after it.

use sqlx::{PgConnection, SqliteConnection};

/// Takes `count` (at least 1) consecutive positions and returns the last of them.
const TAKE: &str = "UPDATE revocation_cursor SET value = value + $1 WHERE id = 1 RETURNING value";
/// The latest position handed out, committed or spent.
pub(super) const LATEST: &str = "SELECT value FROM revocation_cursor WHERE id = 1";

pub(super) trait CommitSequence {
    /// The next `count` positions in commit order, as `first..=last`; the lock on the sequence
    /// is held from here to the end of the transaction.
    async fn take_positions(&mut self, count: u32) -> Result<std::ops::RangeInclusive<i64>, sqlx::Error>;
}

macro_rules! commit_sequence {
    ($connection:ty) => {
        impl CommitSequence for $connection {
            async fn take_positions(
                &mut self,
                count: u32,
            ) -> Result<std::ops::RangeInclusive<i64>, sqlx::Error> {
                let count = i64::from(count.max(1));
                let last: i64 = sqlx::query_scalar(TAKE).bind(count).fetch_one(&mut *self).await?;
                Ok(last - count + 1..=last)
            }
        }
    };
}
commit_sequence!(PgConnection);
commit_sequence!(SqliteConnection);
