//! The real server on an ephemeral port, for tests and benchmarks (behind the `test-helpers`
//! feature, never in a release build): [`TestServer`] builds the service from a [`Config`],
//! serves it in a task until stopped or dropped, and returns only once health says SERVING, so
//! that callers never sleep waiting for it.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    clock::Clock,
    config::{Config, ConfigError},
    health::API_SERVICES,
    service::Identity,
    startup::{App, StartupError},
    supervisor::Faults,
};

/// How long a server may take to report SERVING (on Postgres: until the revocation listener is
/// subscribed) before [`TestServer::start`] gives up.
const SERVING_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot start: {0}")]
    Startup(#[from] StartupError),
    #[error("did not report SERVING: {0}")]
    NotServing(String),
    #[error("the server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A configuration for a test server: listening on 127.0.0.1:0, SQLite and the signing key in
/// `data_dir`, bcrypt at its cheapest cost; `env` (`IDENTITY_*` pairs) is applied on top.
pub fn config(
    data_dir: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut vars = vec![
        ("IDENTITY_LISTEN_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("IDENTITY_DATABASE_URL".into(), format!("sqlite://{}", data_dir.join("identity.db").display())),
        ("IDENTITY_DATA_DIR".into(), data_dir.display().to_string()),
        ("IDENTITY_BCRYPT_COST".into(), "4".into()),
    ];
    // Later pairs win.
    vars.extend(env);
    Config::from_vars(vars)
}

/// The real server, serving in a task of the current runtime until [`TestServer::stop`] or drop.
pub struct TestServer {
    addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    identity: Arc<Identity>,
    faults: Faults,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartupError>>>,
}

impl TestServer {
    /// Builds and serves `config`, and waits until its API reports SERVING.
    pub async fn start(config: &Config) -> Result<Self, TestServerError> {
        Self::start_with_clock(config, Clock::system()).await
    }

    /// As [`TestServer::start`], with the clock tokens and sessions are timed by.
    pub async fn start_with_clock(config: &Config, clock: Clock) -> Result<Self, TestServerError> {
        let app = App::build_with_clock(config, clock).await?;
        let (addr, health_addr, metrics_addr) = (app.local_addr(), app.health_addr(), app.metrics_addr());
        let http_addr = app.http_addr();
        let identity = app.identity();
        let faults = app.faults();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let channel = plaintext_channel(addr)?;
        let mut server = Self {
            addr,
            health_addr,
            metrics_addr,
            http_addr,
            identity,
            faults,
            channel,
            stop: Some(stop),
            task: Some(task),
        };
        // A TLS server's API port does not speak plaintext: ask its health-only listener.
        let probe = match (config.tls.is_some(), health_addr) {
            (false, _) => server.channel.clone(),
            (true, Some(health_addr)) => plaintext_channel(health_addr)?,
            (true, None) => {
                return Err(TestServerError::NotServing(
                    "a TLS test server needs IDENTITY_HEALTH_LISTEN_ADDR to be watched".into(),
                ));
            }
        };
        if let Err(error) = wait_until_serving(probe).await {
            // Report why the server stopped, if it did, rather than the symptom.
            server.stop().await?;
            return Err(error);
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A plaintext channel to the API, connected lazily.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the well-known documents are served, when they are.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The service logic, for in-process callers.
    pub fn identity(&self) -> Arc<Identity> {
        Arc::clone(&self.identity)
    }

    /// Makes this server's background tasks fail on demand.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Stops the server as a signal would (in-flight calls finish, streams end) and waits until
    /// it has; its address is free again afterwards.
    pub async fn stop(&mut self) -> Result<(), TestServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => Ok(task.await??),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn plaintext_channel(addr: SocketAddr) -> Result<Channel, TestServerError> {
    Channel::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.connect_lazy())
        .map_err(|error| TestServerError::NotServing(error.to_string()))
}

/// Follows `grpc.health.v1.Health/Watch` for the first API service until it says SERVING:
/// the server pushes each change, so nothing polls.
async fn wait_until_serving(channel: Channel) -> Result<(), TestServerError> {
    let watch = async {
        let request = HealthCheckRequest { service: API_SERVICES[0].into() };
        let mut updates = HealthClient::new(channel)
            .watch(request)
            .await
            .map_err(|status| format!("Watch refused: {status}"))?
            .into_inner();
        let mut last = ServingStatus::Unknown;
        while let Some(update) =
            updates.message().await.map_err(|status| format!("Watch failed: {status}"))?
        {
            last = update.status();
            if last == ServingStatus::Serving {
                return Ok(());
            }
        }
        Err(format!("Watch ended; last status {last:?}"))
    };
    match tokio::time::timeout(SERVING_WITHIN, watch).await {
        Ok(result) => result.map_err(TestServerError::NotServing),
        Err(_) => Err(TestServerError::NotServing(format!("not within {SERVING_WITHIN:?}"))),
    }
}

/// Polls `condition` every 2 ms until it holds or `within` has passed; how long it took, or
/// `None`. For state another task or process changes (a replica hearing of a revocation), where
/// there is nothing to await; never a stand-in for a wait on something that can be awaited.
pub async fn eventually<F, Fut>(within: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < within {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}
