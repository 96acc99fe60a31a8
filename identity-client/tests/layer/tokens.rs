//! What the layer lets through, and what it refuses.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use identity_client::{AuthConfig, VerifiedClaims};
use serde_json::json;

use crate::helpers::{IdentityServer, ProtectedService, assert_refused, claims, sign, unix_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_passes_and_the_handler_sees_its_claims() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let login = identity.signed_in_user().await;
    let user = login.user.expect("login returns the user");
    let token = login.tokens.expect("login returns tokens").access_token;

    assert_eq!(service.as_bearer(&token).await.expect("a valid token passes"), user.id);
    // The scheme is case-insensitive; a repeat comes from the cache and passes the same way.
    assert_eq!(service.who_am_i(Some(&format!("bearer {token}"))).await.expect("lower-case scheme"), user.id);
    assert_eq!(service.who_am_i(Some(&format!("BEARER {token}"))).await.expect("upper-case scheme"), user.id);

    let claims: VerifiedClaims = service.auth.verify(&token).await.expect("verifies in process too");
    assert_eq!(claims.sub.to_string(), user.id);
    assert_eq!(claims.email, user.email);
    assert_eq!(claims.name, "Test User");
    assert!(!claims.email_verified, "a new account's email is not verified yet");
    assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("identity", "identity"));
    assert!(claims.exp > unix_now() && claims.iat <= unix_now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_bearer_token_is_refused() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let token = identity.signed_in_user().await.tokens.expect("tokens").access_token;

    assert_refused(service.who_am_i(None).await, "missing bearer token");
    assert_refused(service.who_am_i(Some("Bearer ")).await, "authorization scheme is not Bearer");
    assert_refused(
        service.who_am_i(Some(&format!("Basic {token}"))).await,
        "authorization scheme is not Bearer",
    );
    assert_refused(
        service.who_am_i(Some(&format!("Token {token}"))).await,
        "authorization scheme is not Bearer",
    );
    assert_refused(service.who_am_i(Some(&token)).await, "authorization scheme is not Bearer");
    assert_refused(service.who_am_i(Some("Bearer not-a-jwt")).await, "malformed token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_token_is_refused() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let token = identity.signed_in_user().await.tokens.expect("tokens").access_token;

    // Another user id in the payload, the genuine signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);

    let refused = service.as_bearer(&tampered).await.expect_err("a tampered token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "invalid token signature");
    assert!(!refused.message().contains(&tampered) && !refused.message().contains(parts[2]));
    // The genuine one still passes (a refusal caches nothing).
    assert!(service.as_bearer(&token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_another_key_with_the_same_kid_is_refused() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let kid = identity.signing_kid().await;
    let other_key = identity.data_dir.path().join("other.pem");
    identity::cli::keygen(Some(&other_key), identity_contract::SigningAlgorithm::EdDSA).expect("keygen");

    let genuine = sign(&identity.signing_key_file(), &kid, &claims(json!({})));
    assert!(service.as_bearer(&genuine).await.is_ok(), "the server's key passes (control)");
    let forged = sign(&other_key, &kid, &claims(json!({})));
    assert_refused(service.as_bearer(&forged).await, "invalid token signature");
    let unknown_kid = sign(&other_key, "no-such-kid", &claims(json!({})));
    assert_refused(service.as_bearer(&unknown_kid).await, "unknown signing key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_not_yet_valid_token_is_refused() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let kid = identity.signing_kid().await;
    let key = identity.signing_key_file();
    let now = unix_now();

    let expired = sign(&key, &kid, &claims(json!({ "iat": now - 120, "nbf": now - 120, "exp": now - 60 })));
    assert_refused(service.as_bearer(&expired).await, "token expired");
    let expiring_now = sign(&key, &kid, &claims(json!({ "iat": now - 120, "nbf": now - 120, "exp": now })));
    assert_refused(service.as_bearer(&expiring_now).await, "token expired");
    let future = sign(&key, &kid, &claims(json!({ "nbf": now + 60, "exp": now + 600 })));
    assert_refused(service.as_bearer(&future).await, "token not yet valid");

    // With leeway, a token a little past its expiry still passes.
    let lenient = ProtectedService::start(
        &identity,
        AuthConfig { leeway: std::time::Duration::from_secs(120), ..identity.auth_config() },
    )
    .await;
    assert!(lenient.auth.wait_until_synchronised(std::time::Duration::from_secs(10)).await);
    assert!(lenient.as_bearer(&expired).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_or_issuer_is_refused() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let kid = identity.signing_kid().await;
    let key = identity.signing_key_file();

    let other_audience = sign(&key, &kid, &claims(json!({ "aud": "billing" })));
    assert_refused(service.as_bearer(&other_audience).await, "wrong token audience");
    let other_issuer = sign(&key, &kid, &claims(json!({ "iss": "someone-else" })));
    assert_refused(service.as_bearer(&other_issuer).await, "wrong token issuer");
    let without_session = sign(&key, &kid, &claims(json!({ "sid": "not-a-uuid" })));
    assert_refused(service.as_bearer(&without_session).await, "invalid token claims");
    let named_user = sign(&key, &kid, &claims(json!({ "sub": "alice" })));
    assert_refused(service.as_bearer(&named_user).await, "invalid token claims");

    // A service configured for that audience takes the first one and refuses the server's own.
    let billing = ProtectedService::start(
        &identity,
        AuthConfig { audience: "billing".into(), ..identity.auth_config() },
    )
    .await;
    assert!(billing.as_bearer(&other_audience).await.is_ok());
    let token = identity.signed_in_user().await.tokens.expect("tokens").access_token;
    assert_refused(billing.as_bearer(&token).await, "wrong token audience");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_another_header_is_refused() {
    let identity = IdentityServer::start().await;
    let service = ProtectedService::start_synchronised(&identity).await;
    let kid = identity.signing_kid().await;
    let pem = std::fs::read(identity.signing_key_file()).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap();
    let sign_with =
        |header: jsonwebtoken::Header| jsonwebtoken::encode(&header, &claims(json!({})), &key).unwrap();
    let eddsa = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);

    let plain_jwt = sign_with(jsonwebtoken::Header { kid: Some(kid.clone()), ..eddsa.clone() });
    assert_refused(service.as_bearer(&plain_jwt).await, "unsupported token header (alg, typ or kid)");
    let no_kid = sign_with(jsonwebtoken::Header { typ: Some("at+jwt".into()), ..eddsa.clone() });
    assert_refused(service.as_bearer(&no_kid).await, "unsupported token header (alg, typ or kid)");
    let long_typ = sign_with(jsonwebtoken::Header {
        typ: Some("application/at+jwt".into()),
        kid: Some(kid.clone()),
        ..eddsa.clone()
    });
    assert!(service.as_bearer(&long_typ).await.is_ok(), "the media type spelling of typ passes");
    // HS256 with the public key as the secret: the classic algorithm confusion.
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            typ: Some("at+jwt".into()),
            kid: Some(kid),
            ..jsonwebtoken::Header::default()
        },
        &claims(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(b"public key bytes").unwrap(),
    )
    .unwrap();
    assert_refused(service.as_bearer(&hs256).await, "unsupported token header (alg, typ or kid)");
}
