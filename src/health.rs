//! gRPC health (`grpc.health.v1`): which entries the server reports and what keeps them true.
//! The `identity.v1.*` entries (readiness) follow the database and the revocation set, so that
//! probes take a replica out of rotation while its database is gone or while it may be missing
//! revocations; the whole-server entry `""` (liveness) stays SERVING until shutdown.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    rpc::{
        AuthApi, TokenApi, UserApi,
        proto::{
            auth_service_server::AuthServiceServer, token_service_server::TokenServiceServer,
            user_service_server::UserServiceServer,
        },
    },
    store::Store,
    tokens::RevocationSet,
};

/// The health entries readiness probes ask about: one per API service.
pub const API_SERVICES: [&str; 3] = [
    <AuthServiceServer<AuthApi> as NamedService>::NAME,
    <TokenServiceServer<TokenApi> as NamedService>::NAME,
    <UserServiceServer<UserApi> as NamedService>::NAME,
];

/// Sets every API entry to `status`.
pub async fn set_api_status(health: &HealthReporter, status: ServingStatus) {
    for service in API_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Every entry, liveness included, NOT_SERVING: the server is going away.
pub async fn set_stopping(health: &HealthReporter) {
    set_api_status(health, ServingStatus::NotServing).await;
    health.set_service_status("", ServingStatus::NotServing).await;
}

/// What the API entries say before the watcher has looked at anything.
pub fn initial_status(revocations: &RevocationSet) -> ServingStatus {
    if revocations.is_synced() { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// Keeps the API entries in step with the database (pinged every `check_interval`) and the
/// revocation set (followed as it changes) until a stop is requested.
pub async fn watch(
    store: Store,
    check_interval: Duration,
    revocations: Arc<RevocationSet>,
    health: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut synced = revocations.watch_synced();
    let mut database_answers = true;
    let mut serving = Some(revocations.is_synced());
    loop {
        let now_serving = database_answers && *synced.borrow_and_update();
        if serving != Some(now_serving) && !*stop.borrow() {
            match (now_serving, database_answers) {
                (true, _) => tracing::info!("database answers and revocations are synchronised: SERVING"),
                (false, false) => tracing::warn!("database does not answer: NOT_SERVING"),
                (false, true) => tracing::warn!("revocation set not synchronised: NOT_SERVING"),
            }
            let status = if now_serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            set_api_status(&health, status).await;
            serving = Some(now_serving);
        }
        tokio::select! {
            _ = tokio::time::sleep(check_interval) => {
                let answered = tokio::time::timeout(check_interval.max(Duration::from_secs(1)), store.ping()).await;
                database_answers = matches!(answered, Ok(Ok(())));
            }
            _ = synced.changed() => {}
            _ = stop.changed() => return,
        }
    }
}
