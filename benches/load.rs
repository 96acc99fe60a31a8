//! Load tool: runs the real server in-process (SQLite in a temp dir, or `--database-url`) and
//! drives it with tonic clients, printing requests/s and latency percentiles per scenario.
//! A bare tonic service answering ValidateToken with a canned response ("echo") runs in the same
//! process as the ceiling of what tonic serves on this machine.
//!
//!     cargo bench --bench load -- --help
//!     cargo bench --bench load                                  # every scenario
//!     cargo bench --bench load -- --scenarios echo,validate-repeated --duration 10s
//!     cargo bench --bench load -- --scenarios inprocess,validate-new --env IDENTITY_SIGNING_ALG=RS256

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest,
    attribute_context::{HttpRequest, Request as AttributeRequest},
};
#[path = "load/accounts.rs"]
mod accounts;
#[path = "load/events.rs"]
mod events;
#[path = "load/lean.rs"]
mod lean;
#[path = "load/list_users.rs"]
mod list_users;
#[path = "load/otlp.rs"]
mod otlp;
#[allow(dead_code)]
#[path = "../tests/api/smtp.rs"]
mod smtp;
use hdrhistogram::Histogram;
use identity::{
    config::Config,
    domain::{MailContent, MailKind, NewMail},
    proto::{
        Claims, GetJwksRequest, GetJwksResponse, LoginRequest, RefreshTokenRequest,
        RequestPasswordResetRequest, SignupRequest, ValidateTokenRequest, ValidateTokenResponse,
        auth_service_client::AuthServiceClient,
        token_service_client::TokenServiceClient,
        token_service_server::{TokenService, TokenServiceServer},
    },
    service::Identity,
    store::{Limits, Store},
    testing::TestServer,
    tokens::AccessTokenSubject,
};
use secrecy::ExposeSecret;
use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

const PASSWORD: &str = "bench-orbit-tundra-42-vessel";
const ALL: &str = "inprocess,echo,validate-repeated,ext-authz,validate-new,jwks,refresh,reset,delivery,signup,login,health-under-login,purge,retry-storm,fair-flood,cost-upgrade,import,otlp,list-users,events";

#[derive(Parser)]
#[command(about = "Load scenarios against an in-process identity server")]
struct Args {
    /// Comma-separated scenarios: inprocess, echo, validate-repeated, ext-authz (Envoy's Check
    /// with a repeated token, in the same rounds as echo), validate-new, jwks,
    /// refresh, reset, delivery, signup, login, health-under-login, purge, retry-storm,
    /// fair-flood, cost-upgrade, import, otlp (traces exported or not), list-users (Postgres only: ListUsers over a million
    /// seeded users, p50/p99 per filter and the plans), events (Postgres only: two replicas
    /// writing while WatchUserEvents subscribers read). `reset` runs RequestPasswordReset for existing and for unknown
    /// emails in alternating rounds (each round's backlog answered and delivered before the
    /// next), at --concurrency and from one client, and prints the medians of both; `delivery` times --mail-messages through the outbox to an SMTP server
    /// in this process.
    #[arg(long, default_value = ALL)]
    scenarios: String,
    /// How long each gRPC scenario runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Rounds of echo and ValidateToken-repeated, alternated so that drift on a shared
    /// machine hits both alike; their ratio is taken between the medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests in flight at once (ValidateToken, GetJwks, echo, refresh).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests in flight for Login and Signup.
    #[arg(long, default_value_t = 32)]
    login_concurrency: usize,
    /// Concurrent logins that flood the server in health-under-login.
    #[arg(long, default_value_t = 64)]
    flood: usize,
    /// Expired sessions the purge scenario seeds and then purges while logins run.
    #[arg(long, default_value_t = 1_000_000)]
    purge_rows: u32,
    /// Closed-loop clients resending at once on RESOURCE_EXHAUSTED in retry-storm.
    #[arg(long, default_value_t = 32)]
    storm: usize,
    /// Attacking clients in fair-flood, each from its own loopback address (127.0.0.2 up).
    #[arg(long, default_value_t = 24)]
    attackers: usize,
    /// Requests each attacker keeps in flight in fair-flood.
    #[arg(long, default_value_t = 2)]
    attacker_concurrency: usize,
    /// Logins the legitimate client makes in fair-flood, one a second.
    #[arg(long, default_value_t = 60)]
    legit_logins: usize,
    /// Accounts the reset scenario asks resets for, in turn (each unknown email is new too).
    #[arg(long, default_value_t = 10_000)]
    reset_accounts: usize,
    /// Single requests the reset scenario times per path with nothing else running (the worker
    /// has answered and delivered the one before): what one enumeration probe sees.
    #[arg(long, default_value_t = 300)]
    reset_probes: usize,
    /// Messages queued and delivered in the delivery scenario.
    #[arg(long, default_value_t = 2000)]
    mail_messages: usize,
    /// Users list-users seeds (once per database) on Postgres.
    #[arg(long, default_value_t = 1_000_000)]
    list_users: u32,
    /// Pages of 100 list-users times per filter, from the start and deep in the listing.
    #[arg(long, default_value_t = 200)]
    list_pages: usize,
    /// Users list-users skips (in pages of 1000) before its deep pages.
    #[arg(long, default_value_t = 500_000)]
    list_deep: u32,
    /// Clients making admin writes in the events scenario, split between its two replicas.
    #[arg(long, default_value_t = 16)]
    event_writers: usize,
    /// WatchUserEvents streams in the events scenario, split between its two replicas.
    #[arg(long, default_value_t = 100)]
    event_subscribers: usize,
    /// Users `identity import` reads from JSON Lines in the import scenario.
    #[arg(long, default_value_t = 100_000)]
    import_users: usize,
    /// Failed logins timed per path in cost-upgrade (and per scheme in import).
    #[arg(long, default_value_t = 30)]
    upgrade_samples: usize,
    /// HTTP/2 connections the client spreads its requests over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// bcrypt cost of the server under test.
    #[arg(long, default_value_t = 12)]
    cost: u32,
    /// Run against this database instead of a temporary SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Extra IDENTITY_* settings for the server, as NAME=VALUE.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Instead of the scenario table: `concurrency` runs echo, ValidateToken (repeated and new
    /// tokens) and Login at each of --concurrencies; `cost` runs Login and Signup at each of
    /// --costs. Rows go to --csv for scripts/plot_benchmarks.py.
    #[arg(long)]
    sweep: Option<String>,
    #[arg(long, default_value = "1,2,4,8,16,32,64", value_delimiter = ',')]
    concurrencies: Vec<usize>,
    #[arg(long, default_value = "8,10,11,12", value_delimiter = ',')]
    costs: Vec<u32>,
    /// Append one row per measurement to this CSV file.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The outcome of one scenario.
struct Report {
    name: String,
    concurrency: usize,
    ok: u64,
    shed: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Report {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<26} {:>4} {:>9} {:>7} {:>6} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            self.name,
            self.concurrency,
            self.ok,
            self.shed,
            self.errors,
            self.rps(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            self.latency.max() as f64 / 1000.0
        );
    }
}

