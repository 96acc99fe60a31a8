//! Starts the real server in-process on an ephemeral port, on a fresh SQLite file or a fresh
//! Postgres database, and hands tests a real gRPC client.

mod databases;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

pub use databases::TemporaryDatabase;

pub use identity::testing::eventually;
use identity::{
    clock::Clock,
    config::Config,
    domain::{Permission, ServiceKeyName},
    proto::{
        LoginRequest, LoginResponse, SignupRequest, User, WatchRevocationsRequest, WatchRevocationsResponse,
        WatchUserEventsRequest, WatchUserEventsResponse, auth_service_client::AuthServiceClient,
        event_service_client::EventServiceClient, token_service_client::TokenServiceClient,
        user_service_client::UserServiceClient,
    },
    service::ServiceKeyAdmin,
    store::Store,
    testing::TestServer,
};
use tonic::{Code, Status, transport::Channel};

pub const PASSWORD: &str = "maple-orbit-tundra-42-vessel";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named test once per backend: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await.unwrap();
                super::$name(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await else {
                    eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: Postgres test skipped");
                    return;
                };
                super::$name(app).await;
            }
        }
    )*};
}

/// Where a test's state lives, kept across a restart of its server; removed when the test is
/// done with it, as `data_dir` is.
pub struct TestDatabase {
    pub url: String,
    pub data_dir: tempfile::TempDir,
    /// The Postgres database made for the test, shared with its replicas.
    made_for_test: Option<Arc<TemporaryDatabase>>,
}

impl TestDatabase {
    /// The state at `url` (a database the test manages itself) and `data_dir`.
    pub fn new(url: String, data_dir: tempfile::TempDir) -> Self {
        Self { url, data_dir, made_for_test: None }
    }

    /// The same database with a data directory of its own: another replica's state.
    pub fn replica(&self) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self { url: self.url.clone(), data_dir, made_for_test: self.made_for_test.clone() }
    }
}

pub struct TestApp {
    /// First, so that it is told to stop before the database is let go of.
    server: TestServer,
    pub addr: SocketAddr,
    pub channel: Channel,
    pub clock: Clock,
    pub store: Store,
    pub db: TestDatabase,
    pub extra_env: Vec<(String, String)>,
    pub metrics_addr: Option<SocketAddr>,
    /// Where the well-known documents are served (`IDENTITY_HTTP_ADDR`), when they are.
    pub http_addr: Option<SocketAddr>,
}

