//! Health that never lies: readiness comes on every start, a background task that fails takes
//! the entries that depend on it to NOT_SERVING, is restarted and counted, and enforcement
//! resumes once it is back.

use std::time::Duration;

use identity::{
    domain::SessionId,
    proto::LogoutRequest,
    supervisor::{Fault, TaskName},
    testing::TestServer,
};
use tokio::task::JoinSet;
use tonic::Streaming;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};

use crate::{
    helpers::{Backend, TestApp, TestDatabase, eventually},
    metrics::{sample, scrape},
    on_both_backends,
};

on_both_backends!(
    readiness_comes_when_revocations_were_synchronised_before_the_watcher_first_looked,
    a_failed_revocation_sync_is_not_serving_until_it_has_caught_up_again,
    a_failed_health_watcher_is_not_serving_until_it_is_back,
    a_failed_purge_is_counted_and_purging_resumes,
);

/// How long a test waits for a health change it expects before it fails.
const HEALTH_WITHIN: Duration = Duration::from_secs(30);

async fn health_updates(app: &TestApp) -> Streaming<HealthCheckResponse> {
    HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest { service: "identity.v1.AuthService".into() })
        .await
        .unwrap()
        .into_inner()
}

/// Reads the Watch stream until it reports `status`.
async fn until(updates: &mut Streaming<HealthCheckResponse>, status: ServingStatus) {
    let reached = tokio::time::timeout(HEALTH_WITHIN, async {
        while let Some(update) = updates.message().await.unwrap() {
            if update.status() == status {
                return;
            }
        }
        panic!("the health stream ended before {status:?}");
    })
    .await;
    assert!(reached.is_ok(), "health did not say {status:?} within {HEALTH_WITHIN:?}");
}

async fn api_status(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest { service: "identity.v1.TokenService".into() })
        .await
        .unwrap()
        .into_inner()
        .status()
}

