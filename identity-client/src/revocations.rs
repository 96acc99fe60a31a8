//! The revoked sessions, kept current by `TokenService.WatchRevocations`, and the policy for the
//! times when the stream is down.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::{sync::watch, time::Instant};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    config::RevocationPolicy,
    error::Rejection,
    proto::{TokenServiceClient, WatchRevocationsRequest, WatchRevocationsResponse},
    verify::unix_now,
};

/// Waits before reopening a broken stream: from 100 ms, doubling after each failure, each
/// stretched by a random 0-100 % so that a fleet of consumers does not reconnect in lockstep
/// after a server restart; at most 5 s.
const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_millis(2500))
    .with_jitter()
    .without_max_times();
const BACKOFF_CEILING: Duration = Duration::from_secs(5);
/// The server sends a heartbeat every 10 s when idle: a stream silent for this long is broken
/// even if TCP has not noticed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often entries past their `relevant_until` are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// `relevant_until` for an entry the server sent without one (it always sends one).
const DEFAULT_RELEVANCE_SECS: i64 = 24 * 60 * 60;

pub(crate) struct Revocations {
    /// Session id -> Unix second after which no token of the session can be unexpired.
    revoked: RwLock<HashMap<Uuid, i64>>,
    /// The stream is open and has caught up: every revocation is known.
    synced: AtomicBool,
    synced_changes: watch::Sender<bool>,
    /// Milliseconds from `started` to the last message received (or 0: none yet).
    last_message_ms: AtomicU64,
    started: Instant,
    policy: RevocationPolicy,
}

impl Revocations {
    pub fn new(policy: RevocationPolicy) -> Self {
        Self {
            revoked: RwLock::default(),
            synced: AtomicBool::new(false),
            synced_changes: watch::Sender::new(false),
            last_message_ms: AtomicU64::new(0),
            started: Instant::now(),
            policy,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.synced_changes.subscribe()
    }

    /// Refuses a token of session `sid` if the session is revoked, or if the policy refuses
    /// everything while revocations may be missing. `now` is seconds since the Unix epoch.
    pub fn check(&self, sid: &Uuid, now: i64) -> Result<(), Rejection> {
        if !self.is_synced() {
            match self.policy {
                RevocationPolicy::FailClosed => return Err(Rejection::RevocationsUnavailable),
                RevocationPolicy::FailOpen { max_staleness } => {
                    if self.since_last_message() > max_staleness {
                        return Err(Rejection::RevocationsUnavailable);
                    }
                }
            }
        }
        let revoked = self.revoked.read().map_err(|_| Rejection::RevocationsUnavailable)?;
        match revoked.get(sid) {
            Some(&until) if now < until => Err(Rejection::Revoked),
            _ => Ok(()),
        }
    }

    fn since_last_message(&self) -> Duration {
        let last = Duration::from_millis(self.last_message_ms.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(last)
    }

    fn received(&self, message: &WatchRevocationsResponse) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_message_ms.store(ms, Ordering::Release);
        if !message.revoked.is_empty() {
            let now = unix_now();
            if let Ok(mut revoked) = self.revoked.write() {
                for session in &message.revoked {
                    let Ok(sid) = session.session_id.parse::<Uuid>() else {
                        tracing::warn!(session_id = %session.session_id, "ignoring a revocation with a malformed session id");
                        continue;
                    };
                    let until = session
                        .relevant_until
                        .as_ref()
                        .map_or(now.saturating_add(DEFAULT_RELEVANCE_SECS), |until| until.seconds);
                    let entry = revoked.entry(sid).or_insert(until);
                    *entry = (*entry).max(until);
                }
            }
        }
        if message.caught_up {
            self.set_synced(true);
        }
    }

    fn set_synced(&self, synced: bool) {
        if self.synced.swap(synced, Ordering::AcqRel) != synced {
            if synced {
                tracing::info!("revocation stream caught up");
            } else {
                tracing::warn!("revocation stream lost: revocations may be missed until it catches up again");
            }
            self.synced_changes.send_replace(synced);
        }
    }

    fn prune(&self, now: i64) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.retain(|_, until| now < *until);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.revoked.read().map(|revoked| revoked.len()).unwrap_or(0)
    }
}