impl TestApp {
    /// A server on a fresh database; `None` for Postgres when no test server is configured.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, &[]).await
    }

    pub async fn spawn_with(backend: Backend, env: &[(&str, &str)]) -> Option<Self> {
        let db = fresh_database(backend).await?;
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Some(Self::start(db, env, Clock::system()).await)
    }

    pub fn config(db: &TestDatabase, extra_env: &[(String, String)]) -> Config {
        let mut vars = vec![
            ("IDENTITY_DATABASE_URL".to_string(), db.url.clone()),
            ("IDENTITY_DATABASE_MAX_CONNECTIONS".into(), "5".into()),
        ];
        // On Postgres the key that seals TOTP secrets must be configured (every replica shares
        // it), as in production: one for the whole test run.
        if db.url.starts_with("postgres") {
            vars.push(("IDENTITY_ENCRYPTION_KEY_FILE".into(), shared_encryption_key().display().to_string()));
        }
        identity::testing::config(db.data_dir.path(), vars.into_iter().chain(extra_env.iter().cloned()))
            .expect("test configuration is valid")
    }

    /// A server on an existing database (one the test manages itself).
    pub async fn start_on(db: TestDatabase, env: Vec<(String, String)>) -> Self {
        Self::start(db, env, Clock::system()).await
    }

    async fn start(db: TestDatabase, extra_env: Vec<(String, String)>, clock: Clock) -> Self {
        let config = Self::config(&db, &extra_env);
        let server = TestServer::start_with_clock(&config, clock.clone()).await.expect("server serves");
        let store = Store::connect(&db.url, 2, Duration::from_secs(5)).await.expect("test store connects");
        Self {
            addr: server.addr(),
            channel: server.channel(),
            metrics_addr: server.metrics_addr(),
            http_addr: server.http_addr(),
            clock,
            store,
            db,
            extra_env,
            server,
        }
    }

    /// The server's service logic, in process.
    pub fn identity(&self) -> std::sync::Arc<identity::service::Identity> {
        self.server.identity()
    }

    /// Makes this server's background tasks fail on demand.
    pub fn faults(&self) -> identity::supervisor::Faults {
        self.server.faults()
    }

    /// Stops the server, letting in-flight calls finish.
    pub async fn stop(&mut self) {
        self.server.stop().await.expect("server stops cleanly");
    }

    /// Stops this server and starts a new one on the same database and data directory.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let db =
            std::mem::replace(&mut self.db, TestDatabase::new(String::new(), tempfile::tempdir().unwrap()));
        let clock = self.clock.clone();
        Self::start(db, std::mem::take(&mut self.extra_env), clock).await
    }

    /// A second server on the same database, sharing this one's signing key: another replica.
    pub async fn spawn_peer(&self) -> Self {
        let db = self.db.replica();
        let mut env = self.extra_env.clone();
        if !env.iter().any(|(k, _)| k == "IDENTITY_SIGNING_KEY_FILE") {
            let key = self.data_dir().join("signing_key.pem").display().to_string();
            env.push(("IDENTITY_SIGNING_KEY_FILE".into(), key));
        }
        Self::start(db, env, self.clock.clone()).await
    }

    /// Stops this server and starts a new one on the same state with `env` added.
    pub async fn restart_with(mut self, env: &[(&str, &str)]) -> Self {
        self.extra_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.restart().await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.db.data_dir.path().to_owned()
    }

    /// A connection to the server from another loopback address (any of 127/8 works), so the
    /// server sees another client.
    pub async fn channel_from(&self, source: std::net::IpAddr) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .local_address(Some(source))
            .connect()
            .await
            .expect("client connects")
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    /// A WatchUserEvents stream after `after_cursor`, opened with `key`.
    pub async fn watch_user_events_with(
        &self,
        key: &str,
        after_cursor: u64,
    ) -> Result<tonic::Streaming<WatchUserEventsResponse>, Status> {
        let request = bearer(WatchUserEventsRequest { after_cursor }, key);
        Ok(self.events().watch_user_events(request).await?.into_inner())
    }

    /// A key with the `watch_events` permission.
    pub async fn events_key(&self) -> String {
        let name = format!("events-{}", uuid::Uuid::new_v4().simple());
        self.service_key(&name, &[Permission::WatchEvents]).await
    }

    /// A WatchUserEvents stream after `after_cursor`, opened with a fresh `watch_events` key.
    pub async fn watch_user_events(&self, after_cursor: u64) -> tonic::Streaming<WatchUserEventsResponse> {
        let key = self.events_key().await;
        self.watch_user_events_with(&key, after_cursor).await.expect("an authorised subscriber is let in")
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub async fn signup(&self, email: &str, password: &str, full_name: &str) -> Result<User, Status> {
        let request =
            SignupRequest { email: email.into(), password: password.into(), full_name: full_name.into() };
        Ok(self.auth().signup(request).await?.into_inner().user.expect("signup returns the user"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<LoginResponse, Status> {
        Ok(self
            .auth()
            .login(LoginRequest { email: email.into(), password: password.into() })
            .await?
            .into_inner())
    }

    /// Signs up a user with a unique email and logs in.
    pub async fn signed_in_user(&self) -> (User, LoginResponse) {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let user = self.signup(&email, PASSWORD, "Test User").await.expect("signup succeeds");
        let login = self.login(&email, PASSWORD).await.expect("login succeeds");
        (user, login)
    }

    /// A new service key (through the service's own key admin) with `permissions`.
    pub async fn service_key(&self, name: &str, permissions: &[Permission]) -> String {
        let admin = ServiceKeyAdmin::new(self.store.clone(), Clock::system());
        let name = ServiceKeyName::parse("name", name).expect("a valid key name");
        let key = admin
            .create(&name, &permissions.iter().copied().collect())
            .await
            .expect("the key is stored")
            .expect("the key name is free");
        key.expose().to_owned()
    }

    /// A WatchRevocations stream from `since`, opened with a fresh `watch_revocations` key.
    pub async fn watch_revocations(&self, since: u64) -> tonic::Streaming<WatchRevocationsResponse> {
        let name = format!("watcher-{}", uuid::Uuid::new_v4().simple());
        let key = self.service_key(&name, &[Permission::WatchRevocations]).await;
        self.tokens()
            .watch_revocations(bearer(WatchRevocationsRequest { since }, &key))
            .await
            .expect("an authorised watcher is let in")
            .into_inner()
    }

    pub async fn is_active(&self, access_token: &str) -> bool {
        let request = identity::proto::ValidateTokenRequest { access_token: access_token.into() };
        self.tokens().validate_token(request).await.expect("ValidateToken never fails").into_inner().active
    }
}

/// An encryption key file (0600) shared by every Postgres server of this test run.
pub fn shared_encryption_key() -> &'static std::path::Path {
    static KEY: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = KEY.get_or_init(|| {
        use base64::Engine;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("encryption_key");
        let key: [u8; 32] = rand::random();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("key file");
        std::io::Write::write_all(
            &mut file,
            base64::engine::general_purpose::STANDARD.encode(key).as_bytes(),
        )
        .expect("key written");
        (dir, path)
    });
    path
}

/// A request carrying `authorization: <value>` metadata.
pub fn with_authorization<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value.parse().expect("ASCII metadata"));
    request
}

pub fn bearer<T>(message: T, access_token: &str) -> tonic::Request<T> {
    with_authorization(message, &format!("Bearer {access_token}"))
}

/// Asserts `result` failed with `code`, and returns the status for further checks.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// The fields named by the `google.rpc.BadRequest` detail of an INVALID_ARGUMENT status.
pub fn bad_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

async fn fresh_database(backend: Backend) -> Option<TestDatabase> {
    let data_dir = tempfile::tempdir().expect("temp dir");
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", data_dir.path().join("identity.db").display());
            Some(TestDatabase::new(url, data_dir))
        }
        Backend::Postgres => {
            let (url, database) = TemporaryDatabase::create().await?;
            Some(TestDatabase { url, data_dir, made_for_test: Some(database) })
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn with_database(admin_url: &str, name: &str) -> String {
    let (without_query, query) = admin_url.split_once('?').map_or((admin_url, None), |(u, q)| (u, Some(q)));
    let authority_start = without_query.find("://").map_or(0, |i| i + 3);
    let base = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}
