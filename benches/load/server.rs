//! The identity server the scenarios measure, run in this process as a deployment runs it, and
//! the connections to it: one place decides how a bench server is configured and seeded.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use identity::{
    config::Config,
    proto::{SignupRequest, auth_service_client::AuthServiceClient},
    service::Identity,
    store::{Limits, Store},
    testing::TestServer,
};
use secrecy::ExposeSecret;
use tonic::transport::Channel;

use super::Args;

pub(super) const PASSWORD: &str = "bench-orbit-tundra-42-vessel";

/// An identity server in this process, on a temp dir, until dropped.
pub(super) struct Server {
    pub(super) config: Config,
    pub(super) identity: Arc<Identity>,
    pub(super) addr: SocketAddr,
    _server: TestServer,
    _data_dir: Option<tempfile::TempDir>,
}

impl Server {
    pub(super) async fn start(args: &Args, cost: u32) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        // With --database-url every server of the run shares one database, as replicas do: this
        // one's mail worker wakes only for its own messages, never to claim the ones the
        // delivery scenario's server is timed delivering.
        let mut server =
            Self::start_in(args, cost, &data_dir, &[("IDENTITY_MAIL_POLL_INTERVAL", "1h")]).await;
        server._data_dir = Some(data_dir);
        server
    }

    /// A server on the state in `data_dir` (the caller keeps it), with `env` on top of `args`.
    pub(super) async fn start_in(
        args: &Args,
        cost: u32,
        data_dir: &tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Self {
        let mut vars = vec![("IDENTITY_BCRYPT_COST".to_string(), cost.to_string())];
        if let Some(url) = &args.database_url {
            vars.push(("IDENTITY_DATABASE_URL".into(), url.clone()));
        }
        for pair in &args.env {
            let (k, v) = pair.split_once('=').expect("--env NAME=VALUE");
            vars.push((k.into(), v.into()));
        }
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = identity::testing::config(data_dir.path(), vars).expect("valid configuration");
        let server = TestServer::start(&config).await.expect("server serves");
        Self { config, identity: server.identity(), addr: server.addr(), _server: server, _data_dir: None }
    }

    /// A server at `args.cost` whose login failures are never throttled: for scenarios that
    /// time hashing, not the lockout.
    pub(super) async fn unthrottled(args: &Args, data_dir: &tempfile::TempDir) -> Self {
        let env = [("IDENTITY_LOGIN_FREE_FAILURES", "1000000"), ("IDENTITY_LOCKOUT_THRESHOLD", "0")];
        Self::start_in(args, args.cost, data_dir, &env).await
    }

    /// A store of the bench's own on this server's database, for what the scenario sets up or
    /// watches behind the server's back; its statements may take `statement_timeout`.
    pub(super) async fn store(&self, statement_timeout: Duration) -> Store {
        let limits =
            Limits { max_connections: 2, acquire_timeout: Duration::from_secs(60), statement_timeout };
        Store::open(self.config.database_url.expose_secret(), limits).await.expect("bench store connects")
    }

    /// Signs up `count` users at this server's cost and returns their emails.
    pub(super) async fn users(&self, count: usize) -> Vec<String> {
        let mut auth = AuthServiceClient::new(channels(self.addr, 1).await.remove(0));
        let mut users = Vec::new();
        for i in 0..count {
            let email = format!("bench-{i}-{}@example.com", uuid::Uuid::new_v4().simple());
            let request =
                SignupRequest { email: email.clone(), password: PASSWORD.into(), full_name: "Bench".into() };
            auth.signup(request).await.expect("signup");
            users.push(email);
        }
        users
    }

    /// The run's first line: what the figures below were measured on.
    pub(super) fn print_settings(&self, args: &Args, cores: usize) {
        let (config, identity) = (&self.config, &self.identity);
        println!(
            "identity load test: {cores} cores, bcrypt cost {}, signing {}, hash threads {}, hash queue {}, backend {}, {} per scenario, {} connections",
            config.bcrypt_cost,
            config.signing_alg,
            config.hash_threads,
            identity.hasher_queue_capacity(),
            if config.is_postgres() { "postgres" } else { "sqlite" },
            humantime::format_duration(args.duration),
            args.connections
        );
    }
}

pub(super) async fn channels(addr: SocketAddr, count: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        channels
            .push(Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect"));
    }
    channels
}

/// Makes sure the Postgres database `url` names exists, so that a scenario can seed it once and
/// later runs reuse it (`--database-url postgres://.../identity_bench_1m`).
pub(super) async fn create_database_if_missing(url: &str) {
    use sqlx::{ConnectOptions, postgres::PgConnectOptions};
    let options: PgConnectOptions = url.parse().expect("a Postgres URL");
    let Some(name) = options.get_database().map(str::to_owned) else { return };
    let mut admin = options.clone().database("postgres").connect().await.expect("connect to postgres");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("look the database up");
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await.expect("create database");
        println!("created database {name}");
    }
}
