//! What the layer does while the identity server is down: FailClosed refuses, FailOpen keeps
//! accepting for its staleness bound.

use std::time::Duration;

use identity_client::{AuthConfig, RevocationPolicy};

use crate::helpers::{IdentityServer, ProtectedService, assert_refused, eventually};

async fn start_with(identity: &IdentityServer, revocation_policy: RevocationPolicy) -> ProtectedService {
    let service =
        ProtectedService::start(identity, AuthConfig { revocation_policy, ..identity.auth_config() }).await;
    assert!(service.auth.wait_until_synchronised(Duration::from_secs(10)).await, "revocations synchronised");
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_the_identity_server_is_down() {
    let mut identity = IdentityServer::start().await;
    let closed = start_with(&identity, RevocationPolicy::FailClosed).await;
    let token = identity.signed_in_user().await.tokens.expect("tokens").access_token;
    assert!(closed.as_bearer(&token).await.is_ok());

    identity.stop().await;
    eventually(Duration::from_secs(5), || async { !closed.auth.is_synchronised() })
        .await
        .expect("the layer notices the stream is gone");
    assert_refused(closed.as_bearer(&token).await, "revocation status unavailable");

    // Back on the same address: the stream resumes and the token passes again.
    let identity = identity.restart_with(&[]).await;
    assert!(closed.auth.wait_until_synchronised(Duration::from_secs(15)).await, "the stream resumed");
    assert!(closed.as_bearer(&token).await.is_ok());
    drop(identity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_accepting_within_its_staleness_then_refuses() {
    let mut identity = IdentityServer::start().await;
    let open =
        start_with(&identity, RevocationPolicy::FailOpen { max_staleness: Duration::from_secs(120) }).await;
    let brief =
        start_with(&identity, RevocationPolicy::FailOpen { max_staleness: Duration::from_millis(300) }).await;
    let token = identity.signed_in_user().await.tokens.expect("tokens").access_token;
    assert!(open.as_bearer(&token).await.is_ok());
    assert!(brief.as_bearer(&token).await.is_ok());

    identity.stop().await;
    eventually(Duration::from_secs(5), || async {
        !open.auth.is_synchronised() && !brief.auth.is_synchronised()
    })
    .await
    .expect("the layers notice the stream is gone");
    assert!(open.as_bearer(&token).await.is_ok(), "accepted within the staleness bound");
    eventually(Duration::from_secs(5), || async { brief.as_bearer(&token).await.is_err() })
        .await
        .expect("refused once the staleness bound has passed");
    assert_refused(brief.as_bearer(&token).await, "revocation status unavailable");
    assert!(open.as_bearer(&token).await.is_ok(), "the longer bound still accepts");
}
