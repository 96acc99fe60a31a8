//! A signing key rotation reaches the layer through GetJwks, without restarting the service,
//! also to another algorithm: the layer verifies EdDSA, ES256 and RS256 tokens alike.

use std::time::Duration;

use identity_contract::SigningAlgorithm;

use crate::helpers::{IdentityServer, ProtectedService, eventually};

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("a JWT").kid.expect("a kid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_across_algorithms_is_picked_up_without_restarting_the_service() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let login = identity.signed_in_user().await;
    let email = login.user.expect("user").email;
    let old_token = login.tokens.expect("tokens").access_token;
    assert!(service.as_bearer(&old_token).await.is_ok());

    // Step 3 of the README's rotation: sign with the next key (of another algorithm each time),
    // keep verifying with the old ones.
    let mut retired = vec![identity.signing_key_file().display().to_string()];
    let mut tokens = vec![old_token];
    let mut identity = identity;
    for algorithm in [SigningAlgorithm::ES256, SigningAlgorithm::RS256] {
        let next_key = identity.data_dir.path().join(format!("next-{algorithm}.pem"));
        identity::cli::keygen(Some(&next_key), algorithm).expect("keygen");
        identity = identity
            .restart_with(&[
                ("IDENTITY_SIGNING_ALG", algorithm.to_string()),
                ("IDENTITY_SIGNING_KEY_FILE", next_key.display().to_string()),
                ("IDENTITY_VERIFY_KEY_FILES", retired.join(",")),
            ])
            .await;
        let new_token = identity.login(&email).await.tokens.expect("tokens").access_token;
        let header = jsonwebtoken::decode_header(&new_token).expect("a JWT");
        assert_eq!(header.alg, algorithm.jwt(), "the new token is signed with {algorithm}");
        assert!(
            tokens.iter().all(|old| kid_of(old) != kid_of(&new_token)),
            "the new token names the new key"
        );

        // The first request with the new kid makes the layer fetch the key set again. Polled,
        // because the service's connection to the restarted server may still be re-establishing.
        let took =
            eventually(Duration::from_secs(15), || async { service.as_bearer(&new_token).await.is_ok() })
                .await
                .expect("a token signed with the new key passes");
        eprintln!("new {algorithm} key accepted after {took:?}");
        for old in &tokens {
            assert!(service.as_bearer(old).await.is_ok(), "a token signed with an old key still passes");
        }
        assert!(service.auth.wait_until_synchronised(Duration::from_secs(10)).await, "the stream resumed");
        retired.push(next_key.display().to_string());
        tokens.push(new_token);
    }
}
