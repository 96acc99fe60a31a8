//! Hints that a table has news, for the tasks that follow it: on Postgres a LISTEN on its own
//! connection, one channel per stream ([`REVOCATION_CHANNEL`], [`EVENTS_CHANNEL`]); on SQLite,
//! where one process owns the database, a timer (for writes by another process, the operator
//! CLI) and, for events, a wake from this process's own writes. A notification is only a hint:
//! any role that can connect can NOTIFY, so its payload is never read, and the follower reads
//! the table instead.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::Notify;

use super::{EVENTS_CHANNEL, Pool, REVOCATION_CHANNEL, Store, StoreError};

/// Marks the revocation listener's connection in `pg_stat_activity`, for operators (and tests)
/// to find it.
pub const LISTENER_APPLICATION_NAME: &str = "identity-revocation-listener";
/// The same for the user-events listener.
pub const EVENT_LISTENER_APPLICATION_NAME: &str = "identity-event-listener";
/// How often a SQLite server looks for rows written by another process; SQLite has no NOTIFY.
const SQLITE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A subscription to hints that a table has news.
pub enum Hints {
    Notifications(PgListener),
    /// SQLite: the poll timer, and this process's own writes when `wake` is set.
    Local {
        wake: Option<Arc<Notify>>,
    },
}

impl Store {
    /// Subscribes to revocation announcements. The LISTEN is in place when this returns, so a
    /// reload done afterwards misses nothing.
    pub async fn listen_for_revocations(&self) -> Result<Hints, StoreError> {
        self.listen(REVOCATION_CHANNEL, LISTENER_APPLICATION_NAME, None).await
    }

    /// Subscribes to announcements of new user events, as [`Store::listen_for_revocations`].
    pub async fn listen_for_events(&self) -> Result<Hints, StoreError> {
        self.listen(EVENTS_CHANNEL, EVENT_LISTENER_APPLICATION_NAME, self.events_written.clone()).await
    }

    async fn listen(
        &self,
        channel: &str,
        application_name: &str,
        wake: Option<Arc<Notify>>,
    ) -> Result<Hints, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(Hints::Local { wake }) };
        // A pool of its own: the listener holds its connection for good, and a pooler in
        // transaction mode would break LISTEN, so it must be a direct session.
        let options = (*pool.connect_options()).clone().application_name(application_name);
        let dedicated = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&dedicated).await?;
        listener.listen(channel).await?;
        Ok(Hints::Notifications(listener))
    }
}

impl Hints {
    /// Waits for the next hint: `Ok` when it is time to look (hints that arrived meanwhile are
    /// folded into it), an error saying why when hints may have been missed (the connection
    /// was lost).
    pub async fn next(&mut self) -> Result<(), String> {
        match self {
            Self::Notifications(listener) => match listener.try_recv().await {
                Ok(Some(_)) => {
                    while listener.next_buffered().is_some() {}
                    Ok(())
                }
                Ok(None) => Err("lost the notification connection".to_owned()),
                Err(error) => Err(StoreError::from(error).to_string()),
            },
            Self::Local { wake: Some(wake) } => {
                tokio::select! {
                    () = tokio::time::sleep(SQLITE_POLL_INTERVAL) => {}
                    () = wake.notified() => {}
                }
                Ok(())
            }
            Self::Local { wake: None } => {
                tokio::time::sleep(SQLITE_POLL_INTERVAL).await;
                Ok(())
            }
        }
    }
}
