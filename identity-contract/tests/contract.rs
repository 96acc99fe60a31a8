//! Pins the access-token contract: a token signed the way the server signs verifies the way
//! identity-client verifies, a token made by hand to the documented shape verifies the way the
//! server does, and every forgery below fails on both sides with the same reason.
//!
//! The two sides are composed exactly as the server (`tokens::TokenIssuer`: keys in a map,
//! [`AccessTokenRules::verify`], leeway 0, its access-token TTL as the longest lifetime) and
//! identity-client (`verify::Verifier`: [`key_id`], its own key lookup,
//! [`AccessTokenRules::decode`], then [`AccessTokenRules::check_window`] on every call, leeway
//! and longest lifetime from its configuration, by default [`MAX_ACCESS_TOKEN_LIFETIME`]) use
//! the contract.

use std::{collections::HashMap, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use identity_contract::{
    AccessClaims, AccessTokenRules, MAX_ACCESS_TOKEN_LIFETIME, PublicJwk, PublicKey, Rejected, SessionId,
    SigningAlgorithm, TokenId, UserId, VerificationKey,
    jsonwebtoken::{self, Algorithm, EncodingKey, Header, jwk::Jwk},
    key_id, sign,
};
use serde_json::{Value, json};

const ISSUER: &str = "identity";
const AUDIENCE: &str = "identity";
const NOW: i64 = 1_800_000_000;
/// The server's access-token TTL in these tests (its default, 15 minutes).
const TTL: i64 = 900;

/// A key pair of one of the signing algorithms.
struct KeyPair {
    encoding: EncodingKey,
    public: PublicJwk,
    /// The public key as bytes: Ed25519's 32 bytes, or the SPKI DER of a P-256 or RSA key.
    raw_public: Vec<u8>,
}

impl KeyPair {
    /// An Ed25519 key pair from a 32-byte seed: PKCS#8 v1 DER around the seed.
    fn from_seed(seed: [u8; 32]) -> Self {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let encoding = EncodingKey::from_ed_der(&der);
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).unwrap();
        let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
            unreachable!()
        };
        let raw_public = URL_SAFE_NO_PAD.decode(&okp.x).unwrap();
        let public = PublicJwk::from_ed25519(&raw_public).unwrap();
        Self { encoding, public, raw_public }
    }

    /// A new P-256 key pair.
    fn p256() -> Self {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let secret = std::iter::repeat_with(|| {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).unwrap();
            bytes
        })
        .find_map(|bytes| p256::SecretKey::from_slice(&bytes).ok())
        .unwrap();
        let encoding = EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes());
        let raw_public = secret.public_key().to_public_key_der().unwrap().into_vec();
        let public = PublicJwk::from_encoding_key(&encoding, SigningAlgorithm::ES256).unwrap();
        Self { encoding, public, raw_public }
    }

    /// A new RSA key pair of `bits`.
    fn rsa(bits: usize) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePublicKey;
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).unwrap();
        let encoding = EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes());
        let raw_public = private.to_public_key().to_public_key_der().unwrap().into_vec();
        let public = PublicJwk::from_encoding_key(&encoding, SigningAlgorithm::RS256).unwrap();
        Self { encoding, public, raw_public }
    }

    fn sign(&self, claims: &AccessClaims) -> String {
        sign(claims, self.public.algorithm(), &self.public.kid, &self.encoding).unwrap()
    }

    fn x(&self) -> &str {
        match &self.public.key {
            PublicKey::Ed25519 { x } | PublicKey::P256 { x, .. } => x,
            PublicKey::Rsa { n, .. } => n,
        }
    }
}

/// One key of each algorithm, made once (an RSA key takes a while to find).
fn every_kind() -> &'static [KeyPair; 3] {
    static KEYS: std::sync::OnceLock<[KeyPair; 3]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| [ours(), KeyPair::p256(), KeyPair::rsa(2048)])
}

/// The server's side: its key ring as a map from kid to key, no leeway, its own clock, its TTL.
struct Server {
    keys: HashMap<String, VerificationKey>,
    rules: AccessTokenRules,
}

impl Server {
    fn new(published: &[&PublicJwk]) -> Self {
        let keys = published.iter().map(|jwk| (jwk.kid.clone(), jwk.verification_key().unwrap())).collect();
        let ttl = Duration::from_secs(TTL as u64);
        Self { keys, rules: AccessTokenRules::new(ISSUER, AUDIENCE, Duration::ZERO, ttl) }
    }

    fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, Rejected> {
        self.rules.verify(token, |kid| self.keys.get(kid), now)
    }
}