/// Keeps `state` current for as long as it runs: opens the stream, applies each message,
/// and reopens it with backoff, resuming from the last cursor, whenever it fails, ends or goes
/// silent. `authorization` (the service key, as metadata) goes with every opening; a refused or
/// revoked key is retried like any failure, and the revocation policy decides meanwhile.
pub(crate) async fn keep_watching(
    state: std::sync::Arc<Revocations>,
    client: TokenServiceClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    rpc_timeout: Duration,
) {
    let mut cursor = 0_u64;
    let mut backoff = BACKOFF.build();
    let mut last_prune = Instant::now();
    loop {
        let mut request = tonic::Request::new(WatchRevocationsRequest { since: cursor });
        if let Some(authorization) = &authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        let opened = tokio::time::timeout(rpc_timeout, client.clone().watch_revocations(request)).await;
        match opened {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                let mut heard_from_server = false;
                loop {
                    match tokio::time::timeout(IDLE_TIMEOUT, stream.message()).await {
                        Ok(Ok(Some(message))) => {
                            state.received(&message);
                            cursor = message.cursor;
                            heard_from_server = true;
                            if last_prune.elapsed() >= PRUNE_EVERY {
                                state.prune(unix_now());
                                last_prune = Instant::now();
                            }
                        }
                        Ok(Ok(None)) => {
                            tracing::debug!("revocation stream ended by the server");
                            break;
                        }
                        Ok(Err(status)) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "revocation stream failed");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(timeout = ?IDLE_TIMEOUT, "revocation stream silent: reopening it");
                            break;
                        }
                    }
                }
                // A stream that worked starts the waits afresh; one that failed at once does not.
                if heard_from_server {
                    backoff = BACKOFF.build();
                }
            }
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot open the revocation stream");
            }
            Err(_) => tracing::warn!(timeout = ?rpc_timeout, "opening the revocation stream timed out"),
        }
        state.set_synced(false);
        tokio::time::sleep(backoff.next().unwrap_or(BACKOFF_CEILING)).await;
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;
    use crate::proto::RevokedSession;

    fn revoked(sid: Uuid, until: i64, caught_up: bool) -> WatchRevocationsResponse {
        WatchRevocationsResponse {
            revoked: vec![RevokedSession {
                session_id: sid.to_string(),
                relevant_until: Some(Timestamp { seconds: until, nanos: 0 }),
            }],
            cursor: 1,
            caught_up,
        }
    }

    #[test]
    fn a_revoked_session_is_refused_until_its_relevance_ends() {
        let state = Revocations::new(RevocationPolicy::FailClosed);
        let sid = Uuid::from_u128(7);
        let now = unix_now();
        state.received(&revoked(sid, now + 60, true));
        assert_eq!(state.check(&sid, now), Err(Rejection::Revoked));
        assert_eq!(state.check(&Uuid::from_u128(8), now), Ok(()));
        assert_eq!(state.check(&sid, now + 60), Ok(()));
        state.prune(now + 60);
        assert_eq!(state.len(), 0);
    }

    #[test]
    fn fail_closed_refuses_everything_until_caught_up() {
        let state = Revocations::new(RevocationPolicy::FailClosed);
        let sid = Uuid::from_u128(1);
        assert_eq!(state.check(&sid, 0), Err(Rejection::RevocationsUnavailable));
        state.received(&revoked(Uuid::from_u128(2), i64::MAX, false));
        assert_eq!(state.check(&sid, 0), Err(Rejection::RevocationsUnavailable));
        state.received(&WatchRevocationsResponse { revoked: vec![], cursor: 1, caught_up: true });
        assert_eq!(state.check(&sid, 0), Ok(()));
        state.set_synced(false);
        assert_eq!(state.check(&sid, 0), Err(Rejection::RevocationsUnavailable));
    }

    #[test]
    fn fail_open_accepts_until_the_staleness_bound() {
        let open = Revocations::new(RevocationPolicy::FailOpen { max_staleness: Duration::from_secs(60) });
        assert_eq!(open.check(&Uuid::from_u128(1), 0), Ok(()));
        let strict = Revocations::new(RevocationPolicy::FailOpen { max_staleness: Duration::ZERO });
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(strict.check(&Uuid::from_u128(1), 0), Err(Rejection::RevocationsUnavailable));
    }
}
