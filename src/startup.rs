//! Builds the whole service from a [`Config`] (store, keys, hasher, the gRPC services, the
//! optional health-only and metrics listeners, all bound before anything serves: port 0 in
//! tests; the trace exporter when configured) and runs it until told to stop, then stops every
//! part it started, in order (the trace exporter last, flushing what the others traced).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tonic::transport::{Server, ServerTlsConfig};

use crate::{
    clients::TrustedProxies,
    clock::Clock,
    config::{Config, MailDelivery},
    connections::{ConnectionLimits, Handshake},
    domain::PasswordPolicy,
    health,
    mail::{Deliverer, MailQueue, Outbox, OutboxSettings, OutboxWorker, ResetLinks, Templates},
    passwords::{HashError, PasswordHasher},
    rpc::{
        AdminApi, AuthApi, AuthorizationServer, EventApi, ExtAuthzApi, TokenApi, UserApi,
        proto::{
            admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
            event_service_server::EventServiceServer, token_service_server::TokenServiceServer,
            user_service_server::UserServiceServer,
        },
    },
    service::{
        CallerPolicy, EventFeed, EventSync, Identity, IdentityParts, LockoutPolicy, MfaSettings, Purge,
        RecoverySettings, RevocationSync,
    },
    store::{Limits, Store, StoreError},
    supervisor::Supervisor,
    telemetry::Traces,
    tokens::{KeyError, KeyRing, RevocationSet, TokenIssuer},
    transport::{self, MAX_REQUEST_BYTES},
};

/// Largest Check request from Envoy: its default limit on request headers (60 KiB) and room
/// for the other attributes.
const EXT_AUTHZ_MAX_REQUEST_BYTES: usize = 96 * 1024;

