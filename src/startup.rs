//! Builds the whole service from a [`Config`]: store, keys, hasher, gRPC server with health and
//! reflection, bound to its listener (port 0 in tests), and runs it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::{net::TcpListener, sync::watch};
use tonic::{
    server::NamedService,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    clock::Clock,
    config::{Config, TlsFiles},
    domain::PasswordPolicy,
    passwords::{HashError, PasswordHasher},
    rpc::{
        AuthApi, RpcLogLayer, TokenApi, UserApi,
        proto::{
            self, auth_service_server::AuthServiceServer, token_service_server::TokenServiceServer,
            user_service_server::UserServiceServer,
        },
    },
    service::{Identity, IdentityParts, LockoutPolicy, keep_revocations_in_sync, purge_periodically},
    store::{Store, StoreError},
    tokens::{KeyError, KeyRing, RevocationSet, TokenIssuer},
};

/// Largest request a client may send: the biggest legitimate one (a signup) is well under 2 kB.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Upper bound on any one RPC, on top of the client's own `grpc-timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database: {0}")]
    Database(#[from] StoreError),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("cannot start password hashing: {0}")]
    Hasher(#[from] HashError),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("TLS: cannot read {path}: {source}")]
    TlsFile { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The service, built and bound but not yet serving.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    identity: Arc<Identity>,
    policy: PasswordPolicy,
    clock: Clock,
    purge_interval: Duration,
    health_check_interval: Duration,
    revocation_heartbeat: Duration,
    tls: Option<ServerTlsConfig>,
    /// A plaintext listener serving only grpc.health.v1, for probes that cannot speak TLS.
    health_listener: Option<TcpListener>,
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
}

impl App {
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// As [`App::build`], with the clock tokens and sessions are timed by.
    pub async fn build_with_clock(config: &Config, clock: Clock) -> Result<Self, StartupError> {
        if config.bcrypt_cost < 10 {
            tracing::warn!(cost = config.bcrypt_cost, "IDENTITY_BCRYPT_COST is below 10: fit for tests only");
        }
        // First, so that what the steps below record is kept.
        let metrics = match config.metrics_addr {
            Some(addr) => Some((crate::metrics::bind(addr).await?, crate::metrics::install()?)),
            None => None,
        };
        let store = connect_and_migrate(config).await?;
        let keys =
            KeyRing::load(config.signing_key_file.as_deref(), &config.data_dir, &config.verify_key_files)?;
        tracing::info!(kid = %keys.signing.kid, verifying = keys.jwks().len(), "signing keys loaded");
        let hasher =
            PasswordHasher::start(config.bcrypt_cost, config.hash_threads, config.hash_queue).await?;
        let tokens = TokenIssuer::new(
            Arc::new(keys),
            config.issuer.clone(),
            config.audience.clone(),
            config.access_token_ttl,
        );
        // Empty and unsynchronised until the background task has loaded recent revocations
        // (and, on Postgres, subscribed to new ones); health says NOT_SERVING until then.
        let revocations = Arc::new(RevocationSet::new(config.access_token_ttl));
        let identity = Arc::new(Identity::new(IdentityParts {
            store: store.clone(),
            hasher,
            tokens,
            revocations,
            token_cache_size: config.token_cache_size,
            clock: clock.clone(),
            refresh_ttl: config.refresh_token_ttl,
            lockout: (config.max_failed_logins > 0).then(|| LockoutPolicy {
                max_failures: config.max_failed_logins,
                window: chrono::TimeDelta::from_std(config.lockout_duration)
                    .unwrap_or(chrono::TimeDelta::MAX),
            }),
        }));
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartupError::Bind { addr: config.listen_addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr: config.listen_addr, source })?;
        let tls = config.tls.as_ref().map(tls_config).transpose()?;
        let health_listener = match config.health_listen_addr {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?)
            }
            None => None,
        };
        Ok(Self {
            tls,
            health_listener,
            metrics,
            listener,
            local_addr,
            store,
            identity,
            policy: PasswordPolicy { min_length: config.password_min_length },
            clock,
            purge_interval: config.session_purge_interval,
            health_check_interval: config.health_check_interval,
            revocation_heartbeat: config.revocation_heartbeat,
        })
    }

    /// The service logic, for in-process callers (benchmarks).
    pub fn identity(&self) -> Arc<Identity> {
        Arc::clone(&self.identity)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The plaintext health-only listener's address, when one is configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes; then every health entry goes NOT_SERVING, in-flight
    /// RPCs finish, and the database pool closes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let (stopping, stop_requested) = watch::channel(false);
        let stop_for_extras = stop_requested.clone();
        let revocations = Arc::clone(self.identity.revocations());
        let initially =
            if revocations.is_synced() { ServingStatus::Serving } else { ServingStatus::NotServing };
        set_api_status(&health, initially).await;
        let background = [
            tokio::spawn(watch_health(
                self.store.clone(),
                self.health_check_interval,
                Arc::clone(&revocations),
                health.clone(),
                stop_requested.clone(),
            )),
            tokio::spawn(keep_revocations_in_sync(
                self.store.clone(),
                Arc::clone(&revocations),
                self.clock.clone(),
                stop_requested.clone(),
            )),
            tokio::spawn(purge_periodically(Arc::clone(&self.identity), self.purge_interval, stop_requested)),
        ];

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let auth = AuthServiceServer::new(AuthApi::new(Arc::clone(&self.identity), self.policy))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let token = TokenServiceServer::new(TokenApi::new(
            Arc::clone(&self.identity),
            stop_for_extras.clone(),
            self.revocation_heartbeat,
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let user = UserServiceServer::new(UserApi::new(Arc::clone(&self.identity), self.policy))
            .max_decoding_message_size(MAX_REQUEST_BYTES);

        let health_on_stop = health.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping.send(true);
            set_api_status(&health_on_stop, ServingStatus::NotServing).await;
            health_on_stop.set_service_status("", ServingStatus::NotServing).await;
        };

        tracing::info!(addr = %self.local_addr, backend = self.store.backend(), "serving gRPC");
        if let Some(listener) = self.health_listener {
            let health_only = Server::builder()
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(incoming(listener), stopped(stop_for_extras.clone()));
            tokio::spawn(health_only);
        }
        if let Some((listener, handle)) = self.metrics {
            tokio::spawn(crate::metrics::serve(listener, handle, stopped(stop_for_extras.clone())));
        }
        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let served = server
            .timeout(REQUEST_TIMEOUT)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(256))
            .layer(RpcLogLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(token)
            .add_service(user)
            .serve_with_incoming_shutdown(incoming(self.listener), shutdown)
            .await;
        for task in background {
            task.abort();
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// Accepted connections with Nagle's algorithm off (small gRPC frames must not wait for the
/// peer's delayed ACK, 40 ms on Linux) and TCP keepalive on, to notice dead peers.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60)))
}

/// Completes once a stop has been requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Reads the TLS files: a certificate chain and key to serve with and, for mutual TLS, the CA
/// whose client certificates are let in.
fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, StartupError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| StartupError::TlsFile { path: path.to_owned(), source })
    };
    let identity = tonic::transport::Identity::from_pem(read(&files.cert_file)?, read(&files.key_file)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca_file {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// Opens the database named by the configuration and applies pending migrations.
pub async fn connect_and_migrate(config: &Config) -> Result<Store, StartupError> {
    let store = Store::connect(
        config.database_url.expose_secret(),
        config.database_max_connections,
        config.database_acquire_timeout,
    )
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// Reflection over every service this server runs, both reflection versions included, so that
/// `grpcurl list` shows them all whichever version it speaks.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.BadRequest and RetryInfo, so that grpcurl can print error details.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
}

const API_SERVICES: [&str; 3] = [
    <AuthServiceServer<AuthApi> as NamedService>::NAME,
    <TokenServiceServer<TokenApi> as NamedService>::NAME,
    <UserServiceServer<UserApi> as NamedService>::NAME,
];

async fn set_api_status(health: &HealthReporter, status: ServingStatus) {
    for service in API_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Keeps the `identity.v1.*` health entries in step with the database and the revocation set,
/// so readiness probes take a replica out of rotation while its database is gone or while it
/// may be missing revocations; liveness (`""`) stays SERVING.
async fn watch_health(
    store: Store,
    check_interval: Duration,
    revocations: Arc<crate::tokens::RevocationSet>,
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
                let (open, idle) = store.pool_stats();
                metrics::gauge!(crate::metrics::DB_CONNECTIONS, "state" => "idle").set(idle as f64);
                metrics::gauge!(crate::metrics::DB_CONNECTIONS, "state" => "in_use").set(open.saturating_sub(idle as u32) as f64);
                let answered = tokio::time::timeout(check_interval.max(Duration::from_secs(1)), store.ping()).await;
                database_answers = matches!(answered, Ok(Ok(())));
            }
            _ = synced.changed() => {}
            _ = stop.changed() => return,
        }
    }
}
