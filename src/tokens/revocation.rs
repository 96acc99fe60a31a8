//! Which sessions are revoked, held in memory so that validating a token needs no database
//! round trip. An entry is kept only as long as an access token issued before the revocation
//! could still be unexpired. New entries are also broadcast to WatchRevocations streams.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{broadcast, watch};

use crate::domain::SessionId;

/// Revocations that reached this set newly, in the order they did.
#[derive(Debug, Clone)]
pub struct RevocationBatch {
    pub cursor: u64,
    pub sessions: Vec<(SessionId, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// After this instant no token of the session can be unexpired.
    until: DateTime<Utc>,
    revoked_at: DateTime<Utc>,
    cursor: u64,
}

/// How far back a resuming watcher is re-sent revocations regardless of its cursor: a replica
/// records its own revocation at once, possibly before it hears of an earlier one committed on
/// another replica, so a cursor alone could skip that one. Duplicates are harmless.
const RESUME_OVERLAP: TimeDelta = TimeDelta::seconds(10);
/// Batches a slow watcher may fall behind by before its stream is closed (it then resumes).
const BROADCAST_CAPACITY: usize = 1024;

pub struct RevocationSet {
    revoked: RwLock<HashMap<SessionId, Entry>>,
    /// How long after its revocation a session can still have an unexpired access token.
    horizon: TimeDelta,
    /// Whether the set is known to hold every revocation (false while the replica's
    /// notification connection is down and until it has reloaded from the database).
    synced: watch::Sender<bool>,
    news: broadcast::Sender<RevocationBatch>,
}

impl RevocationSet {
    /// An empty set, not yet synchronised.
    pub fn new(access_token_ttl: Duration) -> Self {
        metrics::gauge!(crate::metrics::REVOKED_SESSIONS).set(0.0);
        metrics::gauge!(crate::metrics::REVOCATIONS_SYNCHRONISED).set(0.0);
        Self {
            revoked: RwLock::default(),
            horizon: TimeDelta::from_std(access_token_ttl).unwrap_or(TimeDelta::MAX),
            synced: watch::Sender::new(false),
            news: broadcast::Sender::new(BROADCAST_CAPACITY),
        }
    }

    pub fn horizon(&self) -> TimeDelta {
        self.horizon
    }

    pub fn is_revoked(&self, session_id: &SessionId) -> bool {
        self.revoked.read().is_ok_and(|revoked| revoked.contains_key(session_id))
    }

    /// Records sessions revoked at `revoked_at` under `cursor` (0 when unknown), and tells the
    /// watchers about those it did not know yet.
    pub fn revoke(
        &self,
        session_ids: impl IntoIterator<Item = SessionId>,
        revoked_at: DateTime<Utc>,
        cursor: u64,
    ) {
        // `revoked_at` comes from a database row: a value near the end of time must not panic.
        let until = revoked_at.checked_add_signed(self.horizon).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut news = Vec::new();
        if let Ok(mut revoked) = self.revoked.write() {
            for id in session_ids {
                match revoked.get_mut(&id) {
                    Some(entry) => {
                        entry.until = entry.until.max(until);
                        entry.cursor = entry.cursor.max(cursor);
                    }
                    None => {
                        revoked.insert(id, Entry { until, revoked_at, cursor });
                        news.push((id, until));
                    }
                }
            }
            metrics::gauge!(crate::metrics::REVOKED_SESSIONS).set(revoked.len() as f64);
        }
        if !news.is_empty() {
            // No receiver is fine: nobody is watching.
            let _ = self.news.send(RevocationBatch { cursor, sessions: news });
        }
    }