fn print_header() {
    println!(
        "{:<26} {:>4} {:>9} {:>7} {:>6} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "conc", "ok", "shed", "errors", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs `call` from `concurrency` tasks until `duration` has passed. `call(task, n)` returns
/// Ok, or the status it failed with; RESOURCE_EXHAUSTED counts as shed, not as an error.
/// A shed client either honours the server's RetryInfo (as a well-behaved client does),
/// retries after 10 ms (as a flood does), or resends at once (as ghz and most naive clients do).
#[derive(Clone, Copy)]
enum Backoff {
    RetryInfo,
    Hostile,
    Immediate,
}

async fn run<F, Fut>(name: &str, concurrency: usize, duration: Duration, call: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    run_with(name, concurrency, duration, Backoff::RetryInfo, call).await
}

async fn run_with<F, Fut>(
    name: &str,
    concurrency: usize,
    duration: Duration,
    backoff: Backoff,
    call: F,
) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    run_until(name, concurrency, duration, None, backoff, call).await
}

/// As [`run_with`], ending early once `finished` is set.
async fn run_until<F, Fut>(
    name: &str,
    concurrency: usize,
    duration: Duration,
    finished: Option<Arc<AtomicBool>>,
    backoff: Backoff,
    call: F,
) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let call = Arc::clone(&call);
            let finished = finished.clone();
            tokio::spawn(async move {
                let (mut latency, mut ok, mut shed, mut errors) = (histogram(), 0u64, 0u64, 0u64);
                let mut n = 0u64;
                while Instant::now() < deadline
                    && !finished.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
                {
                    let begun = Instant::now();
                    match call(task, n).await {
                        Ok(()) => {
                            ok += 1;
                            latency.saturating_record(begun.elapsed().as_micros() as u64);
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            shed += 1;
                            let retry_info =
                                status.get_error_details().retry_info().and_then(|info| info.retry_delay);
                            let pause = match backoff {
                                Backoff::RetryInfo => retry_info.unwrap_or(Duration::from_millis(100)),
                                Backoff::Hostile => Duration::from_millis(10),
                                Backoff::Immediate => Duration::ZERO,
                            };
                            if !pause.is_zero() {
                                let left = deadline.saturating_duration_since(Instant::now());
                                tokio::time::sleep(pause.min(left)).await;
                            }
                        }
                        Err(status) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("{}: {:?}: {}", task, status.code(), status.message());
                            }
                        }
                    }
                    n += 1;
                }
                (latency, ok, shed, errors)
            })
        })
        .collect();
    let mut report = Report {
        name: name.into(),
        concurrency,
        ok: 0,
        shed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let (latency, ok, shed, errors) = task.await.expect("load task");
        report.latency.add(latency).expect("same histogram bounds");
        report.ok += ok;
        report.shed += shed;
        report.errors += errors;
    }
    report.elapsed = started.elapsed();
    report
}

/// A tonic service that answers ValidateToken with a canned active response: no parsing, no
/// crypto, no lookup. The ceiling for a unary call of the same shape on this machine.
struct Echo {
    response: ValidateTokenResponse,
}

#[tonic::async_trait]
impl TokenService for Echo {
    type WatchRevocationsStream =
        tokio_stream::Empty<Result<identity::proto::WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _: Request<identity::proto::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }

    async fn validate_token(
        &self,
        _: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }

    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse::default()))
    }
}

async fn channels(addr: SocketAddr, count: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        channels
            .push(Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect"));
    }
    channels
}

/// `count` distinct valid access tokens, signed in process (ValidateToken needs no session row)
/// on every core: an RS256 signature costs milliseconds, and validate-new needs thousands.
fn mint_tokens(identity: &Identity, count: usize) -> Vec<String> {
    let now = identity.now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, count.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let share = count / threads + usize::from(worker < count % threads);
                scope.spawn(move || (0..share).map(|_| mint_token(identity, now)).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("minting thread")).collect()
    })
}

fn mint_token(identity: &Identity, now: chrono::DateTime<chrono::Utc>) -> String {
    let subject = AccessTokenSubject {
        user_id: identity::domain::UserId::new(),
        email: "bench@example.com",
        full_name: "Bench",
        email_verified: true,
        session_id: identity::domain::SessionId::new(),
        session_expires_at: now + chrono::TimeDelta::days(1),
        roles: &[],
        auth_time: now,
        second_factor: false,
    };
    identity.tokens().issue(&subject, now).expect("sign").token
}

/// ValidateToken with a token the server has not verified before, each time: on a server of its
/// own (with the same `--env`) whose token cache is off, so that a pool of 1,000 tokens, taken in
/// turn, stands for endless new ones (minting tens of thousands took minutes with RS256). What
/// it leaves out is the cache's miss and insert, a microsecond beside the signature check.
async fn validate_new(args: &Args) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(args, args.cost, &data_dir, &[("IDENTITY_TOKEN_CACHE_SIZE", "0")]).await;
    let identity = Arc::clone(&server.identity);
    let minting = Instant::now();
    let tokens = Arc::new(tokio::task::spawn_blocking(move || mint_tokens(&identity, 1_000)).await.unwrap());
    println!("(minted {} {} tokens in {:.1?})", tokens.len(), server.config.signing_alg, minting.elapsed());
    let channels = Arc::new(channels(server.addr, args.connections).await);
    run("ValidateToken new tokens", args.concurrency, args.duration, validate_load(channels, &tokens))
        .await
        .print();
}

fn in_process(identity: &Identity) {
    const N: usize = 50_000;
    let repeated = mint_tokens(identity, 1).remove(0);
    identity.validate(&repeated).expect("active");
    let started = Instant::now();
    for _ in 0..N {
        identity.validate(&repeated).expect("active");
    }
    let hit = started.elapsed() / N as u32;
    // Few: an RS256 signature costs milliseconds to make.
    let fresh = mint_tokens(identity, 1_000);
    let started = Instant::now();
    for token in &fresh {
        identity.validate(token).expect("active");
    }
    let miss = started.elapsed() / fresh.len() as u32;
    println!(
        "in-process ValidateToken: repeated token (cache hit) {hit:?}/call, new token (signature check) {miss:?}/call"
    );
}

