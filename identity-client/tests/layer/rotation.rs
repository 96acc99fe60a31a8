//! A signing key rotation reaches the layer through GetJwks, without restarting the service.

use std::time::Duration;

use crate::helpers::{IdentityServer, ProtectedService, eventually};

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("a JWT").kid.expect("a kid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_picked_up_without_restarting_the_service() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let login = identity.signed_in_user().await;
    let email = login.user.expect("user").email;
    let old_token = login.tokens.expect("tokens").access_token;
    assert!(service.as_bearer(&old_token).await.is_ok());

    // Step 3 of the README's rotation: sign with the next key, keep verifying with the old one.
    let next_key = identity.data_dir.path().join("next.pem");
    identity::cli::keygen(Some(&next_key)).expect("keygen");
    let old_key = identity.signing_key_file().display().to_string();
    let identity = identity
        .restart_with(&[
            ("IDENTITY_SIGNING_KEY_FILE", next_key.display().to_string()),
            ("IDENTITY_VERIFY_KEY_FILES", old_key),
        ])
        .await;
    let new_token = identity.login(&email).await.tokens.expect("tokens").access_token;
    assert_ne!(kid_of(&new_token), kid_of(&old_token), "the new token names the new key");

    // The first request with the new kid makes the layer fetch the key set again. Polled,
    // because the service's connection to the restarted server may still be re-establishing.
    let took = eventually(Duration::from_secs(15), || async { service.as_bearer(&new_token).await.is_ok() })
        .await
        .expect("a token signed with the new key passes");
    eprintln!("new key accepted after {took:?}");
    assert!(service.as_bearer(&old_token).await.is_ok(), "a token signed with the old key still passes");
    assert!(service.auth.wait_until_synchronised(Duration::from_secs(10)).await, "the stream resumed");
}
