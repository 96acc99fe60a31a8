//! `events`: the user-event stream's throughput. Two server replicas on one Postgres
//! (`--database-url`) take admin writes (SetRoles and UpdateUser, each one transaction with its
//! event, no hashing) from `--event-writers` clients split between them, while
//! `--event-subscribers` WatchUserEvents streams (half on each replica) read everything. Prints
//! events/s written and delivered, the p50/p99 from each change to its delivery, and how often
//! writers were found waiting for a row lock (the commit sequence's single counter row is the
//! one every write takes), to tell whether that counter is the bottleneck.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use identity::{
    domain::{Permission, ServiceKeyName},
    proto::{
        SetRolesRequest, SignupRequest, UpdateUserRequest, User, WatchUserEventsRequest,
        admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
        event_service_client::EventServiceClient,
    },
};
use prost_types::FieldMask;

use super::{
    Args,
    list_users::bearer,
    runner::histogram,
    server::{PASSWORD, Server, channels},
};

pub(super) async fn events(args: &Args) {
    let Some(url) = args.database_url.as_deref().filter(|url| url.starts_with("postgres")) else {
        println!("events: skipped, it needs --database-url postgres://...");
        return;
    };
    let streams = (args.event_subscribers + 16).to_string();
    let env = [("IDENTITY_MAX_STREAMS_PER_CALLER", streams.as_str())];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let a = Server::start_in(args, 4, &dir_a, &env).await;
    let b = Server::start_in(args, 4, &dir_b, &env).await;
    let keys = a.identity.service_keys();
    let key = |permission: Permission| {
        let name =
            format!("bench-{}-{}", permission.as_str().replace('_', "-"), uuid::Uuid::new_v4().simple());
        let keys = &keys;
        async move {
            let name = ServiceKeyName::parse("name", &name).unwrap();
            let key = keys.create(&name, &[permission].into_iter().collect()).await.unwrap().unwrap();
            key.expose().to_owned()
        }
    };
    let (admin_key, watch_key) = (key(Permission::Admin).await, key(Permission::WatchEvents).await);

    // The accounts the writers change: one per writer, signed up at cost 4.
    let mut auth = AuthServiceClient::new(channels(a.addr, 1).await.remove(0));
    let mut accounts = Vec::new();
    for n in 0..args.event_writers {
        let email = format!("events-{n}-{}@example.com", uuid::Uuid::new_v4().simple());
        let request = SignupRequest { email, password: PASSWORD.into(), full_name: "Event Writer".into() };
        accounts.push(auth.signup(request).await.expect("signup").into_inner().user.expect("a user"));
    }
    let start = {
        let pool =
            sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await.expect("connect");
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM user_events")
            .fetch_one(&pool)
            .await
            .expect("the stream's head");
        pool.close().await;
        u64::try_from(head).unwrap_or(0)
    };

    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut subscribers = tokio::task::JoinSet::new();
    for n in 0..args.event_subscribers {
        let addr = if n % 2 == 0 { a.addr } else { b.addr };
        let mut client = EventServiceClient::new(channels(addr, 1).await.remove(0));
        let request = bearer(WatchUserEventsRequest { after_cursor: start }, &watch_key);
        let mut stream = client.watch_user_events(request).await.expect("subscribe").into_inner();
        let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
        subscribers.spawn(async move {
            let mut latency = histogram();
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(Some(message))) =
                    tokio::time::timeout(Duration::from_secs(1), stream.message()).await
                else {
                    continue;
                };
                let now = Utc::now();
                for event in &message.events {
                    if let Some(at) = &event.occurred_at {
                        let at = chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32).unwrap_or(now);
                        latency.saturating_record((now - at).num_microseconds().unwrap_or(0).max(0) as u64);
                    }
                }
                received.fetch_add(message.events.len() as u64, Ordering::Relaxed);
            }
            latency
        });
    }

    let waiting = tokio::spawn(lock_waits(url.to_owned(), Arc::clone(&stop)));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for (n, account) in accounts.into_iter().enumerate() {
        let addr = if n % 2 == 0 { a.addr } else { b.addr };
        let client = AdminServiceClient::new(channels(addr, 1).await.remove(0));
        let (key, written, duration) = (admin_key.clone(), Arc::clone(&written), args.duration);
        writers.spawn(write_changes(client, key, account, written, duration));
    }
    while writers.join_next().await.is_some() {}
    let writing = started.elapsed();
    let written = written.load(Ordering::Relaxed);
    // Let the subscribers drain what is committed, then stop them.
    let expected = written * args.event_subscribers as u64;
    let drain = Instant::now();
    while received.load(Ordering::Relaxed) < expected && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency = histogram();
    while let Some(done) = subscribers.join_next().await {
        latency.add(done.expect("subscriber")).expect("same bounds");
    }
    let (samples, waiting_samples) = waiting.await.expect("lock sampler");
    let received = received.load(Ordering::Relaxed);
    println!(
        "events: {} writers on 2 replicas, {} subscribers: {written} changes in {:.1} s = {:.0} events/s written; \
         {received} deliveries = {:.0} events/s delivered ({:.1}% of expected)",
        args.event_writers,
        args.event_subscribers,
        writing.as_secs_f64(),
        written as f64 / writing.as_secs_f64(),
        received as f64 / writing.as_secs_f64(),
        100.0 * received as f64 / expected.max(1) as f64
    );
    println!(
        "events: change to delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; writers waiting on a row lock: \
         {:.2} on average over {samples} samples (of {} writers)",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
        waiting_samples as f64 / samples.max(1) as f64,
        args.event_writers
    );
}

/// Alternates SetRoles and UpdateUser on `account` for `duration`: one event each.
async fn write_changes(
    client: AdminServiceClient<tonic::transport::Channel>,
    key: String,
    account: User,
    written: Arc<AtomicU64>,
    duration: Duration,
) {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        let outcome = if n.is_multiple_of(2) {
            let roles = vec![format!("bench.r{}", n % 7)];
            let request = SetRolesRequest { user_id: account.id.clone(), roles };
            client.clone().set_roles(bearer(request, &key)).await.map(drop)
        } else {
            let user = User { full_name: format!("Event Writer {n}"), ..account.clone() };
            let mask = FieldMask { paths: vec!["full_name".into()] };
            let request = UpdateUserRequest { user: Some(user), update_mask: Some(mask) };
            client.clone().update_user(bearer(request, &key)).await.map(drop)
        };
        if outcome.is_ok() {
            written.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
}

/// Samples every 10 ms how many backends wait for a lock held by another transaction (the
/// commit sequence's row, or a user's): (samples, sum of waiters).
async fn lock_waits(url: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.expect("connect");
    let (mut samples, mut waiting) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        const SQL: &str = "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'";
        if let Ok(count) = sqlx::query_scalar::<_, i64>(SQL).fetch_one(&pool).await {
            samples += 1;
            waiting += u64::try_from(count).unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.close().await;
    (samples, waiting)
}