/// identity-client's side: keys taken from the published members (as GetJwks sends them).
struct Client {
    keys: HashMap<String, VerificationKey>,
    rules: AccessTokenRules,
}

impl Client {
    fn new(published: &[&PublicJwk], leeway: Duration) -> Self {
        Self::with_max_lifetime(published, leeway, MAX_ACCESS_TOKEN_LIFETIME)
    }

    fn with_max_lifetime(published: &[&PublicJwk], leeway: Duration, max_lifetime: Duration) -> Self {
        let keys = published
            .iter()
            .filter_map(|jwk| PublicJwk::from_members(jwk.members()))
            .map(|jwk| (jwk.kid.clone(), jwk.verification_key().unwrap()))
            .collect();
        Self { keys, rules: AccessTokenRules::new(ISSUER, AUDIENCE, leeway, max_lifetime) }
    }

    fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, Rejected> {
        let kid = key_id(token)?;
        let key = self.keys.get(&kid).ok_or(Rejected::UnknownKey)?;
        let claims = self.rules.decode(token, key)?;
        self.rules.check_window(&claims, now)?;
        Ok(claims)
    }
}

fn ours() -> KeyPair {
    KeyPair::from_seed(*b"identity-contract-test-key-ours!")
}

fn theirs() -> KeyPair {
    KeyPair::from_seed(*b"identity-contract-test-key-other")
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        sub: UserId::new(),
        aud: AUDIENCE.into(),
        exp: NOW + TTL,
        iat: NOW,
        nbf: NOW,
        jti: TokenId::new(),
        sid: SessionId::new(),
        email: "a@example.com".into(),
        email_verified: true,
        name: "A".into(),
        roles: vec!["billing.read".into()],
        amr: identity_contract::amr(true),
        auth_time: Some(NOW),
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A token made without the contract's helpers: header and claims as JSON, signed by
/// jsonwebtoken directly (as identity-client's tests, or an issuer in another language, do).
fn by_hand(key: &EncodingKey, header: Header, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn documented_header(kid: &str) -> Header {
    header_for(Algorithm::EdDSA, kid)
}

fn header_for(alg: Algorithm, kid: &str) -> Header {
    Header { typ: Some("at+jwt".into()), kid: Some(kid.into()), ..Header::new(alg) }
}

fn assert_both_reject(server: &Server, client: &Client, token: &str, now: i64, reason: Rejected, what: &str) {
    assert_eq!(server.verify(token, now).map(|_| ()), Err(reason), "server: {what}");
    assert_eq!(client.verify(token, now).map(|_| ()), Err(reason), "client: {what}");
}

#[test]
fn a_token_the_server_signs_verifies_in_the_client_with_the_same_claims() {
    let key = ours();
    let (server, client) = (Server::new(&[&key.public]), Client::new(&[&key.public], Duration::ZERO));
    let claims = claims();
    let token = key.sign(&claims);

    assert_eq!(server.verify(&token, NOW), Ok(claims.clone()));
    assert_eq!(client.verify(&token, NOW), Ok(claims.clone()));
    // The wire format is plain: UUID strings, the RFC 9068 header.
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": key.public.kid }));
    let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["sub"], json!(claims.sub.to_string()));
    assert_eq!(payload["sid"], json!(claims.sid.to_string()));
    assert_eq!(payload["jti"], json!(claims.jti.to_string()));
}

#[test]
fn a_token_made_by_hand_to_the_documented_shape_verifies_in_the_server() {
    let key = ours();
    let (server, client) = (Server::new(&[&key.public]), Client::new(&[&key.public], Duration::ZERO));
    let expected = claims();
    let as_json = serde_json::to_value(&expected).unwrap();
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
        let header = Header { typ: Some(typ.into()), ..documented_header(&key.public.kid) };
        let token = by_hand(&key.encoding, header, &as_json);
        assert_eq!(server.verify(&token, NOW), Ok(expected.clone()), "server, typ {typ}");
        assert_eq!(client.verify(&token, NOW), Ok(expected.clone()), "client, typ {typ}");
    }
}

