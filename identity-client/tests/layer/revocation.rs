//! Revocations pushed by WatchRevocations reach the layer without a call per request.

use std::time::Duration;

use crate::helpers::{IdentityServer, ProtectedService, assert_refused, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_logout_the_token_is_refused_within_a_second() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let login = identity.signed_in_user().await;
    let tokens = login.tokens.expect("tokens");
    let other = identity.signed_in_user().await.tokens.expect("tokens").access_token;
    // Verified once, so the logout has to beat the cache too.
    assert!(service.as_bearer(&tokens.access_token).await.is_ok());

    identity.logout(&tokens.refresh_token).await;
    let took = eventually(Duration::from_secs(1), || async {
        service.as_bearer(&tokens.access_token).await.is_err()
    })
    .await
    .expect("the logged-out token is refused within a second");
    eprintln!("logout enforced by the layer after {took:?}");
    assert_refused(service.as_bearer(&tokens.access_token).await, "session revoked");
    assert!(service.as_bearer(&other).await.is_ok(), "another session is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_after_the_logout_refuses_the_token_from_the_start() {
    let identity = IdentityServer::start().await;
    let tokens = identity.signed_in_user().await.tokens.expect("tokens");
    identity.logout(&tokens.refresh_token).await;

    // The catch-up at the start of the stream carries the revocation.
    let service = ProtectedService::start_synchronised(&identity).await;
    assert_refused(service.as_bearer(&tokens.access_token).await, "session revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_service_key_the_stream_is_refused_and_fail_closed_refuses_every_token() {
    let identity = IdentityServer::start().await;
    let config = identity_client::AuthConfig {
        revocation_policy: identity_client::RevocationPolicy::FailClosed,
        ..identity_client::AuthConfig::default()
    };
    let anonymous = ProtectedService::start(&identity, config).await;
    let token = identity.signed_in_user().await.tokens.expect("tokens").access_token;
    assert!(!anonymous.auth.wait_until_synchronised(Duration::from_secs(1)).await);
    assert_refused(anonymous.as_bearer(&token).await, "revocation status unavailable");
    // With the key, the same server lets the layer follow revocations.
    let keyed = ProtectedService::start_synchronised(&identity).await;
    assert!(keyed.as_bearer(&token).await.is_ok());
}
