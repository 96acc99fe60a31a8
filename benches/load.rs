//! Load tool: runs the real server in-process (SQLite in a temp dir, or `--database-url`) and
//! drives it with tonic clients, printing requests/s and latency percentiles per scenario.
//! A bare tonic service answering ValidateToken with a canned response ("echo") runs in the same
//! process as the ceiling of what tonic serves on this machine.
//!
//!     cargo bench --bench load -- --help
//!     cargo bench --bench load                                  # every scenario
//!     cargo bench --bench load -- --scenarios echo,validate-repeated --duration 10s
//!     cargo bench --bench load -- --scenarios inprocess,validate-new --env IDENTITY_SIGNING_ALG=RS256

use std::{sync::Arc, time::Duration};

use clap::Parser;

#[path = "load/accounts.rs"]
mod accounts;
#[path = "load/events.rs"]
mod events;
#[path = "load/hostile.rs"]
mod hostile;
#[path = "load/lean.rs"]
mod lean;
#[path = "load/list_users.rs"]
mod list_users;
#[path = "load/mail.rs"]
mod mail;
#[path = "load/otlp.rs"]
mod otlp;
#[path = "load/passwords.rs"]
mod passwords;
#[path = "load/purge.rs"]
mod purge;
#[path = "load/runner.rs"]
mod runner;
#[path = "load/server.rs"]
mod server;
#[path = "load/sweep.rs"]
mod sweep;
#[path = "load/tokens.rs"]
mod tokens;

use passwords::BcryptLimit;
use runner::print_header;
use server::{Server, channels};

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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let scenarios: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    let wants = |name: &str| scenarios.contains(&name);
    if let Some(url) = args.database_url.as_deref().filter(|url| url.starts_with("postgres")) {
        server::create_database_if_missing(url).await;
    }
    if let Some(sweep) = args.sweep.clone() {
        return sweep::sweep(&args, &sweep).await;
    }
    let server = Server::start(&args, args.cost).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    server.print_settings(&args, cores);
    if wants("inprocess") {
        tokens::in_process(&server.identity);
    }
    let channels = Arc::new(channels(server.addr, args.connections).await);
    print_header();
    let rounds = tokens::alternating_rounds(&args, wants, &server.identity, &channels).await;
    if wants("validate-new") {
        tokens::validate_new(&args).await;
    }
    if wants("jwks") {
        tokens::jwks(&args, &channels).await;
    }
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
        tokens::refresh(&args, &channels, &users).await;
    }
    if wants("reset") {
        mail::reset_timing(&args).await;
    }
    if wants("delivery") {
        mail::delivery(&args).await;
    }
    let bcrypt = BcryptLimit::measure(server.config.bcrypt_cost, cores);
    let signup_rps = if wants("signup") { Some(passwords::signup(&args, &channels).await) } else { None };
    let login_rps =
        if wants("login") { Some(passwords::login(&args, &channels, &users).await) } else { None };
    if wants("health-under-login") {
        hostile::health_under_login(&args, &server.identity, &channels, &users).await;
    }
    if wants("purge") {
        purge::purge_scenario(&args, &server, Arc::clone(&channels), Arc::clone(&users)).await;
    }
    if wants("retry-storm") {
        hostile::retry_storm(&args, &channels, &users, bcrypt.logins_per_second).await;
    }
    if wants("fair-flood") {
        hostile::fair_flood(&args, server.addr, &users).await;
    }
    if wants("cost-upgrade") {
        passwords::cost_upgrade(&args).await;
    }
    if wants("import") {
        passwords::import_scenario(&args).await;
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
    bcrypt.print();
    rounds.print_ratios();
    bcrypt.print_ratios(login_rps, signup_rps);
}
