//! Password scenarios: Signup and Login against the bcrypt limit (what the cores can verify), and
//! what a failed login costs per stored hash (an upgraded cost, imported schemes): it must not
//! tell a caller whether the account exists.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use identity::proto::{LoginRequest, SignupRequest, auth_service_client::AuthServiceClient};
use secrecy::ExposeSecret;
use tonic::{Code, transport::Channel};

use super::{
    Args,
    runner::{BoxedCall, median, run},
    server::{PASSWORD, Server, channels},
};

/// What the cores can verify: one bcrypt verify at the server's cost, timed on one core, times the
/// cores. Login and Signup are measured against it.
pub(super) struct BcryptLimit {
    cost: u32,
    cores: usize,
    verify_time: Duration,
    pub(super) logins_per_second: f64,
}

impl BcryptLimit {
    pub(super) fn measure(cost: u32, cores: usize) -> Self {
        let verify_time = single_core_verify_time(cost);
        Self { cost, cores, verify_time, logins_per_second: cores as f64 / verify_time.as_secs_f64() }
    }

    pub(super) fn print(&self) {
        println!(
            "bcrypt: one verify at cost {} takes {:.1} ms on one core; limit on {} cores: {:.2} logins/s",
            self.cost,
            self.verify_time.as_secs_f64() * 1000.0,
            self.cores,
            self.logins_per_second
        );
    }

    /// Login's and Signup's requests/s (those that ran) over the limit.
    pub(super) fn print_ratios(&self, login_rps: Option<f64>, signup_rps: Option<f64>) {
        if let Some(login) = login_rps {
            println!("ratio Login / bcrypt limit: {:.2}", login / self.logins_per_second);
        }
        if let Some(signup) = signup_rps {
            println!("ratio Signup / bcrypt limit: {:.2}", signup / self.logins_per_second);
        }
    }
}

/// Signup at --login-concurrency, a new user each call; returns requests/s.
pub(super) async fn signup(args: &Args, channels: &Arc<Vec<Channel>>) -> f64 {
    let report =
        run("Signup", args.login_concurrency, args.duration, signup_load(Arc::clone(channels))).await;
    report.print();
    report.rps()
}

/// Login of `users` at --login-concurrency; returns requests/s.
pub(super) async fn login(args: &Args, channels: &Arc<Vec<Channel>>, users: &Arc<Vec<String>>) -> f64 {
    let report = run(
        "Login",
        args.login_concurrency,
        args.duration,
        login_load(Arc::clone(channels), Arc::clone(users)),
    )
    .await;
    report.print();
    report.rps()
}

/// A login load: each call logs one of `users` in.
pub(super) fn login_load(
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
pub(super) fn signup_load(channels: Arc<Vec<Channel>>) -> impl Fn(usize, u64) -> BoxedCall + Send + Sync {
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

/// Users made at cost 10, the server restarted at `--cost` on the same database: the wall-clock
/// medians of a failed login for an existing account and for an unknown email.
pub(super) async fn cost_upgrade(args: &Args) {
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

/// `identity import` of `--import-users` users from JSON Lines into a fresh database (the real
/// binary; no hash is computed), its re-run (every user skipped), then failed-login medians for
/// accounts with each imported scheme (the fixtures: bcrypt cost 12, Argon2id m=19 MiB t=2,
/// passlib PBKDF2 29,000 rounds, Django PBKDF2 20,000 rounds; and bcrypt at two below --cost,
/// an old app's lower cost) and for unknown emails. With --database-url, on that Postgres.
pub(super) async fn import_scenario(args: &Args) {
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