#[test]
fn both_sides_share_one_validity_window() {
    let key = ours();
    let (server, client) = (Server::new(&[&key.public]), Client::new(&[&key.public], Duration::ZERO));
    let claims = claims();
    let token = key.sign(&claims);

    for now in [claims.nbf, claims.exp - 1] {
        assert!(server.verify(&token, now).is_ok() && client.verify(&token, now).is_ok(), "valid at {now}");
    }
    assert_both_reject(&server, &client, &token, claims.exp, Rejected::Expired, "at its exp second");
    assert_both_reject(&server, &client, &token, claims.exp + 60, Rejected::Expired, "after exp");
    assert_both_reject(&server, &client, &token, claims.nbf - 1, Rejected::NotYetValid, "before nbf");

    // A consumer's leeway widens both ends by as much, and no more.
    let lenient = Client::new(&[&key.public], Duration::from_secs(30));
    assert!(lenient.verify(&token, claims.exp + 29).is_ok());
    assert_eq!(lenient.verify(&token, claims.exp + 30).map(|_| ()), Err(Rejected::Expired));
    assert!(lenient.verify(&token, claims.nbf - 30).is_ok());
    assert_eq!(lenient.verify(&token, claims.nbf - 31).map(|_| ()), Err(Rejected::NotYetValid));
}

#[test]
fn forged_headers_fail_on_both_sides() {
    let key = ours();
    let (server, client) = (Server::new(&[&key.public]), Client::new(&[&key.public], Duration::ZERO));
    let kid = key.public.kid.clone();
    let payload = serde_json::to_value(claims()).unwrap();
    let reject = |token: &str, reason, what| assert_both_reject(&server, &client, token, NOW, reason, what);

    // alg none: jsonwebtoken does not even parse the header, so the token is malformed.
    let unsigned =
        format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "at+jwt", "kid": kid })), b64(&payload));
    reject(&unsigned, Rejected::Malformed, "alg none");
    // HS256 keyed with the public key (the classic algorithm confusion), as bytes and as text.
    let hs256 = Header { alg: Algorithm::HS256, ..documented_header(&kid) };
    for secret in [key.raw_public.as_slice(), key.x().as_bytes()] {
        let confused = by_hand(&EncodingKey::from_secret(secret).unwrap(), hs256.clone(), &payload);
        reject(&confused, Rejected::Header, "HS256 with the public key");
    }
    // An EdDSA signature under another alg name.
    let relabelled = by_hand(&key.encoding, documented_header(&kid), &payload);
    let parts: Vec<&str> = relabelled.split('.').collect();
    let es256 =
        format!("{}.{}.{}", b64(&json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid })), parts[1], parts[2]);
    reject(&es256, Rejected::Header, "another alg");
    // typ: absent, a plain JWT, or something else.
    for typ in [None, Some("JWT"), Some("at+jwt2"), Some("")] {
        let header = Header { typ: typ.map(Into::into), ..documented_header(&kid) };
        reject(&by_hand(&key.encoding, header, &payload), Rejected::Header, "wrong typ");
    }
    // kid: absent, or one nobody published.
    let no_kid = Header { kid: None, ..documented_header(&kid) };
    reject(&by_hand(&key.encoding, no_kid, &payload), Rejected::Header, "no kid");
    let unknown = by_hand(&key.encoding, documented_header("no-such-kid"), &payload);
    reject(&unknown, Rejected::UnknownKey, "unknown kid");
    // Our kid, somebody else's key.
    let other = theirs();
    reject(
        &by_hand(&other.encoding, documented_header(&kid), &payload),
        Rejected::BadSignature,
        "another key",
    );
    // Not a JWT at all.
    for junk in ["", "not-a-jwt", "a.b.c", "..", &format!("{relabelled}.extra")] {
        assert!(server.verify(junk, NOW).is_err() && client.verify(junk, NOW).is_err(), "junk {junk:?}");
    }
}

#[test]
fn forged_claims_fail_on_both_sides() {
    let key = ours();
    let (server, client) = (Server::new(&[&key.public]), Client::new(&[&key.public], Duration::ZERO));
    let kid = key.public.kid.clone();
    let genuine = serde_json::to_value(claims()).unwrap();
    let with = |changes: Value| {
        let mut claims = genuine.clone();
        if let (Some(claims), Value::Object(changes)) = (claims.as_object_mut(), changes) {
            claims.extend(changes);
        }
        by_hand(&key.encoding, documented_header(&kid), &claims)
    };
    let without = |name: &str| {
        let mut claims = genuine.clone();
        claims.as_object_mut().unwrap().remove(name);
        by_hand(&key.encoding, documented_header(&kid), &claims)
    };
    let reject = |token: &str, reason, what| assert_both_reject(&server, &client, token, NOW, reason, what);

    reject(&with(json!({ "iss": "someone-else" })), Rejected::WrongIssuer, "another issuer");
    reject(&with(json!({ "aud": "billing" })), Rejected::WrongAudience, "another audience");
    reject(&with(json!({ "exp": NOW - 1, "nbf": NOW - 60 })), Rejected::Expired, "expired");
    reject(&with(json!({ "nbf": NOW + 60 })), Rejected::NotYetValid, "not yet valid");
    for id in ["sub", "sid", "jti"] {
        reject(&with(json!({ id: "not-a-uuid" })), Rejected::InvalidClaims, "an id that is not a UUID");
        reject(&with(json!({ id: 42 })), Rejected::InvalidClaims, "an id that is a number");
    }
    for claim in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "email", "name"] {
        reject(&without(claim), Rejected::InvalidClaims, claim);
    }
    reject(&with(json!({ "roles": "billing.read" })), Rejected::InvalidClaims, "roles that are not a list");
    reject(&with(json!({ "roles": [1] })), Rejected::InvalidClaims, "a role that is not a string");
    // A token from before roles existed has none, on both sides.
    let before_roles = without("roles");
    assert!(server.verify(&before_roles, NOW).unwrap().roles.is_empty());
    assert!(client.verify(&before_roles, NOW).unwrap().roles.is_empty());

    // Another payload under the genuine signature.
    let token = key.sign(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!(UserId::new().to_string());
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    reject(&tampered, Rejected::BadSignature, "tampered payload");
}

