//! `purge`: whether purging a backlog of expired sessions, in batches, leaves the latency of the
//! logins running meanwhile alone.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::transport::Channel;

use super::{
    Args,
    passwords::login_load,
    runner::{Backoff, Report, run, run_until},
    server::Server,
};

/// Logins' latency without a purge, then while the server purges `--purge-rows` expired
/// sessions (seeded in one statement beforehand). Logins run from as many clients as there
/// are hash threads, so that their latency is service time, not queueing.
pub(super) async fn purge_scenario(
    args: &Args,
    server: &Server,
    channels: Arc<Vec<Channel>>,
    users: Arc<Vec<String>>,
) {
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