/// Time one core takes to verify a password at `cost`.
fn single_core_verify_time(cost: u32) -> Duration {
    let hash = bcrypt::hash(PASSWORD, cost).expect("hash");
    let rounds = if cost >= 12 { 4 } else { 16 };
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(bcrypt::verify(PASSWORD, &hash).expect("verify"));
    }
    started.elapsed() / rounds
}

/// Makes sure the Postgres database `url` names exists, so that a scenario can seed it once and
/// later runs reuse it (`--database-url postgres://.../identity_bench_1m`).
async fn create_database_if_missing(url: &str) {
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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let scenarios: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    let wants = |name: &str| scenarios.contains(&name);
    if let Some(url) = args.database_url.as_deref().filter(|url| url.starts_with("postgres")) {
        create_database_if_missing(url).await;
    }
    if let Some(sweep) = args.sweep.clone() {
        return sweep_main(&args, &sweep).await;
    }
    let server = Server::start(&args, args.cost).await;
    let (config, identity, addr) = (&server.config, Arc::clone(&server.identity), server.addr);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
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
    if wants("inprocess") {
        in_process(&identity);
    }
    let channels = Arc::new(channels(addr, args.connections).await);
    let channel = {
        let channels = Arc::clone(&channels);
        move |task: usize| channels[task % channels.len()].clone()
    };
    print_header();
    let mut echo_rps = Vec::new();
    let mut validate_rps = Vec::new();
    let mut check_rps = Vec::new();
    let echo_channels =
        if wants("echo") { Some(Arc::new(start_echo(&identity, args.connections).await)) } else { None };
    let sample = mint_tokens(&identity, 1).remove(0);
    for _ in 0..args.rounds.max(1) {
        if let Some(echo_channels) = &echo_channels {
            let load = validate_load(Arc::clone(echo_channels), std::slice::from_ref(&sample));
            let report = run("echo (bare tonic)", args.concurrency, args.duration, load).await;
            report.print();
            echo_rps.push(report.rps());
        }
        if wants("validate-repeated") {
            let load = validate_load(Arc::clone(&channels), std::slice::from_ref(&sample));
            let report = run("ValidateToken repeated", args.concurrency, args.duration, load).await;
            report.print();
            validate_rps.push(report.rps());
        }
        if wants("ext-authz") {
            let channel = channel.clone();
            let request = lean::Unary::new(CHECK, &check_request(&sample));
            let report = run("ext_authz Check repeated", args.concurrency, args.duration, move |task, _| {
                let (channel, request) = (channel(task), request.clone());
                async move {
                    let response: lean::CheckStatus = request.call(channel).await?;
                    if response.allowed() { Ok(()) } else { Err(Status::internal("denied")) }
                }
            })
            .await;
            report.print();
            check_rps.push(report.rps());
        }
    }

    if wants("validate-new") {
        validate_new(&args).await;
    }

    if wants("jwks") {
        let channel = channel.clone();
        run("GetJwks", args.concurrency, args.duration, move |task, _| {
            let mut client = TokenServiceClient::new(channel(task));
            async move { client.get_jwks(GetJwksRequest {}).await.map(drop) }
        })
        .await
        .print();
    }

    let mut auth = AuthServiceClient::new(channels[0].clone());
    let users = if ["login", "health-under-login", "refresh", "purge", "retry-storm", "fair-flood"]
        .iter()
        .any(|scenario| wants(scenario))
    {
        server.users(8).await
    } else {
        Vec::new()
    };
    let users = Arc::new(users);

    if wants("refresh") {
        // Each task follows its own session's rotation chain.
        let mut chains = Vec::new();
        for task in 0..args.concurrency {
            let request =
                LoginRequest { email: users[task % users.len()].clone(), password: PASSWORD.into() };
            chains.push(tokio::sync::Mutex::new(
                auth.login(request).await.expect("login").into_inner().tokens.unwrap().refresh_token,
            ));
        }
        let chains = Arc::new(chains);
        let channel = channel.clone();
        run("RefreshToken", args.concurrency, args.duration, move |task, _| {
            let mut client = AuthServiceClient::new(channel(task));
            let chains = Arc::clone(&chains);
            async move {
                let mut current = chains[task].lock().await;
                let request = RefreshTokenRequest { refresh_token: current.clone() };
                let tokens = client.refresh_token(request).await?.into_inner().tokens.unwrap();
                *current = tokens.refresh_token;
                Ok(())
            }
        })
        .await
        .print();
    }

    if wants("reset") {
        reset_timing(&args).await;
    }
    if wants("delivery") {
        delivery(&args).await;
    }

    let verify_time = single_core_verify_time(config.bcrypt_cost);
    let bcrypt_limit = cores as f64 / verify_time.as_secs_f64();
    let mut login_rps = None;
    let mut signup_rps = None;

    if wants("signup") {
        let report =
            run("Signup", args.login_concurrency, args.duration, signup_load(Arc::clone(&channels))).await;
        report.print();
        signup_rps = Some(report.rps());
    }

    if wants("login") {
        let report = run(
            "Login",
            args.login_concurrency,
            args.duration,
            login_load(Arc::clone(&channels), Arc::clone(&users)),
        )
        .await;
        report.print();
        login_rps = Some(report.rps());
    }

    if wants("health-under-login") {
        let flood = tokio::spawn(run_with(
            "(login flood)",
            args.flood,
            args.duration,
            Backoff::Hostile,
            login_load(Arc::clone(&channels), Arc::clone(&users)),
        ));
        // Let the flood fill the hash pool before probing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let probe_time = args.duration.saturating_sub(Duration::from_secs(1));
        let health_channel = channel(0);
        let health = run("  health Check (probe)", 1, probe_time, move |_, _| {
            let mut client = HealthClient::new(health_channel.clone());
            async move { client.check(HealthCheckRequest { service: String::new() }).await.map(drop) }
        });
        let token = Arc::new(mint_tokens(&identity, 1).remove(0));
        let validate_channel = channel(1);
        let validate = run("  ValidateToken (probe)", 1, probe_time, move |_, _| {
            let mut client = TokenServiceClient::new(validate_channel.clone());
            let request = ValidateTokenRequest { access_token: token.to_string() };
            async move { client.validate_token(request).await.map(drop) }
        });
        let (health, validate) = tokio::join!(health, validate);
        let flood = flood.await.expect("flood");
        println!("health under a flood of {} concurrent logins:", args.flood);
        flood.print();
        health.print();
        validate.print();
        println!(
            "health under login: health Check p99 {:.3} ms, ValidateToken p99 {:.3} ms (target < 5 ms)",
            health.latency.value_at_quantile(0.99) as f64 / 1000.0,
            validate.latency.value_at_quantile(0.99) as f64 / 1000.0
        );
    }

    if wants("purge") {
        purge_scenario(&args, &server, Arc::clone(&channels), Arc::clone(&users)).await;
    }
    if wants("retry-storm") {
        retry_storm(&args, &channels, &users, bcrypt_limit).await;
    }
    if wants("fair-flood") {
        fair_flood(&args, addr, &users).await;
    }
    if wants("cost-upgrade") {
        cost_upgrade(&args).await;
    }
    if wants("import") {
        import_scenario(&args).await;
    }
    if wants("otlp") {
        otlp::otlp(&args).await;
    }
    if wants("list-users") {
        list_users::list_users(&args).await;
    }
    if wants("events") {
        events::events(&args).await;
    }

    println!();
    println!(
        "bcrypt: one verify at cost {} takes {:.1} ms on one core; limit on {cores} cores: {bcrypt_limit:.2} logins/s",
        config.bcrypt_cost,
        verify_time.as_secs_f64() * 1000.0
    );
    if let (Some(validate), Some(echo)) = (median(&mut validate_rps), median(&mut echo_rps)) {
        println!(
            "ratio ValidateToken (repeated) / echo: {:.2} (medians of {} rounds: {validate:.0} / {echo:.0} requests/s)",
            validate / echo,
            validate_rps.len()
        );
    }
    if let (Some(check), Some(echo)) = (median(&mut check_rps), median(&mut echo_rps)) {
        println!(
            "ratio ext_authz Check (repeated) / echo: {:.2} (medians of {} rounds: {check:.0} / {echo:.0} requests/s)",
            check / echo,
            check_rps.len()
        );
    }
    if let (Some(check), Some(validate)) = (median(&mut check_rps), median(&mut validate_rps)) {
        println!("ratio ext_authz Check / ValidateToken (repeated): {:.2}", check / validate);
    }
    if let Some(login) = login_rps {
        println!("ratio Login / bcrypt limit: {:.2}", login / bcrypt_limit);
    }
    if let Some(signup) = signup_rps {
        println!("ratio Signup / bcrypt limit: {:.2}", signup / bcrypt_limit);
    }
}

