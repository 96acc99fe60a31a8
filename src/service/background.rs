//! Work that runs beside the RPCs: following revocations made by other replicas, and purging
//! sessions nobody can use any more.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::TimeDelta;
use tokio::sync::watch;

use super::Identity;
use crate::{
    clock::Clock,
    store::{RevokedSession, Store},
    tokens::RevocationSet,
};

/// Waits between attempts to re-synchronise: from 100 ms, doubling, each stretched by a random
/// 0-100 % so that replicas restarted together do not retry in lockstep; at most 5 s.
const RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_millis(2500))
    .with_jitter()
    .without_max_times();
const RETRY_CEILING: Duration = Duration::from_secs(5);
/// Expired and revoked sessions are kept this long (for audit and support) before deletion.
pub const SESSION_RETENTION: TimeDelta = TimeDelta::days(1);

/// Keeps `revocations` complete: subscribe to announcements first, then reload recent
/// revocations from the sessions table, then follow the announcements. When the subscription
/// drops, the set is marked unsynchronised (health says so) until the cycle has run again.
/// On SQLite there is nothing to subscribe to: one reload, then a light poll of the sessions
/// table for revocations written by other processes.
pub async fn keep_revocations_in_sync(
    store: Store,
    revocations: Arc<RevocationSet>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut retries = RETRY.build();
    loop {
        let subscription = store.listen_for_revocations().await;
        let reload = match &subscription {
            Ok(_) => store.sessions_revoked_since(clock.now() - revocations.horizon()).await,
            Err(_) => Ok(Vec::new()),
        };
        match (subscription, reload) {
            (Ok(listener), Ok(recent)) => {
                record(&revocations, recent);
                revocations.set_synced(true);
                retries = RETRY.build();
                let Some(mut listener) = listener else {
                    poll_revocations(&store, &revocations, &clock, &mut stop).await;
                    return;
                };
                tracing::info!(
                    revoked = revocations.len(),
                    "revocation set synchronised; following announcements"
                );
                loop {
                    tokio::select! {
                        next = listener.next() => match next {
                            Ok(Some(revocation)) => {
                                revocations.revoke(revocation.session_ids, revocation.revoked_at, revocation.cursor);
                            }
                            Ok(None) | Err(_) => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
                revocations.set_synced(false);
                tracing::warn!("lost the revocation notification connection: re-synchronising");
            }
            (Err(error), _) | (_, Err(error)) => {
                revocations.set_synced(false);
                tracing::warn!(%error, "cannot synchronise the revocation set");
            }
        }
        let retry = retries.next().unwrap_or(RETRY_CEILING);
        tracing::debug!(retry_in = ?retry, "re-synchronising the revocation set");
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
    }
}

fn record(revocations: &RevocationSet, recent: Vec<RevokedSession>) {
    for session in recent {
        revocations.revoke([session.id], session.revoked_at, session.cursor());
    }
}

/// How often a SQLite server looks for revocations written by another process (the operator
/// CLI), and how far back each look reaches, to cover writes committed late with an earlier
/// timestamp.
const SQLITE_POLL_INTERVAL: Duration = Duration::from_secs(1);
const SQLITE_POLL_OVERLAP: TimeDelta = TimeDelta::seconds(10);

/// SQLite has no NOTIFY. This process records its own revocations as it makes them; this
/// picks up those of other processes on the same file, such as `identity user deactivate`.
async fn poll_revocations(
    store: &Store,
    revocations: &RevocationSet,
    clock: &Clock,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        let since = clock.now() - SQLITE_POLL_OVERLAP;
        tokio::select! {
            _ = tokio::time::sleep(SQLITE_POLL_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        match store.sessions_revoked_since(since).await {
            Ok(recent) => record(revocations, recent),
            Err(error) => tracing::warn!(%error, "cannot read recent revocations"),
        }
    }
}

/// Every `interval`, forgets what nobody can use any more: see [`Identity::purge`].
pub async fn purge_periodically(
    identity: Arc<Identity>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        identity.purge().await;
    }
}

impl Identity {
    /// Deletes sessions that expired or were revoked more than [`SESSION_RETENTION`] ago and
    /// login windows that have passed, and prunes revocations no token can be affected by.
    pub async fn purge(&self) {
        let now = self.clock.now();
        self.revocations.prune(now);
        match self.store.purge_sessions(now - SESSION_RETENTION).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged old sessions"),
            Err(error) => tracing::warn!(%error, "could not purge old sessions"),
        }
        if let Some(lockout) = &self.lockout
            && let Err(error) = self.store.purge_login_attempts(now - lockout.window).await
        {
            tracing::warn!(%error, "could not purge old login attempts");
        }
    }
}
