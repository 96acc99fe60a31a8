//! Postgres going away mid-run, on a throwaway cluster of the test's own (initdb into a temp
//! dir, on a free port): never the machine's shared server. Stopped, it refuses connections;
//! behind a [`Proxy`] that stops forwarding, it stops answering, as a partition or a dead host
//! looks.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
    sync::watch,
};

use identity::proto::{LoginRequest, LogoutRequest, RefreshTokenRequest, SignupRequest};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{PASSWORD, TestApp, TestDatabase, assert_code, eventually};

/// A Postgres cluster in a temp dir, run as the `postgres` user when the tests run as root
/// (initdb refuses root).
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// `None` when no Postgres server binaries are installed here.
    fn create() -> Option<Self> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if is_root() {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let cluster = Self { bin, dir, port };
        let data = cluster.data_dir();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        cluster.start();
        Some(cluster)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options =
            format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data_dir(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"]);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command.args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(output.status.success(), "{program:?} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
            .output();
        if is_root() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| Path::new(&bin.join("initdb")).exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

async fn api_status(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest { service: "identity.v1.AuthService".into() })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Calls carry a 10 s deadline: a call that hung instead of answering UNAVAILABLE would end
/// DEADLINE_EXCEEDED and fail the assertion on its code.
fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(10));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_unavailable_not_a_hang_and_the_service_recovers_by_itself() {
    if std::env::var("IDENTITY_TEST_POSTGRES_URL").is_err() {
        eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: Postgres test skipped");
        return;
    }
    let Some(cluster) = Cluster::create() else {
        panic!("IDENTITY_TEST_POSTGRES_URL is set but no Postgres server binaries (initdb) are installed");
    };
    let db = TestDatabase::new(cluster.url(), tempfile::tempdir().unwrap());
    // The default timeouts: a stopped server refuses connections, and that is known at once.
    // Tighter ones put the set-up at risk on a loaded machine: a sign-up and a login on a
    // cluster just started took up to 0.95 s together, against a 1 s acquire timeout.
    let env = vec![("IDENTITY_HEALTH_CHECK_INTERVAL".to_string(), "200ms".to_string())];
    let app = TestApp::start_on(db, env).await;
    let (user, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();

    cluster.stop();

    let mut auth = app.auth();
    let signup = SignupRequest {
        email: "during@example.com".into(),
        password: PASSWORD.into(),
        full_name: "During".into(),
    };
    assert_code(auth.signup(with_deadline(signup.clone())).await, Code::Unavailable);
    let login = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
    assert_code(auth.login(with_deadline(login)).await, Code::Unavailable);
    let refresh = RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() };
    assert_code(auth.refresh_token(with_deadline(refresh.clone())).await, Code::Unavailable);
    assert!(
        app.is_active(&tokens.access_token).await,
        "ValidateToken answers from keys and the revocation set"
    );
    let went_down =
        eventually(Duration::from_secs(15), || async { api_status(&app).await == ServingStatus::NotServing })
            .await;
    assert!(went_down.is_some(), "identity.v1.AuthService still SERVING with its database down");

    cluster.start();

    let recovered =
        eventually(Duration::from_secs(30), || async { api_status(&app).await == ServingStatus::Serving })
            .await;
    assert!(recovered.is_some(), "the service did not recover by itself");
    // Nothing half-written: the failed signup left no row, the failed refresh left the old
    // refresh token usable.
    let during = identity::domain::Email::parse("email", "during@example.com").unwrap().normalized();
    assert!(app.store.find_user_by_email(&during).await.unwrap().is_none());
    let rotated = auth.refresh_token(refresh).await.expect("the old refresh token still works").into_inner();
    assert!(auth.signup(signup).await.is_ok());
    // Revocations flow again (the listener re-subscribed).
    let fresh = rotated.tokens.unwrap();
    auth.logout(LogoutRequest { refresh_token: fresh.refresh_token }).await.unwrap();
    assert!(!app.is_active(&fresh.access_token).await);
}

/// A TCP proxy in front of a cluster that the test can switch to forward nothing while keeping
/// every socket open (new connections are accepted too, and go nowhere).
struct Proxy {
    port: u16,
    forwarding: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (forwarding, switch) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let switch = switch.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    tokio::join!(
                        pipe(from_client, to_server, switch.clone()),
                        pipe(from_server, to_client, switch)
                    );
                });
            }
        });
        Self { port, forwarding }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn blackhole(&self) {
        self.forwarding.send_replace(false);
    }

    fn restore(&self) {
        self.forwarding.send_replace(true);
    }
}

