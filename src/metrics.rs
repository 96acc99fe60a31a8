//! Prometheus metrics, served at `/metrics` on `IDENTITY_METRICS_ADDR` when it is set. Without
//! it no recorder is installed and every `metrics::` call is a no-op.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `identity_rpc_requests_total` | counter | `method`, `code` |
//! | `identity_rpc_duration_seconds` | histogram | `method` |
//! | `identity_logins_total` | counter | `outcome`: success, wrong_password, unknown_email, deactivated, throttled, locked_out, shed |
//! | `identity_lockouts_total` | counter | emails locked after `IDENTITY_LOCKOUT_THRESHOLD` consecutive failures |
//! | `identity_login_throttled_total` | counter | `rpc`: login, change_password (refused during a client's delay, no hash spent) |
//! | `identity_sessions_ended_for_password_guessing_total` | counter | |
//! | `identity_refresh_token_reuse_total` | counter | |
//! | `identity_hash_pool_busy` / `identity_hash_pool_queued` | gauge | |
//! | `identity_hash_pool_rejected_total` | counter | |
//! | `identity_revoked_sessions` | gauge | |
//! | `identity_revocations_synchronised` | gauge | 1 or 0 |
//! | `identity_revocation_watchers` | gauge | open WatchRevocations streams |
//! | `identity_db_connections` | gauge | `state`: idle, in_use |
//! | `identity_db_acquire_seconds` | histogram | |
//! | `identity_connections_open` | gauge | `listener`: api, health, http, metrics |
//! | `identity_connections_refused_total` | counter | `listener`; `reason`: max_connections, max_per_client |
//! | `identity_connections_handshake_timeouts_total` | counter | `listener` |
//! | `identity_accept_errors_total` | counter | `listener` (the process is out of descriptors or memory) |
//! | `identity_task_restarts_total` | counter | `task`: revocation_sync, health_watcher, purge, pool_sampler, mail_outbox |
//! | `identity_db_timeouts_total` | counter | calls cut off by `IDENTITY_DATABASE_STATEMENT_TIMEOUT` |
//! | `identity_mail_sent_total` | counter | `kind`: password_reset, verify_email, email_changed, test |
//! | `identity_mail_retried_total` | counter | `kind`: a failed attempt that will be retried |
//! | `identity_mail_failed_total` | counter | `kind`: given up after the maximum attempts |
//! | `identity_mail_queue_depth` | gauge | `state`: pending, failed |
//!
//! `method` is the full path of a served method, or `other` for any path a caller invents.

use std::{net::SocketAddr, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub const RPC_REQUESTS: &str = "identity_rpc_requests_total";
pub const RPC_DURATION: &str = "identity_rpc_duration_seconds";
pub const LOGINS: &str = "identity_logins_total";
pub const LOCKOUTS: &str = "identity_lockouts_total";
pub const LOGIN_THROTTLED: &str = "identity_login_throttled_total";
pub const SESSIONS_ENDED_FOR_GUESSING: &str = "identity_sessions_ended_for_password_guessing_total";
pub const REFRESH_TOKEN_REUSE: &str = "identity_refresh_token_reuse_total";
pub const HASH_POOL_BUSY: &str = "identity_hash_pool_busy";
pub const HASH_POOL_QUEUED: &str = "identity_hash_pool_queued";
pub const HASH_POOL_REJECTED: &str = "identity_hash_pool_rejected_total";
pub const REVOKED_SESSIONS: &str = "identity_revoked_sessions";
pub const REVOCATIONS_SYNCHRONISED: &str = "identity_revocations_synchronised";
pub const REVOCATION_WATCHERS: &str = "identity_revocation_watchers";
pub const DB_CONNECTIONS: &str = "identity_db_connections";
pub const DB_ACQUIRE: &str = "identity_db_acquire_seconds";
pub const CONNECTIONS_OPEN: &str = "identity_connections_open";
pub const CONNECTIONS_REFUSED: &str = "identity_connections_refused_total";
pub const HANDSHAKE_TIMEOUTS: &str = "identity_connections_handshake_timeouts_total";
pub const ACCEPT_ERRORS: &str = "identity_accept_errors_total";
pub const TASK_RESTARTS: &str = "identity_task_restarts_total";
pub const DB_TIMEOUTS: &str = "identity_db_timeouts_total";
pub const MAIL_SENT: &str = "identity_mail_sent_total";
pub const MAIL_RETRIED: &str = "identity_mail_retried_total";
pub const MAIL_FAILED: &str = "identity_mail_failed_total";
pub const MAIL_QUEUE_DEPTH: &str = "identity_mail_queue_depth";
pub const RESET_REQUESTS_PENDING: &str = "identity_reset_requests_pending";

/// Latency buckets from 100 µs (a cached ValidateToken) to 10 s (a login stuck in a queue).
const SECONDS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot build the Prometheus recorder: {0}")]
    Build(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The process-wide recorder, installed on first use (the metrics facade has one global).
/// Concurrent first calls wait for the one that installs it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|_| "another metrics recorder is installed".to_string())?;
            Ok(handle)
        })
        .clone()
        .map_err(MetricsError::Build)
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Every `interval` until a stop is requested, records how many database connections are idle
/// and in use.
pub struct PoolSampler {
    pub store: crate::store::Store,
    pub interval: std::time::Duration,
}

impl crate::supervisor::Supervised for PoolSampler {
    fn name(&self) -> crate::supervisor::TaskName {
        crate::supervisor::TaskName::PoolSampler
    }

    fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let (store, interval) = (self.store.clone(), self.interval);
        async move {
            loop {
                let (open, idle) = store.pool_stats();
                metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(idle as f64);
                metrics::gauge!(DB_CONNECTIONS, "state" => "in_use")
                    .set(open.saturating_sub(idle as u32) as f64);
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}
