//! The user-events stream as subscribers see it. The `user_events` table is the authority: a
//! subscriber catches up by paging through it from its cursor, then follows this replica's
//! [`EventFeed`], which one supervised task ([`EventSync`]) fills by reading what lies past its
//! position whenever a hint says there is news (a NOTIFY from any replica on Postgres; on
//! SQLite this process's own writes, or a timer). Positions come from the commit sequence, so
//! reading them in order is reading in commit order, and nothing read is ever preceded later by
//! something new. A cursor below what the retention purge deleted is OUT_OF_RANGE: the consumer
//! has missed events and must resynchronise.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

use super::{
    Identity,
    background::{RETRY, RETRY_CEILING},
};
use crate::{
    domain::EventRecord,
    error::AppError,
    store::{Store, StoreError},
    supervisor::{Supervised, TaskName},
};

/// Events read per query, by the feed and by a subscriber catching up.
pub const EVENT_PAGE: u32 = 500;
/// Batches a slow subscriber may fall behind by before it goes back to the table.
const BROADCAST_CAPACITY: usize = 1024;

/// What this replica has published of the stream: batches of events in commit order, each
/// after the last.
pub struct EventFeed {
    news: broadcast::Sender<Arc<[EventRecord]>>,
    /// The position up to which everything has been published. It only moves forward, across
    /// restarts of the task that moves it, so no event is ever skipped.
    published: AtomicU64,
}

impl EventFeed {
    /// A feed that starts after `position`: subscribers read anything up to it from the table.
    /// Built before the server serves, so no subscriber can fall between the two.
    pub fn new(position: u64) -> Self {
        Self { news: broadcast::Sender::new(BROADCAST_CAPACITY), published: AtomicU64::new(position) }
    }

    /// New batches from now on. Subscribe before catching up from the table, so nothing falls
    /// between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[EventRecord]>> {
        self.news.subscribe()
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    fn publish(&self, batch: Vec<EventRecord>, reached: u64) {
        if !batch.is_empty() {
            // No receiver is fine: nobody is watching.
            let _ = self.news.send(batch.into());
        }
        self.published.store(reached, Ordering::Release);
    }
}

/// Keeps the feed current: on every hint, reads and publishes everything past the published
/// position. A hint carries nothing that is believed. When hints may have been missed (a lost
/// connection), it subscribes again and reads anyway, so a lost hint delays and never loses.
pub struct EventSync {
    pub store: Store,
    pub feed: Arc<EventFeed>,
}

impl Supervised for EventSync {
    fn name(&self) -> TaskName {
        TaskName::EventSync
    }

    fn run(&self, stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        follow_events(self.store.clone(), Arc::clone(&self.feed), stop)
    }
}

async fn follow_events(store: Store, feed: Arc<EventFeed>, mut stop: watch::Receiver<bool>) {
    let mut retries = RETRY.build();
    loop {
        let reason = match store.listen_for_events().await {
            Ok(mut hints) => {
                retries = RETRY.build();
                loop {
                    // Read first: whatever was written before the LISTEN is found here.
                    if let Err(error) = publish_news(&store, &feed).await {
                        break format!("cannot read new user events: {error}");
                    }
                    tokio::select! {
                        hint = hints.next() => if let Err(reason) = hint { break reason },
                        _ = stop.changed() => return,
                    }
                }
            }
            Err(error) => format!("cannot listen for user events: {error}"),
        };
        tracing::warn!(%reason, "user events stream: following the table again after a pause");
        let retry = retries.next().unwrap_or(RETRY_CEILING);
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn publish_news(store: &Store, feed: &EventFeed) -> Result<(), StoreError> {
    loop {
        let page = store.events_after(feed.published(), EVENT_PAGE).await?;
        let Some(last) = page.last().map(|event| event.cursor) else { return Ok(()) };
        let full = page.len() == EVENT_PAGE as usize;
        feed.publish(page, last);
        if !full {
            return Ok(());
        }
    }
}

impl Identity {
    pub fn events(&self) -> &Arc<EventFeed> {
        &self.events
    }

    /// Where a subscriber starting after `after` begins: `after` itself, or for 0 the oldest
    /// event kept. OUT_OF_RANGE for a cursor the purge has passed, or one this stream never
    /// handed out.
    pub async fn event_start(&self, after: u64) -> Result<u64, AppError> {
        let bounds = self.store.event_bounds().await?;
        if after == 0 {
            return Ok(bounds.purged_through);
        }
        if after > bounds.head {
            return Err(AppError::OutOfRange(format!(
                "after_cursor {after} is ahead of this stream (latest {}): it comes from another \
                 database; resynchronise, then resume from a cursor this stream sent",
                bounds.head
            )));
        }
        self.check_retained(after, bounds.purged_through)?;
        Ok(after)
    }

    /// Up to [`EVENT_PAGE`] events after `after`, in commit order; OUT_OF_RANGE when the purge
    /// removed some of them (checked after the read, so a purge running meanwhile is noticed).
    pub async fn events_after(&self, after: u64) -> Result<Vec<EventRecord>, AppError> {
        let page = self.store.events_after(after, EVENT_PAGE).await?;
        let bounds = self.store.event_bounds().await?;
        self.check_retained(after, bounds.purged_through)?;
        Ok(page)
    }

    fn check_retained(&self, after: u64, purged_through: u64) -> Result<(), AppError> {
        if after < purged_through {
            let days = self.event_retention.num_hours() as f64 / 24.0;
            return Err(AppError::OutOfRange(format!(
                "after_cursor {after} is older than the event retention ({days} days): events after it \
                 were purged; resynchronise from the current state, then watch from after_cursor 0 \
                 or from a cursor received since"
            )));
        }
        Ok(())
    }

    /// Deletes events older than the retention (`IDENTITY_EVENT_RETENTION`).
    pub(super) async fn purge_events(&self, now: DateTime<Utc>) {
        let before = now.checked_sub_signed(self.event_retention).unwrap_or(DateTime::<Utc>::MIN_UTC);
        match self.store.purge_user_events(before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged user events past their retention"),
            Err(error) => tracing::warn!(%error, "could not purge old user events"),
        }
    }
}
