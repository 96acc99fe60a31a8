use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use identity::proto::{GetJwksRequest, ValidateTokenRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::{helpers::TestApp, on_both_backends};

on_both_backends!(
    validate_token_returns_the_claims_of_an_active_token,
    access_tokens_verify_locally_against_the_published_jwks,
    the_jwks_holds_no_private_parameter,
    forged_and_foreign_tokens_are_inactive,
    a_token_is_inactive_from_the_second_it_expires,
);

async fn validate_token_returns_the_claims_of_an_active_token(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let response =
        app.tokens().validate_token(ValidateTokenRequest { access_token: token }).await.unwrap().into_inner();
    assert!(response.active);
    let claims = response.claims.unwrap();
    assert_eq!(claims.subject, user.id);
    assert_eq!(claims.email, user.email);
    assert_eq!(claims.full_name, "Test User");
    assert_eq!(claims.issuer, "identity");
    assert_eq!(claims.audience, ["identity"]);
    assert!(claims.session_id.parse::<uuid::Uuid>().is_ok());
    assert!(claims.token_id.parse::<uuid::Uuid>().is_ok());
    let lifetime = claims.expires_at.unwrap().seconds - claims.issued_at.unwrap().seconds;
    assert_eq!(lifetime, 900);
}

async fn access_tokens_verify_locally_against_the_published_jwks(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let jwks = app.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk =
        jwks.iter().find(|k| Some(&k.kid) == header.kid.as_ref()).expect("the token's kid is published");
    assert_eq!(
        (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str(), jwk.r#use.as_str()),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["identity"]);
    validation.set_audience(&["identity"]);
    let key = DecodingKey::from_ed_components(&jwk.x).unwrap();
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap().claims;
    assert_eq!(claims["sub"], user.id.as_str());
    for claim in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "email", "name"] {
        assert!(claims.get(claim).is_some(), "claim {claim} is missing from {claims}");
    }
}

async fn the_jwks_holds_no_private_parameter(app: TestApp) {
    let jwks = app.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(jwks.len(), 1);
    let x = URL_SAFE_NO_PAD.decode(&jwks[0].x).unwrap();
    assert_eq!(x.len(), 32, "x is the 32-byte public key");
    // x is the public half of the key on disk, never its private seed.
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(app.data_dir().join("signing_key.pem")).unwrap();
    let private = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(x, private.verifying_key().to_bytes());
    assert_ne!(x, private.to_bytes());
}

async fn forged_and_foreign_tokens_are_inactive(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let genuine = login.tokens.unwrap().access_token;
    assert!(app.is_active(&genuine).await);
    let parts: Vec<&str> = genuine.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());

    let mut tampered_claims = claims.clone();
    tampered_claims["email"] = json!("admin@example.com");
    let tampered_payload = format!("{}.{}.{}", parts[0], encode(&tampered_claims), parts[2]);

    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 0x01;
    let flipped_signature = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&signature));

    let alg_none = format!("{}.{}.", encode(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})), parts[1]);

    let jwks = app.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys;
    let public_key = URL_SAFE_NO_PAD.decode(&jwks[0].x).unwrap();
    let hs256_header =
        Header { kid: Some(kid.clone()), typ: Some("at+jwt".into()), ..Header::new(Algorithm::HS256) };
    let hs256_with_public_key =
        jsonwebtoken::encode(&hs256_header, &claims, &EncodingKey::from_secret(&public_key).unwrap())
            .unwrap();

    let eddsa_header =
        Header { kid: Some(kid.clone()), typ: Some("at+jwt".into()), ..Header::new(Algorithm::EdDSA) };
    let other_key = EncodingKey::from_ed_pem(
        identity::tokens::generate_key_pem(identity_contract::SigningAlgorithm::EdDSA).unwrap().as_bytes(),
    )
    .unwrap();
    let other_key_same_kid = jsonwebtoken::encode(&eddsa_header, &claims, &other_key).unwrap();

    // Signed with the server's own key, but not a token it would issue.
    let our_key_pem = std::fs::read(app.data_dir().join("signing_key.pem")).unwrap();
    let our_key = EncodingKey::from_ed_pem(&our_key_pem).unwrap();
    let sign_with_our_key =
        |header: &Header, claims: &Value| jsonwebtoken::encode(header, claims, &our_key).unwrap();
    let mut foreign_issuer = claims.clone();
    foreign_issuer["iss"] = json!("someone-else");
    let mut foreign_audience = claims.clone();
    foreign_audience["aud"] = json!("another-service");
    let mut already_expired = claims.clone();
    already_expired["exp"] = json!(chrono::Utc::now().timestamp() - 1);
    let mut not_yet_valid = claims.clone();
    not_yet_valid["nbf"] = json!(chrono::Utc::now().timestamp() + 600);
    // Issue 15: a token stamped in the future, or living longer than the access-token TTL, is
    // not one the server issued, however it is signed.
    let mut issued_in_the_future = claims.clone();
    issued_in_the_future["iat"] = json!(chrono::Utc::now().timestamp() + 600);
    let mut longer_than_the_ttl = claims.clone();
    longer_than_the_ttl["exp"] = json!(claims["iat"].as_i64().unwrap() + 30 * 24 * 3600);
    let mut without_exp = claims.clone();
    without_exp.as_object_mut().unwrap().remove("exp");
    let id_token_type = Header { typ: Some("JWT".into()), ..eddsa_header.clone() };

    let forgeries = [
        ("tampered payload", tampered_payload),
        ("flipped signature", flipped_signature),
        ("alg none", alg_none),
        ("HS256 signed with the public key", hs256_with_public_key),
        ("another key with the same kid", other_key_same_kid),
        ("another issuer", sign_with_our_key(&eddsa_header, &foreign_issuer)),
        ("another audience", sign_with_our_key(&eddsa_header, &foreign_audience)),
        ("expired", sign_with_our_key(&eddsa_header, &already_expired)),
        ("not yet valid", sign_with_our_key(&eddsa_header, &not_yet_valid)),
        ("no exp", sign_with_our_key(&eddsa_header, &without_exp)),
        ("issued in the future", sign_with_our_key(&eddsa_header, &issued_in_the_future)),
        ("a lifetime longer than the TTL", sign_with_our_key(&eddsa_header, &longer_than_the_ttl)),
        ("typ JWT", sign_with_our_key(&id_token_type, &claims)),
        ("empty", String::new()),
        ("garbage", "not.a.token".into()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
    ];
    for (what, token) in forgeries {
        assert!(!app.is_active(&token).await, "{what} was accepted");
    }
    assert!(app.is_active(&genuine).await);
}

async fn a_token_is_inactive_from_the_second_it_expires(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    app.clock.advance(Duration::from_secs(14 * 60));
    assert!(app.is_active(&token).await);
    app.clock.advance(Duration::from_secs(61));
    let response =
        app.tokens().validate_token(ValidateTokenRequest { access_token: token }).await.unwrap().into_inner();
    assert!(!response.active);
    assert!(response.claims.is_none(), "an inactive token has no claims");
}
