//! The Postgres end of revocation propagation: a LISTEN on its own connection. A notification
//! on [`REVOCATION_CHANNEL`] is only a hint that the sessions table has news: any role that can
//! connect can NOTIFY, so its payload is never read, and the caller reads the table instead.

use super::{Pool, REVOCATION_CHANNEL, Store, StoreError};
use sqlx::postgres::{PgListener, PgPoolOptions};

/// Marks the listener's connection in `pg_stat_activity`, for operators (and tests) to find it.
pub const LISTENER_APPLICATION_NAME: &str = "identity-revocation-listener";

/// A subscription to revocations announced by any replica.
pub struct RevocationListener {
    listener: PgListener,
}

impl Store {
    /// Subscribes to revocation announcements: `None` on SQLite, where one process owns the
    /// database and learns of every revocation in process. The LISTEN is in place when this
    /// returns, so a reload done afterwards misses nothing.
    pub async fn listen_for_revocations(&self) -> Result<Option<RevocationListener>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        // A pool of its own: the listener holds its connection for good, and a pooler in
        // transaction mode would break LISTEN, so it must be a direct session.
        let options = (*pool.connect_options()).clone().application_name(LISTENER_APPLICATION_NAME);
        let dedicated = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&dedicated).await?;
        listener.listen(REVOCATION_CHANNEL).await?;
        Ok(Some(RevocationListener { listener }))
    }
}

impl RevocationListener {
    /// Waits for the next hint: `Ok(true)` when something was announced (announcements that
    /// arrived meanwhile are folded into it), `Ok(false)` when the connection was lost and
    /// announcements may have been missed.
    pub async fn next_hint(&mut self) -> Result<bool, StoreError> {
        if self.listener.try_recv().await?.is_none() {
            return Ok(false);
        }
        while self.listener.next_buffered().is_some() {}
        Ok(true)
    }
}
