//! gRPC health (`grpc.health.v1`): which entries the server reports and what keeps them true.
//! The `identity.v1.*` entries (readiness) follow the database and the revocation set, so that
//! probes take a replica out of rotation while its database is gone or while it may be missing
//! revocations; the whole-server entry `""` (liveness) stays SERVING until shutdown.
//!
//! One state machine decides readiness: [`HealthWatcher`] computes it from what it observes
//! and [`Readiness`] publishes it, comparing with what was last *published* rather than with
//! what the watcher last thought, so a state reached before the watcher first looked is
//! published all the same. When the watcher itself fails, its supervisor withdraws readiness.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{Mutex, watch};
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    rpc::{
        AdminApi, AuthApi, AuthorizationServer, EventApi, TokenApi, UserApi,
        proto::{
            admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
            event_service_server::EventServiceServer, token_service_server::TokenServiceServer,
            user_service_server::UserServiceServer,
        },
    },
    store::Store,
    supervisor::{Supervised, TaskName},
    tokens::RevocationSet,
};

/// The health entries readiness probes ask about: one per API service (Envoy's external
/// authorization included, for a gRPC health check on its cluster).
pub const API_SERVICES: [&str; 6] = [
    <AuthServiceServer<AuthApi> as NamedService>::NAME,
    <TokenServiceServer<TokenApi> as NamedService>::NAME,
    <UserServiceServer<UserApi> as NamedService>::NAME,
    <AuthorizationServer as NamedService>::NAME,
    <EventServiceServer<EventApi> as NamedService>::NAME,
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
];

/// The one writer of the health entries. Clones share the state.
#[derive(Clone)]
pub struct Readiness {
    reporter: HealthReporter,
    /// Held while entries are written, so that two writers cannot interleave and a stop is
    /// final.
    published: Arc<Mutex<Published>>,
}

#[derive(Default)]
struct Published {
    api: Option<ServingStatus>,
    stopping: bool,
}

impl Readiness {
    /// Liveness SERVING, the API entries NOT_SERVING until the watcher has looked.
    pub async fn new(reporter: HealthReporter) -> Self {
        reporter.set_service_status("", ServingStatus::Serving).await;
        let readiness = Self { reporter, published: Arc::default() };
        readiness.publish(false).await;
        readiness
    }

    /// Sets the API entries; true when that changed what they said. No-op once stopping.
    pub async fn publish(&self, serving: bool) -> bool {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        let mut published = self.published.lock().await;
        if published.stopping || published.api == Some(status) {
            return false;
        }
        for service in API_SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
        published.api = Some(status);
        true
    }

    /// Every entry, liveness included, NOT_SERVING for good: the server is going away.
    pub async fn stopping(&self) {
        let mut published = self.published.lock().await;
        published.stopping = true;
        for service in API_SERVICES {
            self.reporter.set_service_status(service, ServingStatus::NotServing).await;
        }
        published.api = Some(ServingStatus::NotServing);
        self.reporter.set_service_status("", ServingStatus::NotServing).await;
    }
}

/// Keeps the API entries in step with the database (pinged every `check_interval`) and the
/// revocation set (followed as it changes).
pub struct HealthWatcher {
    pub store: Store,
    pub check_interval: Duration,
    pub revocations: Arc<RevocationSet>,
    pub readiness: Readiness,
}

impl Supervised for HealthWatcher {
    fn name(&self) -> TaskName {
        TaskName::HealthWatcher
    }

    fn run(&self, mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let (store, interval) = (self.store.clone(), self.check_interval);
        let (revocations, readiness) = (Arc::clone(&self.revocations), self.readiness.clone());
        async move {
            let mut synced = revocations.watch_synced();
            // Look first, then publish whatever that shows: the first state is always published.
            let mut database_answers = ping(&store, interval).await;
            loop {
                let revocations_synced = *synced.borrow_and_update();
                if readiness.publish(database_answers && revocations_synced).await {
                    match (database_answers, revocations_synced) {
                        (true, true) => {
                            tracing::info!("database answers and revocations are synchronised: SERVING");
                        }
                        (false, _) => tracing::warn!("database does not answer: NOT_SERVING"),
                        (true, false) => tracing::warn!("revocation set not synchronised: NOT_SERVING"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => database_answers = ping(&store, interval).await,
                    _ = synced.changed() => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Nobody keeps the entries true any more: they must not claim SERVING.
    async fn failed(&self) {
        self.readiness.publish(false).await;
        tracing::warn!("health watcher down: NOT_SERVING until it is back");
    }
}

/// Does the database answer within the check interval (at least a second)?
async fn ping(store: &Store, interval: Duration) -> bool {
    let answered = tokio::time::timeout(interval.max(Duration::from_secs(1)), store.ping()).await;
    matches!(answered, Ok(Ok(())))
}
