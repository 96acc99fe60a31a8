//! Work that runs beside the RPCs, as supervised tasks: following revocations made by other
//! replicas and processes, and purging sessions nobody can use any more.

use std::{future::Future, sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use super::Identity;
use crate::{
    clock::Clock,
    store::{Hints, RevocationPosition, RevokedSession, Store, StoreError},
    supervisor::{Supervised, TaskName},
    tokens::RevocationSet,
};

/// Waits between attempts to re-synchronise: from 100 ms, doubling, each stretched by a random
/// 0-100 % so that replicas restarted together do not retry in lockstep; at most 5 s.
pub(super) const RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_millis(2500))
    .with_jitter()
    .without_max_times();
pub(super) const RETRY_CEILING: Duration = Duration::from_secs(5);
/// Expired and revoked sessions are kept this long (for audit and support) before deletion.
pub const SESSION_RETENTION: TimeDelta = TimeDelta::days(1);
/// Revocations read per query when catching up by cursor.
const CATCH_UP_PAGE: u32 = 1000;

/// Keeps the revocation set complete. The sessions table is the authority: subscribe to hints
/// first (a LISTEN on Postgres), then load recent revocations from the table and note the
/// revocation cursor, then on every hint read what lies past the cursor. A hint carries nothing
/// that is believed, so a forged or malformed NOTIFY costs one indexed read and no more. On
/// SQLite the hint is a timer. While the set may be missing revocations (at start, after a lost
/// connection or a failed read, after this task failed) it is marked unsynchronised, and
/// health says NOT_SERVING.
pub struct RevocationSync {
    pub store: Store,
    pub revocations: Arc<RevocationSet>,
    pub clock: Clock,
}

impl Supervised for RevocationSync {
    fn name(&self) -> TaskName {
        TaskName::RevocationSync
    }

    fn run(&self, stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        keep_in_sync(self.store.clone(), Arc::clone(&self.revocations), self.clock.clone(), stop)
    }

    /// Whatever happened while the task was down, the set cannot vouch for it.
    async fn failed(&self) {
        self.revocations.set_synced(false);
    }
}

async fn keep_in_sync(
    store: Store,
    revocations: Arc<RevocationSet>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut retries = RETRY.build();
    loop {
        match subscribe_and_reload(&store, &revocations, &clock).await {
            Ok((hints, position)) => {
                revocations.set_synced(true);
                retries = RETRY.build();
                tracing::info!(
                    revoked = revocations.len(),
                    cursor = position.cursor,
                    "revocation set synchronised; following the sessions table"
                );
                let Some(reason) = follow(&store, &revocations, hints, position, &mut stop).await else {
                    return;
                };
                revocations.set_synced(false);
                tracing::warn!(%reason, "revocation set may be missing revocations: re-synchronising");
            }
            Err(error) => {
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

/// Subscribes, then loads the revocations that can still affect a token and the cursor to
/// follow from. The cursor is read before the load: cursors are taken in commit order, so
/// everything up to it is in the load, and anything after it is read on the next hint.
async fn subscribe_and_reload(
    store: &Store,
    revocations: &RevocationSet,
    clock: &Clock,
) -> Result<(Hints, RevocationPosition), StoreError> {
    let hints = store.listen_for_revocations().await?;
    let cursor = store.revocation_cursor().await?;
    let since = clock.now().checked_sub_signed(revocations.horizon()).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let recent = store.sessions_revoked_since(since).await?;
    let cursor = recent.iter().map(RevokedSession::cursor).fold(cursor, u64::max);
    record(revocations, &recent);
    Ok((hints, RevocationPosition { cursor, session: None }))
}

/// Follows hints until a stop (`None`) or until revocations may have been missed (the reason).
async fn follow(
    store: &Store,
    revocations: &RevocationSet,
    mut hints: Hints,
    mut position: RevocationPosition,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    loop {
        tokio::select! {
            hint = hints.next() => if let Err(reason) = hint { return Some(reason) },
            _ = stop.changed() => return None,
        }
        match catch_up(store, revocations, position).await {
            Ok(reached) => position = reached,
            Err(error) => return Some(format!("cannot read new revocations: {error}")),
        }
    }
}

/// Reads and records every revocation past `position`; returns the position reached.
async fn catch_up(
    store: &Store,
    revocations: &RevocationSet,
    mut position: RevocationPosition,
) -> Result<RevocationPosition, StoreError> {
    loop {
        let page = store.revocations_after(position, CATCH_UP_PAGE).await?;
        record(revocations, &page);
        match page.last() {
            Some(last) => position = last.position(),
            None => return Ok(position),
        }
        if page.len() < CATCH_UP_PAGE as usize {
            return Ok(position);
        }
    }
}

fn record(revocations: &RevocationSet, rows: &[RevokedSession]) {
    for session in rows {
        revocations.revoke([session.id], session.revoked_at, session.cursor());
    }
}

/// Every `interval`, forgets what nobody can use any more: see [`Identity::purge`]. Nothing
/// depends on it for readiness: a failure is logged and counted, and the task restarted.
pub struct Purge {
    pub identity: Arc<Identity>,
    pub interval: Duration,
}

impl Supervised for Purge {
    fn name(&self) -> TaskName {
        TaskName::Purge
    }

    fn run(&self, mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let (identity, interval) = (Arc::clone(&self.identity), self.interval);
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
                identity.purge().await;
            }
        }
    }
}

impl Identity {
    /// Deletes sessions that expired or were revoked more than [`SESSION_RETENTION`] ago,
    /// records of mail sent before then, login throttle rows idle for `THROTTLE_MEMORY` and user
    /// events past their retention, and prunes revocations no token can be affected by.
    pub async fn purge(&self) {
        let now = self.clock.now();
        self.revocations.prune(now);
        match self.store.purge_sessions(now - SESSION_RETENTION).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged old sessions"),
            Err(error) => tracing::warn!(%error, "could not purge old sessions"),
        }
        match self.store.purge_mfa_challenges(now).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged expired login challenges"),
            Err(error) => tracing::warn!(%error, "could not purge expired login challenges"),
        }
        // An erased account's row goes once its revoked sessions may go, and never before every
        // token they issued has expired.
        let erased_before = now - SESSION_RETENTION.max(self.revocations.horizon());
        match self.store.purge_deleted_users(erased_before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged the rows of erased accounts"),
            Err(error) => tracing::warn!(%error, "could not purge the rows of erased accounts"),
        }
        if let Err(error) = self.store.purge_email_tokens(now - SESSION_RETENTION).await {
            tracing::warn!(%error, "could not purge expired email tokens");
        }
        match self.store.purge_sent_mail(now - SESSION_RETENTION).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "purged records of sent mail"),
            Err(error) => tracing::warn!(%error, "could not purge records of sent mail"),
        }
        self.purge_throttle(now).await;
        self.purge_events(now).await;
    }
}
