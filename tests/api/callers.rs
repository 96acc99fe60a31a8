//! Who may call the service-facing RPCs (WatchRevocations today): service keys, their
//! permissions and revocation, the per-caller stream cap. Client certificates are in
//! `transport.rs`, the `service-key` commands in `cli.rs`.

use std::time::Duration;

use identity::{
    clock::Clock,
    domain::{Permission, ServiceKeyName},
    proto::{WatchRevocationsRequest, WatchRevocationsResponse},
    service::ServiceKeyAdmin,
};
use tonic::{Code, Status, Streaming};

use crate::{
    helpers::{TestApp, assert_code, bearer, with_authorization},
    on_both_backends,
};

on_both_backends!(
    watching_revocations_without_a_credential_is_unauthenticated,
    an_unknown_key_or_a_person_s_token_is_not_a_watcher,
    a_key_without_the_permission_is_permission_denied,
    a_key_with_the_permission_streams,
    revoking_a_key_refuses_new_calls_and_ends_its_open_streams,
    each_caller_may_hold_only_so_many_streams,
);

async fn watch(app: &TestApp, key: &str) -> Result<Streaming<WatchRevocationsResponse>, Status> {
    app.tokens()
        .watch_revocations(bearer(WatchRevocationsRequest { since: 0 }, key))
        .await
        .map(|r| r.into_inner())
}

async fn caught_up(stream: &mut Streaming<WatchRevocationsResponse>) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a message within 10 s")
            .expect("the stream stays open")
            .expect("a catch-up message");
        if message.caught_up {
            return;
        }
    }
}

async fn watching_revocations_without_a_credential_is_unauthenticated(app: TestApp) {
    let status = assert_code(
        app.tokens().watch_revocations(WatchRevocationsRequest { since: 0 }).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("service key"), "{}", status.message());
    let malformed = with_authorization(WatchRevocationsRequest { since: 0 }, "Basic d2F0Y2hlcjpwdw==");
    assert_code(app.tokens().watch_revocations(malformed).await, Code::Unauthenticated);
}

async fn an_unknown_key_or_a_person_s_token_is_not_a_watcher(app: TestApp) {
    let made_up = identity::domain::ServiceKey::generate();
    let status = assert_code(watch(&app, made_up.expose()).await, Code::Unauthenticated);
    assert_eq!(status.message(), "unknown or revoked service key");
    assert_code(watch(&app, "idk_").await, Code::Unauthenticated);
    assert_code(watch(&app, "not-a-token").await, Code::Unauthenticated);
    // A person is known by their token, but holds none of the service permissions (until roles).
    let (_, login) = app.signed_in_user().await;
    assert_code(watch(&app, &login.tokens.unwrap().access_token).await, Code::PermissionDenied);
}

async fn a_key_without_the_permission_is_permission_denied(app: TestApp) {
    let key = app.service_key("billing", &[Permission::Admin, Permission::WatchEvents]).await;
    let status = assert_code(watch(&app, &key).await, Code::PermissionDenied);
    assert!(!status.message().contains(&key[4..]));
}

async fn a_key_with_the_permission_streams(app: TestApp) {
    let key = app.service_key("gateway", &[Permission::WatchRevocations]).await;
    let mut stream = watch(&app, &key).await.expect("the key is let in");
    caught_up(&mut stream).await;
}

async fn revoking_a_key_refuses_new_calls_and_ends_its_open_streams(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_REVOCATION_HEARTBEAT", "200ms")]).await;
    let key = app.service_key("gateway", &[Permission::WatchRevocations]).await;
    let other = app.service_key("orders", &[Permission::WatchRevocations]).await;
    let mut stream = watch(&app, &key).await.unwrap();
    let mut unaffected = watch(&app, &other).await.unwrap();
    caught_up(&mut stream).await;
    caught_up(&mut unaffected).await;

    let admin = ServiceKeyAdmin::new(app.store.clone(), Clock::system());
    assert!(admin.revoke(&ServiceKeyName::parse("name", "gateway").unwrap()).await.unwrap());
    assert!(
        !admin.revoke(&ServiceKeyName::parse("name", "gateway").unwrap()).await.unwrap(),
        "already revoked"
    );

    assert_code(watch(&app, &key).await, Code::Unauthenticated);
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.message()).await {
            Ok(Ok(Some(_heartbeat))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without saying why"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the revoked key's stream was still open after 15 s"),
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(ended.message(), "the service key was revoked");
    // Another key's stream goes on: it still gets heartbeats.
    let heartbeat = tokio::time::timeout(Duration::from_secs(10), unaffected.message()).await;
    assert!(matches!(heartbeat, Ok(Ok(Some(_)))), "{heartbeat:?}");
}

async fn each_caller_may_hold_only_so_many_streams(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_MAX_STREAMS_PER_CALLER", "2")]).await;
    let key = app.service_key("gateway", &[Permission::WatchRevocations]).await;
    let other = app.service_key("orders", &[Permission::WatchRevocations]).await;
    let first = watch(&app, &key).await.unwrap();
    let _second = watch(&app, &key).await.unwrap();
    let status = assert_code(watch(&app, &key).await, Code::ResourceExhausted);
    assert!(status.message().contains("open streams"), "{}", status.message());
    let _others = watch(&app, &other).await.expect("another caller has slots of its own");

    // A stream the caller closes gives its slot back.
    drop(first);
    // Polled: the server learns of the close when the connection tells it.
    let started = tokio::time::Instant::now();
    let reopened = loop {
        match watch(&app, &key).await {
            Ok(stream) => break stream,
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(status) => panic!("the closed stream's slot was not freed: {status:?}"),
        }
    };
    drop(reopened);
}