/// RequestPasswordReset for existing and for unknown emails, alternating rounds so that neither
/// gets a warmer cache, on a server of its own whose hourly allowance never runs out. The
/// request path is the same single insert for both; the mail worker answers each request
/// meanwhile (for an existing email a token and a message, delivered as an .eml file; for an
/// unknown one only the request's removal), and after each round the scenario waits until it
/// has answered and delivered everything, so that no round starts behind another's backlog.
/// The existing emails are --reset-accounts accounts asked for in turn, as the unknown ones
/// are each new: a handful of accounts asked for by every client at once would mostly find a
/// request pending already. Run at --concurrency and from a single client; prints the median
/// p50 of each, and how long each round's backlog took to drain.
async fn reset_timing(args: &Args) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let env = [("IDENTITY_MAIL_MAX_PER_HOUR", "10000"), ("IDENTITY_RESET_REQUESTS_MAX_PENDING", "1000000")];
    let server = Server::start_in(args, 4, &data_dir, &env).await;
    let users = Arc::new(accounts::seed(&server.config, args.reset_accounts.max(1)).await);
    let channels = Arc::new(channels(server.addr, args.connections).await);
    let store = server.store(Duration::from_secs(60)).await;
    for concurrency in [args.concurrency, 1] {
        let mut medians: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..args.rounds.max(1) {
            for (index, existing) in [true, false].into_iter().enumerate() {
                let (channels, users) = (Arc::clone(&channels), Arc::clone(&users));
                let next = Arc::new(AtomicUsize::new(0));
                // Unknown emails are new in every round, as existing ones are asked for again.
                let round = uuid::Uuid::new_v4().simple().to_string();
                let name = if existing { "ResetRequest existing" } else { "ResetRequest unknown" };
                let report = run(name, concurrency, args.duration, move |task, _| {
                    let mut client = AuthServiceClient::new(channels[task % channels.len()].clone());
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let email = if existing {
                        users[n % users.len()].clone()
                    } else {
                        format!("nobody-{n}-{round}@example.com")
                    };
                    async move {
                        client.request_password_reset(RequestPasswordResetRequest { email }).await.map(drop)
                    }
                })
                .await;
                report.print();
                medians[index].push(report.latency.value_at_quantile(0.5) as f64 / 1000.0);
                let drained = drain_reset_backlog(&store).await;
                println!("  backlog of {name} answered and delivered {drained:.2?} after the round");
            }
        }
        let [mut existing, mut unknown] = medians;
        let rounds = existing.len();
        if let (Some(existing), Some(unknown)) = (median(&mut existing), median(&mut unknown)) {
            println!(
                "reset request p50 at concurrency {concurrency} (median of {rounds} rounds): existing {existing:.3} ms, unknown {unknown:.3} ms, ratio {:.2}",
                existing / unknown
            );
        }
    }
    reset_probes(args, &channels, &users, &store).await;
    store.close().await;
}