    /// Forgets revocations no token can be affected by any more.
    pub fn prune(&self, now: DateTime<Utc>) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.retain(|_, entry| entry.until > now);
            metrics::gauge!(crate::metrics::REVOKED_SESSIONS).set(revoked.len() as f64);
        }
    }

    /// New revocations from now on. Subscribe before taking [`RevocationSet::catch_up`], so
    /// nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<RevocationBatch> {
        self.news.subscribe()
    }

    /// What a watcher resuming after `since` (0: from scratch) needs, in cursor order, and the
    /// cursor to resume from after it.
    pub fn catch_up(&self, since: u64, now: DateTime<Utc>) -> (Vec<(SessionId, DateTime<Utc>)>, u64) {
        let Ok(revoked) = self.revoked.read() else { return (Vec::new(), since) };
        let mut entries: Vec<(SessionId, Entry)> = revoked
            .iter()
            .filter(|(_, e)| {
                e.until > now
                    && (since == 0
                        || e.cursor > since
                        || Some(e.revoked_at) > now.checked_sub_signed(RESUME_OVERLAP))
            })
            .map(|(id, e)| (*id, *e))
            .collect();
        entries.sort_by_key(|(_, e)| e.cursor);
        let cursor = revoked.values().map(|e| e.cursor).max().unwrap_or(0).max(since);
        (entries.into_iter().map(|(id, e)| (id, e.until)).collect(), cursor)
    }

    pub fn len(&self) -> usize {
        self.revoked.read().map_or(0, |revoked| revoked.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub fn set_synced(&self, synced: bool) {
        metrics::gauge!(crate::metrics::REVOCATIONS_SYNCHRONISED).set(if synced { 1.0 } else { 0.0 });
        self.synced.send_replace(synced);
    }

    /// Follows the synchronisation state (for health).
    pub fn watch_synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_lasts_as_long_as_an_access_token_could() {
        let set = RevocationSet::new(Duration::from_secs(900));
        let now = Utc::now();
        let session = SessionId::new();
        set.revoke([session], now, 1);
        assert!(set.is_revoked(&session));
        assert!(!set.is_revoked(&SessionId::new()));
        set.prune(now + TimeDelta::seconds(899));
        assert!(set.is_revoked(&session));
        set.prune(now + TimeDelta::seconds(900));
        assert!(!set.is_revoked(&session));
        assert!(set.is_empty());
    }

    #[test]
    fn a_revocation_at_the_end_of_time_is_kept_not_a_panic() {
        let set = RevocationSet::new(Duration::from_secs(900));
        let session = SessionId::new();
        set.revoke([session], DateTime::<Utc>::MAX_UTC, 1);
        set.prune(Utc::now());
        assert!(set.is_revoked(&session));
        assert_eq!(set.catch_up(0, Utc::now()).0.len(), 1);
    }

    #[test]
    fn a_later_revocation_of_the_same_session_extends_it() {
        let set = RevocationSet::new(Duration::from_secs(60));
        let now = Utc::now();
        let session = SessionId::new();
        set.revoke([session], now + TimeDelta::seconds(30), 2);
        set.revoke([session], now, 1);
        set.prune(now + TimeDelta::seconds(61));
        assert!(set.is_revoked(&session));
    }

    #[test]
    fn only_news_is_broadcast_and_catch_up_resumes_after_a_cursor() {
        let set = RevocationSet::new(Duration::from_secs(900));
        let mut news = set.subscribe();
        let old = Utc::now() - TimeDelta::seconds(60);
        let (a, b) = (SessionId::new(), SessionId::new());
        set.revoke([a], old, 1);
        set.revoke([a], old, 1);
        set.revoke([b], old, 2);
        assert_eq!(news.try_recv().unwrap().sessions[0].0, a);
        assert_eq!(news.try_recv().unwrap().sessions[0].0, b);
        assert!(news.try_recv().is_err(), "a known revocation is not news");

        let now = Utc::now();
        let (everything, cursor) = set.catch_up(0, now);
        assert_eq!(everything.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a, b]);
        assert_eq!(cursor, 2);
        let (after_first, _) = set.catch_up(1, now);
        assert_eq!(after_first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [b]);
        // Recent revocations are re-sent whatever the cursor.
        let c = SessionId::new();
        set.revoke([c], now, 3);
        let (resumed, _) = set.catch_up(5, now);
        assert_eq!(resumed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [c]);
    }
}