/// Copies `from` to `to` while forwarding is on; while it is off, reads nothing and writes
/// nothing, so both ends see an open connection that never answers.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut forwarding: watch::Receiver<bool>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if forwarding.wait_for(|on| *on).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = forwarding.wait_for(|on| !*on) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read as the blackhole began wait for the restore, like packets in a queue.
        if forwarding.wait_for(|on| *on).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A throwaway cluster, or `None` (and a note) when no Postgres test server is configured.
fn cluster_for_test() -> Option<Cluster> {
    if std::env::var("IDENTITY_TEST_POSTGRES_URL").is_err() {
        eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: Postgres test skipped");
        return None;
    }
    let Some(cluster) = Cluster::create() else {
        panic!("IDENTITY_TEST_POSTGRES_URL is set but no Postgres server binaries (initdb) are installed");
    };
    Some(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_unavailable_at_once_with_default_timeouts() {
    let Some(cluster) = cluster_for_test() else { return };
    let db = TestDatabase::new(cluster.url(), tempfile::tempdir().unwrap());
    let env = vec![("IDENTITY_HEALTH_CHECK_INTERVAL".to_string(), "200ms".to_string())];
    let app = TestApp::start_on(db, env).await;
    let (user, _) = app.signed_in_user().await;

    cluster.stop();

    let mut auth = app.auth();
    let login = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
    let started = Instant::now();
    assert_code(auth.login(with_deadline(login.clone())).await, Code::Unavailable);
    eprintln!("refused: first Login answered UNAVAILABLE in {:?}", started.elapsed());
    let went_down =
        eventually(Duration::from_secs(15), || async { api_status(&app).await == ServingStatus::NotServing })
            .await;
    assert!(went_down.is_some(), "identity.v1.AuthService still SERVING with its database down");
    let started = Instant::now();
    assert_code(auth.login(with_deadline(login.clone())).await, Code::Unavailable);
    eprintln!("refused: Login once health knows answered UNAVAILABLE in {:?}", started.elapsed());

    cluster.start();
    let recovered =
        eventually(Duration::from_secs(30), || async { api_status(&app).await == ServingStatus::Serving })
            .await;
    assert!(recovered.is_some(), "the service did not recover by itself");
    assert!(auth.login(login).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_is_unavailable_within_the_timeouts_and_recovers_by_itself() {
    let Some(cluster) = cluster_for_test() else { return };
    let proxy = Proxy::start(cluster.port).await;
    let db = TestDatabase::new(proxy.url(), tempfile::tempdir().unwrap());
    let env = vec![("IDENTITY_HEALTH_CHECK_INTERVAL".to_string(), "200ms".to_string())];
    let app = TestApp::start_on(db, env).await;
    let (user, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    // Timeouts tight enough for the 10 s deadlines below, set only once the set-up is done: on
    // a loaded machine a sign-up on a cluster just started can take most of a second.
    let app = app
        .restart_with(&[
            ("IDENTITY_DATABASE_STATEMENT_TIMEOUT", "1s"),
            ("IDENTITY_DATABASE_ACQUIRE_TIMEOUT", "1s"),
        ])
        .await;

    proxy.blackhole();

    let mut auth = app.auth();
    let login = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
    let started = Instant::now();
    assert_code(auth.login(with_deadline(login.clone())).await, Code::Unavailable);
    eprintln!("blackholed: first Login answered UNAVAILABLE in {:?}", started.elapsed());
    assert!(
        app.is_active(&tokens.access_token).await,
        "ValidateToken answers from keys and the revocation set"
    );
    let went_down =
        eventually(Duration::from_secs(15), || async { api_status(&app).await == ServingStatus::NotServing })
            .await;
    assert!(went_down.is_some(), "identity.v1.AuthService still SERVING with its database blackholed");
    let started = Instant::now();
    let refresh = RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() };
    assert_code(auth.refresh_token(with_deadline(refresh.clone())).await, Code::Unavailable);
    eprintln!("blackholed: RefreshToken once health knows answered UNAVAILABLE in {:?}", started.elapsed());

    proxy.restore();

    let recovered =
        eventually(Duration::from_secs(30), || async { api_status(&app).await == ServingStatus::Serving })
            .await;
    assert!(recovered.is_some(), "the service did not recover by itself");
    assert!(auth.login(login).await.is_ok());
    assert!(
        auth.refresh_token(refresh).await.is_ok(),
        "the refresh cut off by the blackhole changed nothing"
    );
}
