//! IDENTITY_SIGNING_ALG: tokens signed with ES256 or RS256 verify against the published key of
//! the right kind, each key only with its own algorithm, and a rotation from one algorithm to
//! another logs nobody out.

use identity::proto::{GetJwksRequest, JsonWebKey};
use identity_contract::SigningAlgorithm;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::{helpers::TestApp, on_both_backends, well_known};

on_both_backends!(
    es256_and_rs256_tokens_verify_against_the_published_key_of_their_kind,
    a_rotation_from_eddsa_to_es256_keeps_old_tokens_valid,
    a_token_signed_with_an_rsa_keys_public_bytes_as_an_hmac_secret_is_inactive,
);

async fn jwks(app: &TestApp) -> Vec<JsonWebKey> {
    app.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys
}

/// The decoding key of a published JWK, built from its members as any JOSE library would.
fn decoding_key(jwk: &JsonWebKey) -> DecodingKey {
    match jwk.kty.as_str() {
        "OKP" => DecodingKey::from_ed_components(&jwk.x).unwrap(),
        "EC" => DecodingKey::from_ec_components(&jwk.x, &jwk.y).unwrap(),
        "RSA" => DecodingKey::from_rsa_components(&jwk.n, &jwk.e).unwrap(),
        other => panic!("unexpected kty {other}"),
    }
}

async fn es256_and_rs256_tokens_verify_against_the_published_key_of_their_kind(app: TestApp) {
    let mut app = app;
    for (alg, algorithm, kty, crv) in
        [("ES256", Algorithm::ES256, "EC", "P-256"), ("RS256", Algorithm::RS256, "RSA", "")]
    {
        app = app.restart_with(&[("IDENTITY_SIGNING_ALG", alg), ("IDENTITY_HTTP_ADDR", "127.0.0.1:0")]).await;
        let (user, login) = app.signed_in_user().await;
        let token = login.tokens.unwrap().access_token;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, algorithm);
        assert!(app.is_active(&token).await, "{alg}");

        let keys = jwks(&app).await;
        assert_eq!(keys.len(), 1, "a generated key of the configured kind, alone");
        let jwk = &keys[0];
        assert_eq!(Some(&jwk.kid), header.kid.as_ref());
        assert_eq!(
            (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str(), jwk.r#use.as_str()),
            (kty, crv, alg, "sig")
        );
        match kty {
            "EC" => assert!(jwk.x.len() == 43 && jwk.y.len() == 43 && jwk.n.is_empty()),
            _ => assert!(jwk.n.len() >= 342 && jwk.e == "AQAB" && jwk.x.is_empty(), "a 2048-bit modulus"),
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&["identity"]);
        validation.set_audience(&["identity"]);
        let claims = jsonwebtoken::decode::<Value>(&token, &decoding_key(jwk), &validation).unwrap().claims;
        assert_eq!(claims["sub"], user.id.as_str());

        // The same key over HTTP, with the same members.
        let over_http = well_known::get(app.http_addr.unwrap(), "/.well-known/jwks.json", &[]).await.json();
        let published = &over_http["keys"][0];
        assert_eq!((published["kty"].as_str(), published["alg"].as_str()), (Some(kty), Some(alg)));
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(published.get(private).is_none(), "{alg} publishes {private}");
        }
        let discovery =
            well_known::get(app.http_addr.unwrap(), "/.well-known/openid-configuration", &[]).await;
        assert_eq!(discovery.json()["id_token_signing_alg_values_supported"], serde_json::json!([alg]));
    }
}

async fn a_rotation_from_eddsa_to_es256_keeps_old_tokens_valid(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let old_token = login.tokens.unwrap().access_token;
    let old_key = app.data_dir().join("signing_key.pem");
    let next_key = app.data_dir().join("next_es256.pem");
    identity::cli::keygen(Some(&next_key), SigningAlgorithm::ES256).unwrap();

    // Switch signing to ES256 while the EdDSA key still verifies.
    let app = app
        .restart_with(&[
            ("IDENTITY_SIGNING_ALG", "ES256"),
            ("IDENTITY_SIGNING_KEY_FILE", next_key.to_str().unwrap()),
            ("IDENTITY_VERIFY_KEY_FILES", old_key.to_str().unwrap()),
        ])
        .await;
    assert!(app.is_active(&old_token).await, "an EdDSA token still verifies while ES256 signs");
    let new_token =
        app.login(&user.email, crate::helpers::PASSWORD).await.unwrap().tokens.unwrap().access_token;
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().alg, Algorithm::ES256);
    assert!(app.is_active(&new_token).await);
    let published: Vec<(String, String)> = jwks(&app).await.into_iter().map(|k| (k.kty, k.alg)).collect();
    assert_eq!(published, [("EC".into(), "ES256".into()), ("OKP".into(), "EdDSA".into())]);

    // Once the old tokens have expired, the EdDSA key goes.
    let app = app.restart_with(&[("IDENTITY_VERIFY_KEY_FILES", "")]).await;
    assert!(!app.is_active(&old_token).await);
    assert!(app.is_active(&new_token).await);
}

async fn a_token_signed_with_an_rsa_keys_public_bytes_as_an_hmac_secret_is_inactive(app: TestApp) {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let app = app.restart_with(&[("IDENTITY_SIGNING_ALG", "RS256")]).await;
    let (_, login) = app.signed_in_user().await;
    let genuine = login.tokens.unwrap().access_token;
    let kid = jsonwebtoken::decode_header(&genuine).unwrap().kid.unwrap();
    let parts: Vec<&str> = genuine.split('.').collect();
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    let pem = std::fs::read_to_string(app.data_dir().join("signing_key_rs256.pem")).unwrap();
    let public = rsa::PrivateKey::from_pkcs8_pem(&pem).unwrap().to_public_key();
    let public_pem = public.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let public_der = public.to_public_key_der().unwrap();
    let n = jwks(&app).await[0].n.clone();
    for (what, secret) in
        [("PEM", public_pem.as_bytes()), ("DER", public_der.as_bytes()), ("n", n.as_bytes())]
    {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let header = Header { kid: Some(kid.clone()), typ: Some("at+jwt".into()), ..Header::new(alg) };
            let forged =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap();
            assert!(!app.is_active(&forged).await, "{alg:?} keyed with the public key's {what}");
        }
    }
    // The genuine signature relabelled with an algorithm the key is not for.
    for alg in ["PS256", "RS512", "ES256", "EdDSA"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#));
        assert!(!app.is_active(&format!("{header}.{}.{}", parts[1], parts[2])).await, "relabelled {alg}");
    }
    assert!(app.is_active(&genuine).await);
}
