//! Hostile callers: a login flood, a retry storm, many attackers at once, and what the server
//! still gives the callers that behave (health probes, ValidateToken, a legitimate login)
//! meanwhile, the figures its shedding and fairness are judged by.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use identity::{
    proto::{
        LoginRequest, ValidateTokenRequest, auth_service_client::AuthServiceClient,
        token_service_client::TokenServiceClient,
    },
    service::Identity,
};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{
    Args,
    passwords::login_load,
    runner::{Backoff, BoxedCall, Report, histogram, run, run_with},
    server::{PASSWORD, channels},
    tokens::mint_tokens,
};

/// --flood logins at once, each shed one retried after 10 ms, while one client checks health
/// and another validates a token: what the flood leaves callers that need no hash.
pub(super) async fn health_under_login(
    args: &Args,
    identity: &Identity,
    channels: &Arc<Vec<Channel>>,
    users: &Arc<Vec<String>>,
) {
    let (flood, probe_time) =
        login_pressure(args, "(login flood)", args.flood, Backoff::Hostile, channels, users).await;
    let health_channel = channels[0].clone();
    let health = run("  health Check (probe)", 1, probe_time, move |_, _| {
        let mut client = HealthClient::new(health_channel.clone());
        async move { client.check(HealthCheckRequest { service: String::new() }).await.map(drop) }
    });
    let token = Arc::new(mint_tokens(identity, 1).remove(0));
    let validate_channel = channels[1 % channels.len()].clone();
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

/// 32 (`--storm`) closed-loop clients log in and resend at once whenever they are shed, while a
/// probe checks health: goodput against the bcrypt limit, and what the rejections cost.
pub(super) async fn retry_storm(
    args: &Args,
    channels: &Arc<Vec<Channel>>,
    users: &Arc<Vec<String>>,
    bcrypt_limit: f64,
) {
    let (storm, probe_time) =
        login_pressure(args, "(retry storm)", args.storm, Backoff::Immediate, channels, users).await;
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
pub(super) async fn fair_flood(args: &Args, addr: SocketAddr, users: &Arc<Vec<String>>) {
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

/// Starts `clients` logging in for --duration, a shed one waiting as `backoff` says, and lets
/// them fill the hash pool for half a second; returns them and how long a probe may run beside.
async fn login_pressure(
    args: &Args,
    name: &'static str,
    clients: usize,
    backoff: Backoff,
    channels: &Arc<Vec<Channel>>,
    users: &Arc<Vec<String>>,
) -> (tokio::task::JoinHandle<Report>, Duration) {
    let logins = login_load(Arc::clone(channels), Arc::clone(users));
    let pressure = tokio::spawn(run_with(name, clients, args.duration, backoff, logins));
    tokio::time::sleep(Duration::from_millis(500)).await;
    (pressure, args.duration.saturating_sub(Duration::from_secs(1)))
}
