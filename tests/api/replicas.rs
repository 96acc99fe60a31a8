//! Several servers on one Postgres database: what one replica revokes, every replica enforces.

use std::time::Duration;

use identity::{domain::SessionId, proto::LogoutRequest};

use crate::helpers::{Backend, TestApp, eventually};

async fn postgres_app() -> Option<TestApp> {
    let app = TestApp::spawn(Backend::Postgres).await;
    if app.is_none() {
        eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: Postgres test skipped");
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_is_enforced_by_another_within_a_second() {
    let Some(a) = postgres_app().await else { return };
    let b = a.spawn_peer().await;
    let (_, login) = a.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    assert!(b.is_active(&tokens.access_token).await);

    a.auth().logout(LogoutRequest { refresh_token: tokens.refresh_token.clone() }).await.unwrap();
    let seen =
        eventually(Duration::from_secs(1), || async { !b.is_active(&tokens.access_token).await }).await;
    let seen = seen.expect("replica B still accepts the token a second after the logout on A");
    eprintln!("logout on A seen by B after {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resynchronises_after_its_listener_connection_is_killed() {
    let Some(a) = postgres_app().await else { return };
    let b = a.spawn_peer().await;
    let (_, login) = a.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    assert!(b.is_active(&token).await);

    // A revocation B is never told about: written straight to the table, no NOTIFY. Only a
    // reload from the sessions table can reveal it.
    let session_id: SessionId =
        jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token).unwrap().claims["sid"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    a.store.revoke_session_unannounced(session_id, a.clock.now()).await.unwrap();
    assert!(b.is_active(&token).await, "B has no way to know yet");

    let killed = a.store.terminate_revocation_listeners().await.unwrap();
    assert_eq!(killed, [true, true], "one listener per replica");

    let resynced = eventually(Duration::from_secs(15), || async { !b.is_active(&token).await }).await;
    assert!(resynced.is_some(), "B did not reload revocations after losing its listener");
    // And B follows announcements again on its new connection.
    let (_, second) = a.signed_in_user().await;
    let second = second.tokens.unwrap();
    a.auth().logout(LogoutRequest { refresh_token: second.refresh_token }).await.unwrap();
    let seen =
        eventually(Duration::from_secs(1), || async { !b.is_active(&second.access_token).await }).await;
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_hears_revocations_made_on_another() {
    let Some(a) = postgres_app().await else { return };
    let b = a.spawn_peer().await;
    let mut stream = b.watch_revocations(0).await;
    while !stream.message().await.unwrap().unwrap().caught_up {}
    let (_, login) = a.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    a.auth().logout(LogoutRequest { refresh_token: tokens.refresh_token }).await.unwrap();
    let message = loop {
        let message =
            tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
        if !message.revoked.is_empty() {
            break message;
        }
    };
    assert!(message.cursor >= 1);
    assert!(!b.is_active(&tokens.access_token).await);
}

/// A NOTIFY anyone who can connect could send, naming `session` with `revoked_at_micros`.
fn forged_payload(session: SessionId, revoked_at_micros: i64) -> String {
    format!("999999;{revoked_at_micros};{session}")
}

fn session_of(access_token: &str) -> SessionId {
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(access_token).unwrap().claims["sid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_notification_naming_a_live_session_does_not_revoke_it() {
    let Some(a) = postgres_app().await else { return };
    let b = a.spawn_peer().await;
    let (_, login) = a.signed_in_user().await;
    let victim = login.tokens.unwrap();
    let forged = forged_payload(session_of(&victim.access_token), a.clock.now().timestamp_micros());
    a.store.notify_revocation_channel(&forged).await.unwrap();

    // A real logout announced after the forgery: once a replica has acted on it, it has had the
    // forged notification too (one channel, delivered in order).
    let (_, login) = a.signed_in_user().await;
    let witness = login.tokens.unwrap();
    a.auth().logout(LogoutRequest { refresh_token: witness.refresh_token }).await.unwrap();
    for replica in [&a, &b] {
        let seen =
            eventually(Duration::from_secs(10), || async { !replica.is_active(&witness.access_token).await })
                .await;
        assert!(seen.is_some(), "the real logout was not enforced");
        assert!(replica.is_active(&victim.access_token).await, "a forged NOTIFY revoked a live session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_from_the_end_of_time_kills_nothing_and_later_logouts_still_propagate() {
    let Some(a) = postgres_app().await else { return };
    let b = a.spawn_peer().await;
    let (_, login) = a.signed_in_user().await;
    let victim = login.tokens.unwrap();
    let end_of_time = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros();
    for payload in [
        forged_payload(session_of(&victim.access_token), end_of_time),
        format!("18446744073709551615;{end_of_time};not-a-session"),
        "garbage".to_owned(),
    ] {
        a.store.notify_revocation_channel(&payload).await.unwrap();
    }

    // A logout on B is still enforced on A, and the other way round.
    for (from, to) in [(&b, &a), (&a, &b)] {
        let (_, login) = from.signed_in_user().await;
        let tokens = login.tokens.unwrap();
        assert!(to.is_active(&tokens.access_token).await);
        from.auth().logout(LogoutRequest { refresh_token: tokens.refresh_token }).await.unwrap();
        let seen =
            eventually(Duration::from_secs(10), || async { !to.is_active(&tokens.access_token).await }).await;
        assert!(seen.is_some(), "a logout stopped propagating after a malformed notification");
    }
    assert!(a.is_active(&victim.access_token).await && b.is_active(&victim.access_token).await);
}