/// One request at a time, existing and unknown emails interleaved, each sent only once the
/// worker has answered and delivered everything before it: the latency a single enumeration
/// probe sees, without the load of the probes before it (the rounds above measure that).
async fn reset_probes(args: &Args, channels: &[Channel], users: &[String], store: &Store) {
    let mut client = AuthServiceClient::new(channels[0].clone());
    let mut latency = [histogram(), histogram()];
    for n in 0..args.reset_probes.max(1) * 2 {
        let existing = n % 2 == 0;
        let email = if existing {
            users[(n / 2) % users.len()].clone()
        } else {
            format!("probe-{n}-{}@example.com", uuid::Uuid::new_v4().simple())
        };
        drain_reset_backlog(store).await;
        let started = Instant::now();
        client
            .request_password_reset(RequestPasswordResetRequest { email })
            .await
            .expect("a reset request is answered");
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency[usize::from(!existing)].record(micros.max(1)).expect("latency within the histogram's bounds");
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let [existing, unknown] = &latency;
    println!(
        "reset request, one probe at a time ({} each, interleaved): existing p50 {:.3} ms p99 {:.3} ms, unknown p50 {:.3} ms p99 {:.3} ms, p50 ratio {:.2}",
        existing.len(),
        ms(existing, 0.5),
        ms(existing, 0.99),
        ms(unknown, 0.5),
        ms(unknown, 0.99),
        ms(existing, 0.5) / ms(unknown, 0.5)
    );
}

/// Waits until no reset request is pending and no message waits for delivery; returns how long
/// that took.
async fn drain_reset_backlog(store: &Store) -> Duration {
    let started = Instant::now();
    loop {
        let requests = store.pending_reset_requests().await.expect("count reset requests");
        let (messages, _) = store.mail_queue_depth().await.expect("count queued mail");
        if requests == 0 && messages == 0 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the reset backlog drains within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages per second through the outbox to an SMTP server on loopback (the tests' server):
/// --mail-messages are queued while the worker sleeps, then it is woken and timed until the
/// server has accepted every one. The messages carry this run's tag, so that anything else
/// delivered meanwhile (on a shared Postgres database, messages an earlier run left queued) is
/// not counted.
async fn delivery(args: &Args) {
    let smtp = smtp::SmtpServer::start().await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let url = smtp.url();
    let env = [("IDENTITY_SMTP_URL", url.as_str()), ("IDENTITY_MAIL_POLL_INTERVAL", "1h")];
    let server = Server::start_in(args, 4, &data_dir, &env).await;
    let store = server.store(Duration::from_secs(60)).await;
    let now = server.identity.now();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let queueing = Instant::now();
    for n in 0..args.mail_messages {
        let mail = NewMail {
            kind: MailKind::VerifyEmail,
            recipient: format!("delivery-{n}-{run}@example.com"),
            content: MailContent {
                name: "Bench User".into(),
                link: Some(format!("https://app.example.com/verify?token=bench-{n}").into()),
                expires_at: Some(now + chrono::TimeDelta::hours(24)),
            },
        };
        store.queue_mail(&mail, now).await.expect("queue a message");
    }
    let queued = queueing.elapsed();
    let started = Instant::now();
    server.identity.mail_queue().wake();
    let ours = |message: &smtp::Received| {
        message.recipients.iter().any(|to| to.ends_with(&format!("-{run}@example.com")))
    };
    let received = smtp.wait_for_matching(args.mail_messages, Duration::from_secs(600), ours).await.len();
    let elapsed = started.elapsed();
    println!(
        "delivery: {received} of {} messages through the outbox to SMTP on loopback in {elapsed:.2?}: {:.0} messages/s (queued one transaction each in {queued:.2?}: {:.0}/s)",
        args.mail_messages,
        received as f64 / elapsed.as_secs_f64(),
        args.mail_messages as f64 / queued.as_secs_f64()
    );
    store.close().await;
}

/// Logins' latency without a purge, then while the server purges `--purge-rows` expired
/// sessions (seeded in one statement beforehand). Logins run from as many clients as there
/// are hash threads, so that their latency is service time, not queueing.
async fn purge_scenario(args: &Args, server: &Server, channels: Arc<Vec<Channel>>, users: Arc<Vec<String>>) {
    let clients = server.config.hash_threads;
    let baseline = run(
        "Login (no purge)",
        clients,
        args.duration,
        login_load(Arc::clone(&channels), Arc::clone(&users)),
    )
    .await;
    baseline.print();

    // Seeding a million rows is one long statement: well past the service's statement bound.
    let store = server.store(Duration::from_secs(600)).await;
    let email = identity::domain::Email::parse("email", &users[0]).expect("bench email").normalized();
    let owner = store.find_user_by_email(&email).await.expect("lookup").expect("bench user exists").user.id;
    let seeding = Instant::now();
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(3);
    let seeded =
        store.insert_expired_sessions(owner, args.purge_rows, long_ago).await.expect("seed sessions");
    println!("(seeded {seeded} expired sessions in {:.1?})", seeding.elapsed());

    let finished = Arc::new(AtomicBool::new(false));
    let purge = {
        let (identity, finished) = (Arc::clone(&server.identity), Arc::clone(&finished));
        tokio::spawn(async move {
            let started = Instant::now();
            identity.purge().await;
            finished.store(true, Ordering::Relaxed);
            started.elapsed()
        })
    };
    let during = run_until(
        "Login (during purge)",
        clients,
        Duration::from_secs(3600),
        Some(finished),
        Backoff::RetryInfo,
        login_load(channels, users),
    )
    .await;
    let purge_time = purge.await.expect("purge task");
    during.print();
    let p99 = |report: &Report| report.latency.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "purge of {seeded} sessions took {:.1?} (batches of {}); Login p99 during / without: {:.3} / {:.3} ms = {:.2}",
        purge_time,
        identity::store::PURGE_BATCH,
        p99(&during),
        p99(&baseline),
        p99(&during) / p99(&baseline)
    );
    store.close().await;
}

/// An identity server in this process, on a temp dir, until dropped.
struct Server {
    config: Config,
    identity: Arc<Identity>,
    addr: SocketAddr,
    _server: TestServer,
    _data_dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start(args: &Args, cost: u32) -> Self {
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
    async fn start_in(args: &Args, cost: u32, data_dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Self {
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
    async fn unthrottled(args: &Args, data_dir: &tempfile::TempDir) -> Self {
        let env = [("IDENTITY_LOGIN_FREE_FAILURES", "1000000"), ("IDENTITY_LOCKOUT_THRESHOLD", "0")];
        Self::start_in(args, args.cost, data_dir, &env).await
    }

    /// A store of the bench's own on this server's database, for what the scenario sets up or
    /// watches behind the server's back; its statements may take `statement_timeout`.
    async fn store(&self, statement_timeout: Duration) -> Store {
        let limits =
            Limits { max_connections: 2, acquire_timeout: Duration::from_secs(60), statement_timeout };
        Store::open(self.config.database_url.expose_secret(), limits).await.expect("bench store connects")
    }

    /// Signs up `count` users at this server's cost and returns their emails.
    async fn users(&self, count: usize) -> Vec<String> {
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
}

/// A login load: each call logs one of `users` in.
fn login_load(
    channels: Arc<Vec<Channel>>,
    users: Arc<Vec<String>>,
) -> impl Fn(usize, u64) -> BoxedCall + Send + Sync {
    move |task, n| {
        let mut client = AuthServiceClient::new(channels[task % channels.len()].clone());
        let email = users[(task + n as usize) % users.len()].clone();
        Box::pin(
            async move { client.login(LoginRequest { email, password: PASSWORD.into() }).await.map(drop) },
        )
    }
}

/// A signup load: each call signs a new user up.
fn signup_load(channels: Arc<Vec<Channel>>) -> impl Fn(usize, u64) -> BoxedCall + Send + Sync {
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    move |task, n| {
        let mut client = AuthServiceClient::new(channels[task % channels.len()].clone());
        let request = SignupRequest {
            email: format!("s-{prefix}-{task}-{n}@example.com"),
            password: PASSWORD.into(),
            full_name: "Bench".into(),
        };
        Box::pin(async move { client.signup(request).await.map(drop) })
    }
}

type BoxedCall = std::pin::Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// A ValidateToken load over `tokens`, each call taking the next one (one token: all repeats).
/// ValidateToken of `tokens`, taken in turn, on `channels`: each request encoded once, and only
/// `active` read of the answer (see [`lean`]).
fn validate_load(
    channels: Arc<Vec<Channel>>,
    tokens: &[String],
) -> impl Fn(usize, u64) -> BoxedCall + Send + Sync + use<> {
    let requests: Arc<Vec<lean::Unary>> =
        Arc::new(tokens.iter().map(|token| validate_request(token)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    move |task, _| {
        let channel = channels[task % channels.len()].clone();
        let request = requests[next.fetch_add(1, Ordering::Relaxed) % requests.len()].clone();
        Box::pin(async move { active(request.call(channel).await?) })
    }
}

fn write_csv(path: &Option<std::path::PathBuf>, sweep: &str, cost: u32, report: &Report) {
    let Some(path) = path else { return };
    use std::io::Write;
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open csv");
    if new {
        writeln!(file, "sweep,scenario,cost,concurrency,ok,shed,errors,rps,p50_ms,p90_ms,p99_ms,max_ms")
            .expect("csv");
    }
    let ms = |q: f64| report.latency.value_at_quantile(q) as f64 / 1000.0;
    writeln!(
        file,
        "{sweep},{},{cost},{},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.3}",
        report.name.trim(),
        report.concurrency,
        report.ok,
        report.shed,
        report.errors,
        report.rps(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        report.latency.max() as f64 / 1000.0
    )
    .expect("csv");
}

async fn sweep_main(args: &Args, sweep: &str) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    print_header();
    match sweep {
        "concurrency" => {
            let server = Server::start(args, args.cost).await;
            println!(
                "# sweep over concurrency: {cores} cores, bcrypt cost {}, hash queue {}",
                args.cost,
                server.identity.hasher_queue_capacity()
            );
            let channels = Arc::new(channels(server.addr, args.connections).await);
            let echo = Arc::new(start_echo(&server.identity, args.connections).await);
            let repeated = Arc::new(mint_tokens(&server.identity, 1));
            let identity = Arc::clone(&server.identity);
            let fresh =
                Arc::new(tokio::task::spawn_blocking(move || mint_tokens(&identity, 100_000)).await.unwrap());
            let users = Arc::new(server.users(8).await);
            for &concurrency in &args.concurrencies {
                for (name, load) in [
                    ("echo", validate_load(Arc::clone(&echo), &repeated)),
                    ("ValidateToken repeated", validate_load(Arc::clone(&channels), &repeated)),
                    ("ValidateToken new tokens", validate_load(Arc::clone(&channels), &fresh)),
                ] {
                    let report = run(name, concurrency, args.duration, load).await;
                    report.print();
                    write_csv(&args.csv, sweep, args.cost, &report);
                }
                let report = run(
                    "Login",
                    concurrency,
                    args.duration,
                    login_load(Arc::clone(&channels), Arc::clone(&users)),
                )
                .await;
                report.print();
                write_csv(&args.csv, sweep, args.cost, &report);
            }
        }
        "cost" => {
            for &cost in &args.costs {
                let server = Server::start(args, cost).await;
                let channels = Arc::new(channels(server.addr, args.connections).await);
                let users = Arc::new(server.users(8).await);
                let limit = cores as f64 / single_core_verify_time(cost).as_secs_f64();
                println!(
                    "# cost {cost}: bcrypt limit {limit:.1} logins/s on {cores} cores, hash queue {}",
                    server.identity.hasher_queue_capacity()
                );
                let report = run(
                    "Login",
                    args.login_concurrency,
                    args.duration,
                    login_load(Arc::clone(&channels), users),
                )
                .await;
                report.print();
                write_csv(&args.csv, sweep, cost, &report);
                let report =
                    run("Signup", args.login_concurrency, args.duration, signup_load(Arc::clone(&channels)))
                        .await;
                report.print();
                write_csv(&args.csv, sweep, cost, &report);
                let limit_report = Report {
                    name: "bcrypt limit".into(),
                    concurrency: cores,
                    ok: (limit * args.duration.as_secs_f64()) as u64,
                    shed: 0,
                    errors: 0,
                    elapsed: args.duration,
                    latency: histogram(),
                };
                write_csv(&args.csv, sweep, cost, &limit_report);
            }
        }
        other => panic!("unknown sweep {other:?}: concurrency or cost"),
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
const VALIDATE_TOKEN: &str = "/identity.v1.TokenService/ValidateToken";

/// ValidateToken of `token`, encoded once (see [`lean`]).
fn validate_request(token: &str) -> lean::Unary {
    lean::Unary::new(VALIDATE_TOKEN, &ValidateTokenRequest { access_token: token.to_owned() })
}

fn active(response: lean::Active) -> Result<(), Status> {
    if response.active { Ok(()) } else { Err(Status::internal("inactive")) }
}

/// A CheckRequest as Envoy sends it for `GET /orders/42` with `authorization: Bearer <token>` and
/// a few ordinary headers.
fn check_request(token: &str) -> CheckRequest {
    let headers = [
        ("authorization", format!("Bearer {token}")),
        (":authority", "shop.example.com".to_owned()),
        (":method", "GET".to_owned()),
        (":path", "/orders/42".to_owned()),
        ("accept", "application/json".to_owned()),
        ("user-agent", "bench/1.0".to_owned()),
        ("x-request-id", "7f1c2d9e-4b7a-4c55-9e0f-1a2b3c4d5e6f".to_owned()),
    ];
    let http = HttpRequest {
        method: "GET".into(),
        path: "/orders/42".into(),
        host: "shop.example.com".into(),
        headers: headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect(),
        ..HttpRequest::default()
    };
    let request = AttributeRequest { http: Some(http), ..AttributeRequest::default() };
    CheckRequest {
        attributes: Some(AttributeContext { request: Some(request), ..AttributeContext::default() }),
    }
}

/// Serves [`Echo`] on an ephemeral port, answering with the claims of a real token.
async fn start_echo(identity: &Identity, connections: usize) -> Vec<Channel> {
    let sample = mint_tokens(identity, 1).remove(0);
    let claims = identity.validate(&sample).expect("active").claims.clone();
    let response = ValidateTokenResponse { active: true, claims: Some(claims_message(&claims)) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TokenServiceServer::new(Echo { response }))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    channels(addr, connections).await
}

fn claims_message(claims: &identity::tokens::AccessClaims) -> Claims {
    identity::rpc::token_claims_message(claims)
}

/// `count` connections to `addr` whose client side is bound to `source`, so that the server
/// sees them as another client.
async fn channels_from(addr: SocketAddr, source: std::net::IpAddr, count: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap().local_address(Some(source));
        channels.push(endpoint.connect().await.expect("connect"));
    }
    channels
}

/// 32 (`--storm`) closed-loop clients log in and resend at once whenever they are shed, while a
/// probe checks health: goodput against the bcrypt limit, and what the rejections cost.
async fn retry_storm(args: &Args, channels: &Arc<Vec<Channel>>, users: &Arc<Vec<String>>, bcrypt_limit: f64) {
    let storm = tokio::spawn(run_with(
        "(retry storm)",
        args.storm,
        args.duration,
        Backoff::Immediate,
        login_load(Arc::clone(channels), Arc::clone(users)),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe_time = args.duration.saturating_sub(Duration::from_secs(1));
    let health = paced_health_probe(channels[0].clone(), probe_time, Duration::from_millis(10)).await;
    let storm = storm.await.expect("storm");
    println!("retry storm: {} closed-loop logins resending at once when shed:", args.storm);
    storm.print();
    health.print();
    println!(
        "retry storm: goodput {:.2} logins/s = {:.2} x the bcrypt limit (target >= 0.90); {:.0} rejections/s; \
         health p99 {:.3} ms (target < 5 ms)",
        storm.rps(),
        storm.rps() / bcrypt_limit,
        storm.shed as f64 / storm.elapsed.as_secs_f64(),
        health.latency.value_at_quantile(0.99) as f64 / 1000.0
    );
}

/// `--attackers` clients, each from its own loopback address, send wrong passwords for unknown
/// emails at full speed (`--attacker-concurrency` in flight each, resent at once), while a
/// legitimate client logs in from 127.0.0.1 once a second.
async fn fair_flood(args: &Args, addr: SocketAddr, users: &Arc<Vec<String>>) {
    let attack_time = Duration::from_secs(args.legit_logins as u64 + 2);
    let mut attackers = Vec::new();
    for attacker in 0..args.attackers {
        let first = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2));
        let source = std::net::IpAddr::V4((first + attacker as u32).into());
        let channels = Arc::new(channels_from(addr, source, 1).await);
        let prefix = uuid::Uuid::new_v4().simple().to_string();
        attackers.push(tokio::spawn(run_with(
            "(attackers)",
            args.attacker_concurrency,
            attack_time,
            Backoff::Immediate,
            move |task, n| {
                let mut client = AuthServiceClient::new(channels[0].clone());
                let request = LoginRequest {
                    email: format!("guess-{prefix}-{task}-{n}@example.com"),
                    password: "wrong-guess-wrong-guess".into(),
                };
                Box::pin(async move {
                    match client.login(request).await {
                        Err(status) if status.code() == Code::Unauthenticated => Ok(()),
                        other => other.map(drop),
                    }
                }) as BoxedCall
            },
        )));
    }
    // Let the attack fill the pool before the first legitimate login.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let legit = channels(addr, 1).await.remove(0);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut logins = Vec::new();
    for n in 0..args.legit_logins {
        ticks.tick().await;
        let mut client = AuthServiceClient::new(legit.clone());
        let mut request =
            Request::new(LoginRequest { email: users[n % users.len()].clone(), password: PASSWORD.into() });
        request.set_timeout(Duration::from_secs(10));
        logins.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = client.login(request).await.map(drop);
            (outcome, started.elapsed())
        }));
    }
    let mut latency = histogram();
    let (mut ok, mut failed) = (0u64, std::collections::BTreeMap::<String, u64>::new());
    for login in logins {
        let (outcome, took) = login.await.expect("login task");
        match outcome {
            Ok(()) => {
                ok += 1;
                latency.saturating_record(took.as_micros() as u64);
            }
            Err(status) => *failed.entry(format!("{:?}", status.code())).or_default() += 1,
        }
    }
    let mut attack = Report {
        name: "(attackers)".into(),
        concurrency: args.attackers * args.attacker_concurrency,
        ok: 0,
        shed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for attacker in attackers {
        let report = attacker.await.expect("attacker");
        attack.ok += report.ok;
        attack.shed += report.shed;
        attack.errors += report.errors;
        attack.elapsed = attack.elapsed.max(report.elapsed);
        attack.latency.add(report.latency).expect("same histogram bounds");
    }
    println!(
        "fair flood: {} attackers x {} in flight, wrong passwords from 127.0.0.2 up, resent at once; \
         ok = password checked:",
        args.attackers, args.attacker_concurrency
    );
    attack.print();
    let total = args.legit_logins.max(1) as f64;
    println!(
        "fair flood: legitimate client (127.0.0.1, one login a second): {ok}/{} succeeded ({:.1}%; target >= 95%), \
         p50 {:.0} ms, p99 {:.0} ms (target < 2000 ms), max {:.0} ms; failures {failed:?}",
        args.legit_logins,
        100.0 * ok as f64 / total,
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
    );
}

/// Users made at cost 10, the server restarted at `--cost` on the same database: the wall-clock
/// medians of a failed login for an existing account and for an unknown email.
async fn cost_upgrade(args: &Args) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let low = 10.min(args.cost);
    let old = Server::start_in(args, low, &data_dir, &[]).await;
    let users = old.users(args.upgrade_samples.clamp(1, 8)).await;
    drop(old);
    let server = Server::unthrottled(args, &data_dir).await;
    let mut auth = AuthServiceClient::new(channels(server.addr, 1).await.remove(0));
    let (mut existing, mut unknown) = (Vec::new(), Vec::new());
    for n in 0..args.upgrade_samples {
        existing.push(failed_login_ms(&mut auth, users[n % users.len()].clone()).await);
        unknown.push(failed_login_ms(&mut auth, format!("nobody-{n}@example.com")).await);
    }
    let (existing, unknown) = (median(&mut existing).unwrap_or(0.0), median(&mut unknown).unwrap_or(0.0));
    println!(
        "cost upgrade {low} -> {}: failed login medians over {} each: existing account (cost-{low} hash) \
         {existing:.1} ms, unknown email {unknown:.1} ms, ratio {:.2} (target: equal, 1.00)",
        args.cost,
        args.upgrade_samples,
        unknown / existing.max(1e-9)
    );
}

/// Health checks every `every` for `duration`, as a prober sends them: a probe in a tight loop
/// would itself take a core from bcrypt and measure its own queueing.
async fn paced_health_probe(channel: Channel, duration: Duration, every: Duration) -> Report {
    let mut client = HealthClient::new(channel);
    let mut report = Report {
        name: format!("  health Check ({:.0}/s)", 1.0 / every.as_secs_f64()),
        concurrency: 1,
        ok: 0,
        shed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    let started = Instant::now();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < duration {
        ticks.tick().await;
        let begun = Instant::now();
        match client.check(HealthCheckRequest { service: String::new() }).await {
            Ok(_) => {
                report.ok += 1;
                report.latency.saturating_record(begun.elapsed().as_micros() as u64);
            }
            Err(_) => report.errors += 1,
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// `identity import` of `--import-users` users from JSON Lines into a fresh database (the real
/// binary; no hash is computed), its re-run (every user skipped), then failed-login medians for
/// accounts with each imported scheme (the fixtures: bcrypt cost 12, Argon2id m=19 MiB t=2,
/// passlib PBKDF2 29,000 rounds, Django PBKDF2 20,000 rounds; and bcrypt at two below --cost,
/// an old app's lower cost) and for unknown emails. With --database-url, on that Postgres.
async fn import_scenario(args: &Args) {
    use std::io::Write;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = Server::unthrottled(args, &data_dir).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import");
    let tutorial: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/tutorial_users.json")).unwrap())
            .unwrap();
    let bcrypt_12 = tutorial[0]["hashed_password"].as_str().unwrap().to_owned();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let file = data_dir.path().join("users.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for n in 0..args.import_users {
            let line = serde_json::json!({"email": format!("import-{n}-{run_id}@example.com"),
                "full_name": format!("Imported {n}"), "password_hash": bcrypt_12, "external_id": format!("{run_id}-{n}")});
            writeln!(out, "{line}").unwrap();
        }
        out.flush().unwrap();
    }
    let import = |path: &std::path::Path| {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity"))
            .arg("import")
            .arg("--from-jsonl")
            .arg(path)
            .arg("--mapping")
            .arg(data_dir.path().join("mapping.csv"))
            .env_clear()
            .env("IDENTITY_DATABASE_URL", server.config.database_url.expose_secret())
            .env("IDENTITY_DATA_DIR", data_dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("the identity binary runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (started.elapsed(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    for pass in ["import", "re-run (all skipped)"] {
        let (took, summary) = import(&file);
        println!(
            "import {pass}: {} users from JSON Lines in {:.1} s ({:.0} users/s), backend {}: {}",
            args.import_users,
            took.as_secs_f64(),
            args.import_users as f64 / took.as_secs_f64(),
            if server.config.is_postgres() { "postgres" } else { "sqlite" },
            summary.lines().next().unwrap_or_default()
        );
    }
    // One account per scheme, never logged in to (a success would rehash it).
    let schemes = data_dir.path().join("schemes.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(format!("{fixtures}/other_schemes.jsonl"))
        .unwrap()
        .lines()
        .take(4)
        .map(|line| {
            line.replace("@example.com", &format!("-{run_id}@example.com"))
                .replace("\"external_id\": \"", &format!("\"external_id\": \"{run_id}-"))
        })
        .collect();
    lines.push(
        serde_json::json!({"email": format!("bcrypt-{run_id}@example.com"), "password_hash": bcrypt_12})
            .to_string(),
    );
    // bcrypt from an app that used a lower cost than this server's (topped up to one verify).
    let old_cost = args.cost.saturating_sub(2).max(4);
    let bcrypt_old = bcrypt::hash("a password of the old app", old_cost).expect("bcrypt hashes");
    lines.push(
        serde_json::json!({"email": format!("bcrypt-old-{run_id}@example.com"), "password_hash": bcrypt_old})
            .to_string(),
    );
    std::fs::write(&schemes, lines.join("\n")).unwrap();
    import(&schemes);
    let mut auth = AuthServiceClient::new(channels(server.addr, 1).await.remove(0));
    let mut time_failures = async |email: String| {
        let mut times = Vec::new();
        for _ in 0..args.upgrade_samples {
            times.push(failed_login_ms(&mut auth, email.clone()).await);
        }
        median(&mut times).unwrap_or(0.0)
    };
    let unknown = time_failures(format!("nobody-{run_id}@example.com")).await;
    let mut report = format!(
        "imported hashes, failed login medians over {} each at cost {}: unknown email {unknown:.1} ms",
        args.upgrade_samples, args.cost
    );
    for (who, scheme) in [
        ("erin", "argon2id".to_owned()),
        ("grace", "pbkdf2-sha256".to_owned()),
        ("heidi", "django-pbkdf2-sha256".to_owned()),
        ("bcrypt", "bcrypt-12".to_owned()),
        ("bcrypt-old", format!("bcrypt-{old_cost}")),
    ] {
        let took = time_failures(format!("{who}-{run_id}@example.com")).await;
        report += &format!(", {scheme} {took:.1} ms ({:.2}x)", took / unknown.max(1e-9));
    }
    println!("{report}");
}

/// How long a login of `email` with a wrong password takes, in milliseconds.
async fn failed_login_ms(auth: &mut AuthServiceClient<Channel>, email: String) -> f64 {
    let started = Instant::now();
    let status = auth
        .login(LoginRequest { email, password: "not-the-password-at-all".into() })
        .await
        .expect_err("a wrong password fails");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    started.elapsed().as_secs_f64() * 1000.0
}