#[test]
fn a_retired_key_still_verifies_on_both_sides_once_published() {
    let (active, retired) = (ours(), theirs());
    let server = Server::new(&[&active.public, &retired.public]);
    let client = Client::new(&[&active.public, &retired.public], Duration::ZERO);
    let claims = claims();
    let old = retired.sign(&claims);
    assert_eq!(server.verify(&old, NOW), Ok(claims.clone()));
    assert_eq!(client.verify(&old, NOW), Ok(claims));
    assert_ne!(active.public.kid, retired.public.kid);
}

#[test]
fn a_token_issued_in_the_future_fails_on_both_sides() {
    let key = ours();
    let (server, client) = (Server::new(&[&key.public]), Client::new(&[&key.public], Duration::ZERO));
    let kid = key.public.kid.clone();
    // nbf now, so only iat is wrong: a forger who knows the window rule but stamps iat late.
    let future = by_hand(
        &key.encoding,
        documented_header(&kid),
        &serde_json::to_value(AccessClaims { iat: NOW + 60, ..claims() }).unwrap(),
    );
    assert_both_reject(&server, &client, &future, NOW, Rejected::IssuedInFuture, "iat a minute ahead");
    assert!(server.verify(&future, NOW + 60).is_ok() && client.verify(&future, NOW + 60).is_ok());
    // The consumer's leeway covers a clock that is behind, as for nbf, and no more.
    let lenient = Client::new(&[&key.public], Duration::from_secs(30));
    assert_eq!(lenient.verify(&future, NOW + 29).map(|_| ()), Err(Rejected::IssuedInFuture));
    assert!(lenient.verify(&future, NOW + 30).is_ok());
}

#[test]
fn a_lifetime_longer_than_the_ttl_fails_on_both_sides() {
    let key = ours();
    let server = Server::new(&[&key.public]);
    let sign_with = |claims: AccessClaims| {
        by_hand(&key.encoding, documented_header(&key.public.kid), &serde_json::to_value(claims).unwrap())
    };
    // Exactly the TTL passes the server; one second more does not, wherever the window is.
    let full = sign_with(AccessClaims { exp: NOW + TTL, ..claims() });
    assert!(server.verify(&full, NOW).is_ok());
    let too_long = sign_with(AccessClaims { exp: NOW + TTL + 1, ..claims() });
    assert_eq!(server.verify(&too_long, NOW).map(|_| ()), Err(Rejected::LifetimeTooLong));
    // A client configured with the server's TTL agrees exactly.
    let strict = Client::with_max_lifetime(&[&key.public], Duration::ZERO, Duration::from_secs(TTL as u64));
    assert!(strict.verify(&full, NOW).is_ok());
    assert_eq!(strict.verify(&too_long, NOW).map(|_| ()), Err(Rejected::LifetimeTooLong));
    // A client on the default accepts up to the server's largest possible TTL, 24 h; a token
    // minted to last a year (a stolen key's favourite) fails both sides, leeway or not.
    let client = Client::new(&[&key.public], Duration::from_secs(300));
    let day = MAX_ACCESS_TOKEN_LIFETIME.as_secs() as i64;
    assert!(client.verify(&sign_with(AccessClaims { exp: NOW + day, ..claims() }), NOW).is_ok());
    let year = sign_with(AccessClaims { exp: NOW + 365 * day, ..claims() });
    assert_both_reject(
        &server,
        &Client::new(&[&key.public], Duration::ZERO),
        &year,
        NOW,
        Rejected::LifetimeTooLong,
        "a year",
    );
    assert_eq!(client.verify(&year, NOW).map(|_| ()), Err(Rejected::LifetimeTooLong));
    let day_and_a_second = sign_with(AccessClaims { exp: NOW + day + 1, ..claims() });
    assert_eq!(client.verify(&day_and_a_second, NOW).map(|_| ()), Err(Rejected::LifetimeTooLong));
}