fn session_of(access_token: &str) -> SessionId {
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(access_token).unwrap().claims["sid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn logout(app: &TestApp, refresh_token: &str) {
    app.auth().logout(LogoutRequest { refresh_token: refresh_token.into() }).await.unwrap();
}

// --- readiness on every start -------------------------------------------------------------

/// `TestServer::start` returns only once the Watch stream says SERVING, and fails after 30 s.
async fn start_and_stop(db: TestDatabase) {
    let config = TestApp::config(&db, &[]);
    let mut server = TestServer::start(&config).await.expect("readiness comes");
    server.stop().await.unwrap();
}

fn sqlite_database() -> TestDatabase {
    let data_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data_dir.path().join("identity.db").display());
    TestDatabase::new(url, data_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_comes_on_every_start_on_sqlite() {
    for _ in 0..30 {
        start_and_stop(sqlite_database()).await;
    }
    let mut starts = JoinSet::new();
    for _ in 0..30 {
        starts.spawn(start_and_stop(sqlite_database()));
    }
    while let Some(started) = starts.join_next().await {
        started.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_comes_on_every_start_on_postgres() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: Postgres test skipped");
        return;
    };
    let replica = || app.db.replica();
    for _ in 0..4 {
        start_and_stop(replica()).await;
    }
    let mut starts = JoinSet::new();
    for _ in 0..4 {
        starts.spawn(start_and_stop(replica()));
    }
    while let Some(started) = starts.join_next().await {
        started.unwrap();
    }
}

/// The start-up race, made deterministic: the revocation set becomes synchronised while no
/// watcher runs, and the watcher that starts afterwards must still publish SERVING (one that
/// compared with its own first look instead of with the published state never did).
async fn readiness_comes_when_revocations_were_synchronised_before_the_watcher_first_looked(app: TestApp) {
    let mut health = health_updates(&app).await;
    until(&mut health, ServingStatus::Serving).await;
    app.faults().fail(TaskName::HealthWatcher, Fault::Panic).await;
    until(&mut health, ServingStatus::NotServing).await;
    app.faults().fail(TaskName::RevocationSync, Fault::Panic).await;
    app.faults().restart(TaskName::RevocationSync).await;
    let identity = app.identity();
    let mut synced = identity.revocations().watch_synced();
    synced.wait_for(|synced| *synced).await.unwrap();
    app.faults().restart(TaskName::HealthWatcher).await;
    until(&mut health, ServingStatus::Serving).await;
}

// --- supervision --------------------------------------------------------------------------

async fn a_failed_revocation_sync_is_not_serving_until_it_has_caught_up_again(app: TestApp) {
    let peer = match app.store.backend() {
        "postgres" => Some(app.spawn_peer().await),
        _ => None,
    };
    for fault in [Fault::Panic, Fault::Return] {
        let mut health = health_updates(&app).await;
        until(&mut health, ServingStatus::Serving).await;
        let (_, login) = app.signed_in_user().await;
        let during = login.tokens.unwrap();

        app.faults().fail(TaskName::RevocationSync, fault).await;
        until(&mut health, ServingStatus::NotServing).await;
        // Revoked by another process while this replica cannot hear of it.
        app.store
            .revoke_session(
                session_of(&during.access_token),
                identity::domain::RevocationReason::Operator,
                app.clock.now(),
            )
            .await
            .unwrap();
        app.faults().restart(TaskName::RevocationSync).await;
        until(&mut health, ServingStatus::Serving).await;
        assert!(!app.is_active(&during.access_token).await, "SERVING again, yet missing a revocation");

        // And it follows revocations again: its own, and (on Postgres) another replica's.
        let (_, login) = app.signed_in_user().await;
        let after = login.tokens.unwrap();
        logout(&app, &after.refresh_token).await;
        assert!(!app.is_active(&after.access_token).await);
        if let Some(peer) = &peer {
            let (_, login) = peer.signed_in_user().await;
            let elsewhere = login.tokens.unwrap();
            assert!(app.is_active(&elsewhere.access_token).await);
            logout(peer, &elsewhere.refresh_token).await;
            let seen = eventually(Duration::from_secs(10), || async {
                !app.is_active(&elsewhere.access_token).await
            })
            .await;
            assert!(seen.is_some(), "a logout on another replica is not enforced after the restart");
        }
    }
}

async fn a_failed_health_watcher_is_not_serving_until_it_is_back(app: TestApp) {
    for fault in [Fault::Panic, Fault::Return] {
        let mut health = health_updates(&app).await;
        until(&mut health, ServingStatus::Serving).await;
        app.faults().fail(TaskName::HealthWatcher, fault).await;
        until(&mut health, ServingStatus::NotServing).await;
        app.faults().restart(TaskName::HealthWatcher).await;
        until(&mut health, ServingStatus::Serving).await;
        let (_, login) = app.signed_in_user().await;
        let tokens = login.tokens.unwrap();
        logout(&app, &tokens.refresh_token).await;
        assert!(!app.is_active(&tokens.access_token).await);
    }
}

async fn a_failed_purge_is_counted_and_purging_resumes(app: TestApp) {
    let app = app
        .restart_with(&[
            ("IDENTITY_SESSION_PURGE_INTERVAL", "100ms"),
            ("IDENTITY_METRICS_ADDR", "127.0.0.1:0"),
        ])
        .await;
    let restarts = |text: &str| sample(text, "identity_task_restarts_total", &[("task", "purge")]);
    for fault in [Fault::Panic, Fault::Return] {
        let before = restarts(&scrape(&app).await);
        app.faults().fail(TaskName::Purge, fault).await;
        assert!(restarts(&scrape(&app).await) >= before + 1.0, "the failure is counted");
        assert_eq!(
            api_status(&app).await,
            ServingStatus::Serving,
            "nothing depends on the purge for readiness"
        );
        app.faults().restart(TaskName::Purge).await;
    }
    // The restarted task purges.
    let (user, login) = app.signed_in_user().await;
    logout(&app, &login.tokens.unwrap().refresh_token).await;
    app.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let user_id: identity::domain::UserId = user.id.parse().unwrap();
    let purged = eventually(Duration::from_secs(10), || async {
        app.store.session_count(user_id).await.unwrap() == 0
    })
    .await;
    assert!(purged.is_some(), "the restarted purge did not purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_failure_is_counted_under_its_name() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &[("IDENTITY_METRICS_ADDR", "127.0.0.1:0")]).await.unwrap();
    for task in TaskName::ALL {
        let series = [("task", task.as_str())];
        let before = sample(&scrape(&app).await, "identity_task_restarts_total", &series);
        app.faults().fail(task, Fault::Panic).await;
        let after = sample(&scrape(&app).await, "identity_task_restarts_total", &series);
        assert!(after >= before + 1.0, "{task:?}: {before} -> {after}");
        app.faults().restart(task).await;
    }
    let mut health = health_updates(&app).await;
    until(&mut health, ServingStatus::Serving).await;
}
