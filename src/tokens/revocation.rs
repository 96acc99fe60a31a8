//! Which sessions are revoked, held in memory so that validating a token needs no database
//! round trip. An entry is kept only as long as an access token issued before the revocation
//! could still be unexpired.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use uuid::Uuid;

pub struct RevocationSet {
    /// Session id -> the instant after which no token of that session can be unexpired.
    revoked: RwLock<HashMap<Uuid, DateTime<Utc>>>,
    /// How long after its revocation a session can still have an unexpired access token.
    horizon: TimeDelta,
    /// Whether the set is known to hold every revocation (false while the replica's
    /// notification connection is down and until it has reloaded from the database).
    synced: watch::Sender<bool>,
}

impl RevocationSet {
    pub fn new(access_token_ttl: Duration, synced: bool) -> Self {
        metrics::gauge!(crate::metrics::REVOKED_SESSIONS).set(0.0);
        metrics::gauge!(crate::metrics::REVOCATIONS_SYNCHRONISED).set(if synced { 1.0 } else { 0.0 });
        Self {
            revoked: RwLock::default(),
            horizon: TimeDelta::from_std(access_token_ttl).unwrap_or(TimeDelta::MAX),
            synced: watch::Sender::new(synced),
        }
    }

    pub fn horizon(&self) -> TimeDelta {
        self.horizon
    }

    pub fn is_revoked(&self, session_id: &Uuid) -> bool {
        self.revoked.read().is_ok_and(|revoked| revoked.contains_key(session_id))
    }

    /// Records sessions revoked at `revoked_at`.
    pub fn revoke(&self, session_ids: impl IntoIterator<Item = Uuid>, revoked_at: DateTime<Utc>) {
        let until = revoked_at + self.horizon;
        if let Ok(mut revoked) = self.revoked.write() {
            for id in session_ids {
                let entry = revoked.entry(id).or_insert(until);
                *entry = (*entry).max(until);
            }
            metrics::gauge!(crate::metrics::REVOKED_SESSIONS).set(revoked.len() as f64);
        }
    }

    /// Forgets revocations no token can be affected by any more.
    pub fn prune(&self, now: DateTime<Utc>) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.retain(|_, until| *until > now);
            metrics::gauge!(crate::metrics::REVOKED_SESSIONS).set(revoked.len() as f64);
        }
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
        let set = RevocationSet::new(Duration::from_secs(900), true);
        let now = Utc::now();
        let session = Uuid::new_v4();
        set.revoke([session], now);
        assert!(set.is_revoked(&session));
        assert!(!set.is_revoked(&Uuid::new_v4()));
        set.prune(now + TimeDelta::seconds(899));
        assert!(set.is_revoked(&session));
        set.prune(now + TimeDelta::seconds(900));
        assert!(!set.is_revoked(&session));
        assert!(set.is_empty());
    }

    #[test]
    fn a_later_revocation_of_the_same_session_extends_it() {
        let set = RevocationSet::new(Duration::from_secs(60), true);
        let now = Utc::now();
        let session = Uuid::new_v4();
        set.revoke([session], now + TimeDelta::seconds(30));
        set.revoke([session], now);
        set.prune(now + TimeDelta::seconds(61));
        assert!(set.is_revoked(&session));
    }
}