#[test]
fn a_ttl_with_a_fraction_of_a_second_allows_its_whole_seconds() {
    let rules = AccessTokenRules::new(ISSUER, AUDIENCE, Duration::ZERO, Duration::from_millis(1500));
    let key = ours();
    let decoding = key.public.verification_key().unwrap();
    for (lifetime, accepted) in [(1, true), (2, true), (3, false)] {
        let token = key.sign(&AccessClaims { exp: NOW + lifetime, ..claims() });
        assert_eq!(rules.decode(&token, &decoding).is_ok(), accepted, "lifetime {lifetime}");
    }
}

#[test]
fn a_token_from_before_the_email_verified_claim_reads_as_unverified() {
    let mut value = serde_json::to_value(claims()).unwrap();
    value.as_object_mut().unwrap().remove("email_verified");
    let decoded: AccessClaims = serde_json::from_value(value).unwrap();
    assert!(!decoded.email_verified);
}

#[test]
fn every_algorithm_signs_and_verifies_the_same_on_both_sides_and_publishes_its_own_shape() {
    let keys = every_kind();
    let published: Vec<&PublicJwk> = keys.iter().map(|key| &key.public).collect();
    let (server, client) = (Server::new(&published), Client::new(&published, Duration::ZERO));
    for (key, (alg, kty)) in keys.iter().zip([("EdDSA", "OKP"), ("ES256", "EC"), ("RS256", "RSA")]) {
        let claims = claims();
        let token = key.sign(&claims);
        assert_eq!(server.verify(&token, NOW), Ok(claims.clone()), "server, {alg}");
        assert_eq!(client.verify(&token, NOW), Ok(claims), "client, {alg}");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header, json!({ "alg": alg, "typ": "at+jwt", "kid": key.public.kid }));
        let jwk = serde_json::to_value(key.public.to_jwk()).unwrap();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str(), jwk["use"].as_str()),
            (Some(kty), Some(alg), Some("sig"))
        );
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{alg} publishes {private}");
        }
    }
}

#[test]
fn a_key_verifies_only_its_own_algorithm() {
    let keys = every_kind();
    let published: Vec<&PublicJwk> = keys.iter().map(|key| &key.public).collect();
    let (server, client) = (Server::new(&published), Client::new(&published, Duration::ZERO));
    let payload = serde_json::to_value(claims()).unwrap();
    let reject =
        |token: &str, reason, what: &str| assert_both_reject(&server, &client, token, NOW, reason, what);
    let rsa = &keys[2];

    // The classic confusion: HS256, keyed with the RSA key's public bytes (DER, PEM text, n).
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD
            .encode(&rsa.raw_public)
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for secret in [rsa.raw_public.as_slice(), pem.as_bytes(), rsa.x().as_bytes()] {
        let hs256 = header_for(Algorithm::HS256, &rsa.public.kid);
        let confused = by_hand(&EncodingKey::from_secret(secret).unwrap(), hs256, &payload);
        reject(&confused, Rejected::Header, "HS256 with the RSA public key");
    }
    // A genuine signature of one key, presented under another key's kid and algorithm.
    for signer in keys {
        for victim in keys.iter().filter(|victim| victim.public.kid != signer.public.kid) {
            let header = header_for(signer.public.algorithm().jwt(), &victim.public.kid);
            let token = by_hand(&signer.encoding, header, &payload);
            reject(&token, Rejected::Header, "another key's algorithm under this kid");
        }
    }
    // RS256 relabelled as PS256 or RS512: algorithms nobody verifies.
    let genuine = rsa.sign(&claims());
    let parts: Vec<&str> = genuine.split('.').collect();
    for alg in ["PS256", "RS512", "ES384", "HS512"] {
        let header = b64(&json!({ "alg": alg, "typ": "at+jwt", "kid": rsa.public.kid }));
        reject(&format!("{header}.{}.{}", parts[1], parts[2]), Rejected::Header, alg);
    }
}

#[test]
fn rsa_keys_shorter_than_2048_bits_are_refused() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 1024).unwrap();
    let short = EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes());
    let error = PublicJwk::from_encoding_key(&short, SigningAlgorithm::RS256).unwrap_err();
    assert_eq!(error, identity_contract::KeyRejected::RsaTooShort { bits: 1024 });
}