/// How long the tasks beside the API (background work, side listeners) get to finish after a
/// stop before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database: {0}")]
    Database(#[from] StoreError),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    EncryptionKey(#[from] crate::sealing::SealingError),
    /// A configuration problem: the process stops as for an invalid variable.
    #[error(transparent)]
    ExposedKey(#[from] crate::secret_files::ExposedKey),
    #[error("cannot start password hashing: {0}")]
    Hasher(#[from] HashError),
    #[error(transparent)]
    MailTemplates(#[from] crate::mail::TemplateError),
    #[error(transparent)]
    Smtp(#[from] crate::mail::SmtpUrlError),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    TlsFile(#[from] transport::TlsFileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Traces(#[from] crate::telemetry::TracesError),
}

/// The service, built and bound but not yet serving.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    identity: Arc<Identity>,
    policy: PasswordPolicy,
    trusted_proxies: TrustedProxies,
    clock: Clock,
    purge_interval: Duration,
    health_check_interval: Duration,
    revocation_heartbeat: Duration,
    tls: Option<ServerTlsConfig>,
    connection_limits: ConnectionLimits,
    reflection: bool,
    /// A plaintext listener serving only grpc.health.v1, for probes that cannot speak TLS.
    health_listener: Option<TcpListener>,
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
    /// The well-known documents, and their own listener unless they share the metrics one.
    http: Option<(Option<TcpListener>, crate::http::WellKnown)>,
    #[cfg(feature = "test-helpers")]
    faults: crate::supervisor::Faults,
    outbox: Arc<Outbox>,
    ext_authz_required_role: Option<crate::domain::Role>,
    /// The trace exporter, when `IDENTITY_OTLP_ENDPOINT` names one.
    traces: Option<Traces>,
}

/// The key that seals TOTP secrets: the configured file, or on SQLite one generated into the
/// data directory. On Postgres a key generated per replica would seal secrets the others cannot
/// open, so without a configured key the second factor is unavailable (and says so) rather than
/// half working.
fn load_sealer(config: &Config) -> Result<Option<crate::sealing::Sealer>, StartupError> {
    if config.encryption_key_file.is_none() && config.is_postgres() {
        tracing::warn!(
            "IDENTITY_ENCRYPTION_KEY_FILE is not set: the second factor (TOTP) is unavailable on Postgres"
        );
        return Ok(None);
    }
    let sealer = crate::sealing::Sealer::load(
        config.encryption_key_file.as_deref(),
        &config.data_dir,
        &config.decryption_key_files,
    )?;
    tracing::info!(key_id = sealer.current_key_id(), "encryption key for secrets at rest loaded");
    Ok(Some(sealer))
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
        crate::secret_files::check_private_keys(config)?;
        let store = connect_and_migrate(config).await?;
        let keys = KeyRing::load(
            config.signing_key_file.as_deref(),
            &config.data_dir,
            &config.verify_key_files,
            config.signing_alg,
        )?;
        tracing::info!(
            kid = %keys.signing.kid,
            algorithm = %keys.signing.algorithm,
            verifying = keys.jwks().len(),
            "signing keys loaded"
        );
        let http = match config.http_addr {
            Some(addr) => {
                let shared = metrics.as_ref().filter(|_| config.metrics_addr == Some(addr));
                let (listener, local_addr) = match shared {
                    Some((listener, _)) => (None, listener.local_addr()),
                    None => {
                        let listener = bind(addr).await?;
                        let local_addr = listener.local_addr();
                        (Some(listener), local_addr)
                    }
                };
                let local_addr = local_addr.map_err(|source| StartupError::Bind { addr, source })?;
                let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{local_addr}"));
                Some((listener, crate::http::WellKnown::new(keys.jwks(), &config.issuer, &public_url)))
            }
            None => None,
        };
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
        // Subscribers read everything up to here from the table; the feed publishes what follows.
        let events = Arc::new(EventFeed::new(store.latest_event_cursor().await?));
        let mail = MailQueue::default();
        let outbox = Arc::new(build_outbox(config, &store, &clock, mail.clone())?);
        let identity = Arc::new(Identity::new(IdentityParts {
            store: store.clone(),
            hasher,
            tokens,
            revocations,
            token_cache_size: config.token_cache_size,
            clock: clock.clone(),
            refresh_ttl: config.refresh_token_ttl,
            lockout: LockoutPolicy {
                free_failures: config.login_free_failures,
                first_delay: config.login_delay,
                max_delay: config.login_max_delay,
                lock_threshold: config.lockout_threshold,
                lock_duration: config.lockout_duration,
            },
            signup_reveals_accounts: config.signup_reveals_accounts,
            callers: CallerPolicy {
                certificates: config.mtls_callers.clone(),
                admin_role: config.admin_role.clone(),
                max_streams_per_caller: config.max_streams_per_caller,
                max_streams: config.max_streams,
            },
            mail,
            recovery: RecoverySettings {
                verify_token_ttl: chrono::TimeDelta::from_std(config.verify_token_ttl)
                    .unwrap_or(chrono::TimeDelta::hours(24)),
                verify_url: config.verify_url.clone(),
                require_verified_email: config.require_verified_email,
                max_mail_per_hour: config.mail_max_per_hour,
                max_pending_resets: config.reset_requests_max_pending,
            },
            events,
            event_retention: config.event_retention,
            mfa: MfaSettings { sealer: load_sealer(config)?, issuer: config.totp_issuer.clone() },
        }));
        let traces = match &config.otlp_endpoint {
            Some(endpoint) => Some(Traces::start(endpoint, config.log_format)?),
            None => None,
        };
        let listener = bind(config.listen_addr).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr: config.listen_addr, source })?;
        let tls = config.tls.as_ref().map(transport::tls_config).transpose()?;
        let health_listener = match config.health_listen_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            tls,
            connection_limits: config.connection_limits(),
            reflection: config.reflection,
            health_listener,
            metrics,
            http,
            listener,
            local_addr,
            store,
            identity,
            policy: PasswordPolicy { min_length: config.password_min_length },
            trusted_proxies: config.trusted_proxies.clone(),
            clock,
            purge_interval: config.session_purge_interval,
            health_check_interval: config.health_check_interval,
            revocation_heartbeat: config.revocation_heartbeat,
            #[cfg(feature = "test-helpers")]
            faults: crate::supervisor::Faults::default(),
            outbox,
            ext_authz_required_role: config.ext_authz_required_role.clone(),
            traces,
        })
    }

    /// Makes the background tasks fail on demand (tests only).
    #[cfg(feature = "test-helpers")]
    pub fn faults(&self) -> crate::supervisor::Faults {
        self.faults.clone()
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

    /// Where the well-known documents are served, when they are.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        match &self.http {
            Some((Some(listener), _)) => listener.local_addr().ok(),
            Some((None, _)) => self.metrics_addr(),
            None => None,
        }
    }

    /// The plaintext health-only listener's address, when one is configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes; then every health entry goes NOT_SERVING, in-flight
    /// RPCs finish, the background tasks and side listeners stop (aborted if they take longer
    /// than [`STOP_GRACE`]), and the database pool closes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let health_service = transport::strict_health(health_service);
        let (stopping, stop_requested) = watch::channel(false);
        let revocations = Arc::clone(self.identity.revocations());
        let readiness = health::Readiness::new(health).await;

        // Background work, restarted when it fails; readiness follows the tasks it depends on.
        let mut supervisor = Supervisor::new(
            stop_requested.clone(),
            #[cfg(feature = "test-helpers")]
            self.faults.clone(),
        );
        supervisor.spawn(health::HealthWatcher {
            store: self.store.clone(),
            check_interval: self.health_check_interval,
            revocations: Arc::clone(&revocations),
            readiness: readiness.clone(),
        });
        supervisor.spawn(RevocationSync {
            store: self.store.clone(),
            revocations: Arc::clone(&revocations),
            clock: self.clock.clone(),
        });
        supervisor.spawn(Purge { identity: Arc::clone(&self.identity), interval: self.purge_interval });
        supervisor.spawn(OutboxWorker(Arc::clone(&self.outbox)));
        supervisor.spawn(EventSync { store: self.store.clone(), feed: Arc::clone(self.identity.events()) });
        if self.metrics.is_some() {
            supervisor.spawn(crate::metrics::PoolSampler {
                store: self.store.clone(),
                interval: self.health_check_interval,
            });
        }

        // Everything that runs beside the API, joined on the way out.
        let mut beside = JoinSet::new();
        beside.spawn(supervisor.join());
        if let Some(listener) = self.health_listener {
            let health_only =
                Server::builder().add_service(health_service.clone()).serve_with_incoming_shutdown(
                    transport::incoming(listener, self.connection_limits, Handshake::Plaintext, "health"),
                    stopped(stop_requested.clone()),
                );
            beside.spawn(async move {
                if let Err(error) = health_only.await {
                    tracing::warn!(%error, "health listener stopped");
                }
            });
        }
        let mut metrics = self.metrics;
        if let Some((own_listener, well_known)) = self.http {
            // Sharing the metrics listener: one server for both.
            let (listener, handle) = match own_listener {
                Some(listener) => (Some(listener), None),
                None => metrics
                    .take()
                    .map(|(listener, handle)| (Some(listener), Some(handle)))
                    .unwrap_or((None, None)),
            };
            if let Some(listener) = listener {
                let router = crate::http::router(Some(well_known), handle);
                let stop = stopped(stop_requested.clone());
                beside.spawn(crate::http::serve(listener, router, self.connection_limits, "http", stop));
            }
        }
        if let Some((listener, handle)) = metrics {
            let router = crate::http::router(None, Some(handle));
            let stop = stopped(stop_requested.clone());
            beside.spawn(crate::http::serve(listener, router, self.connection_limits, "metrics", stop));
        }

        let (reflection_v1, reflection_v1alpha) = transport::strict_reflection(self.reflection)?;
        let auth = AuthServiceServer::new(AuthApi::new(
            Arc::clone(&self.identity),
            self.policy,
            self.trusted_proxies.clone(),
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let token = TokenServiceServer::new(TokenApi::new(
            Arc::clone(&self.identity),
            stop_requested.clone(),
            self.revocation_heartbeat,
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        // Envoy sends every header of the request it asks about (up to its 60 KiB default), and
        // its body when configured to.
        let ext_authz = AuthorizationServer::new(
            ExtAuthzApi::new(Arc::clone(&self.identity), self.ext_authz_required_role),
            EXT_AUTHZ_MAX_REQUEST_BYTES,
        );
        let events = EventServiceServer::new(EventApi::new(
            Arc::clone(&self.identity),
            stop_requested.clone(),
            self.revocation_heartbeat,
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let user = UserServiceServer::new(UserApi::new(
            Arc::clone(&self.identity),
            self.policy,
            self.trusted_proxies.clone(),
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let admin = AdminServiceServer::new(AdminApi::new(
            Arc::clone(&self.identity),
            self.policy,
            self.trusted_proxies,
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);

        let on_shutdown = async {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            stopping.send_replace(true);
            readiness.stopping().await;
        };
        tracing::info!(addr = %self.local_addr, backend = self.store.backend(), "serving gRPC");
        let handshake = if self.tls.is_some() { Handshake::Tls } else { Handshake::Plaintext };
        let incoming = transport::incoming(self.listener, self.connection_limits, handshake, "api");
        let served = match transport::api_server(self.tls, self.traces.as_ref().map(Traces::rpc)) {
            Ok(mut server) => {
                server
                    .add_service(health_service)
                    .add_optional_service(reflection_v1)
                    .add_optional_service(reflection_v1alpha)
                    .add_service(auth)
                    .add_service(token)
                    .add_service(user)
                    .add_service(ext_authz)
                    .add_service(events)
                    .add_service(admin)
                    .serve_with_incoming_shutdown(incoming, on_shutdown)
                    .await
            }
            Err(error) => Err(error),
        };

        // Also when serving failed before a shutdown was asked for.
        stopping.send_replace(true);
        if tokio::time::timeout(STOP_GRACE, async { while beside.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(grace = ?STOP_GRACE, remaining = beside.len(), "aborting tasks that did not stop");
            beside.shutdown().await;
        }
        self.store.close().await;
        if let Some(traces) = self.traces {
            traces.shutdown(STOP_GRACE).await;
        }
        tracing::info!("stopped");
        Ok(served?)
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
}

/// Completes once a stop has been requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The outbox worker with the deliverer and templates the configuration names.
fn build_outbox(
    config: &Config,
    store: &Store,
    clock: &Clock,
    queue: MailQueue,
) -> Result<Outbox, StartupError> {
    let deliverer = match &config.mail {
        MailDelivery::Smtp(url) => Deliverer::smtp(url, config.smtp_timeout)?,
        MailDelivery::Files => Deliverer::Files(config.data_dir.join("mail")),
        MailDelivery::None => Deliverer::Discard,
    };
    let templates = Templates::load(config.mail_templates.as_deref())?;
    let settings = OutboxSettings {
        from: config.mail_from.clone(),
        max_attempts: config.mail_max_attempts,
        poll_interval: config.mail_poll_interval,
        delivery_timeout: config.smtp_timeout,
        reset: ResetLinks {
            url: config.reset_url.clone(),
            ttl: chrono::TimeDelta::from_std(config.reset_token_ttl)
                .unwrap_or(chrono::TimeDelta::minutes(30)),
            max_per_hour: config.mail_max_per_hour,
        },
    };
    Ok(Outbox::new(store.clone(), clock.clone(), deliverer, templates, settings, queue))
}

/// Opens the database named by the configuration, applies pending migrations, and gives rows
/// written before emails were normalized their normalized form (see
/// [`Store::backfill_email_keys`]).
pub async fn connect_and_migrate(config: &Config) -> Result<Store, StartupError> {
    let limits = Limits {
        max_connections: config.database_max_connections,
        acquire_timeout: config.database_acquire_timeout,
        statement_timeout: config.database_statement_timeout,
    };
    let store = Store::open(config.database_url.expose_secret(), limits)
        .await?
        .with_mail_as_events(matches!(config.mail, MailDelivery::None));
    store.migrate().await?;
    let backfilled = store.backfill_email_keys().await?;
    if backfilled > 0 {
        tracing::info!(accounts = backfilled, "normalized emails and confusable keys filled in");
    }
    Ok(store)
}
