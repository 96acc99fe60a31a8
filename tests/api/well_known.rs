//! The keys and discovery document over plain HTTP (`IDENTITY_HTTP_ADDR`), fetched the way a
//! gateway does: over a real socket, with conditional requests.

use std::net::SocketAddr;

use identity::proto::GetJwksRequest;
use jsonwebtoken::{Validation, jwk::JwkSet};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{helpers::TestApp, on_both_backends};

on_both_backends!(
    the_key_set_over_http_is_get_jwks_and_verifies_a_login_token,
    a_conditional_request_for_unchanged_keys_gets_304,
    discovery_names_the_issuer_the_absolute_key_set_url_and_the_algorithms,
    keys_and_metrics_can_share_one_listener,
    a_new_key_in_the_set_changes_its_etag,
);

/// An HTTP/1.1 response as a client reads it.
pub struct HttpResponse {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }
}

/// `GET path` with `headers`, on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|code| code.parse().ok());
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status: status.unwrap_or_else(|| panic!("no status line: {response}")),
        headers,
        body: body.into(),
    }
}

async fn with_http(app: TestApp, env: &[(&str, &str)]) -> (TestApp, SocketAddr) {
    let mut env = env.to_vec();
    env.push(("IDENTITY_HTTP_ADDR", "127.0.0.1:0"));
    let app = app.restart_with(&env).await;
    let addr = app.http_addr.expect("the HTTP listener is on");
    (app, addr)
}

async fn the_key_set_over_http_is_get_jwks_and_verifies_a_login_token(app: TestApp) {
    let (app, addr) = with_http(app, &[]).await;
    let response = get(addr, "/.well-known/jwks.json", &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("public, max-age=300"));
    let etag = response.header("etag").expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "a strong ETag: {etag}");

    let set = response.json();
    let grpc = app.tokens().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys;
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), grpc.len());
    for (http, grpc) in keys.iter().zip(&grpc) {
        for (member, value) in [("kty", &grpc.kty), ("crv", &grpc.crv), ("x", &grpc.x), ("kid", &grpc.kid)] {
            assert_eq!(http[member], value.as_str(), "{member}");
        }
        assert_eq!((http["alg"].as_str(), http["use"].as_str()), (Some(grpc.alg.as_str()), Some("sig")));
        assert!(http.get("d").is_none(), "no private parameter");
    }

    // A resource server holding only this document verifies a token from a real login.
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let set: JwkSet = serde_json::from_str(&response.body).unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).expect("the token's kid is in the set");
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["identity"]);
    validation.set_audience(&["identity"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap().claims;
    assert_eq!(claims["sub"], user.id.as_str());

    assert_eq!(get(addr, "/.well-known/nothing-here", &[]).await.status, 404);
}

async fn a_conditional_request_for_unchanged_keys_gets_304(app: TestApp) {
    let (_app, addr) = with_http(app, &[]).await;
    for path in ["/.well-known/jwks.json", "/.well-known/openid-configuration"] {
        let first = get(addr, path, &[]).await;
        let etag = first.header("etag").unwrap().to_owned();
        let weak = format!("W/{etag}");
        let listed = format!("\"something-else\", {etag}");
        for condition in [etag.as_str(), &weak, &listed, "*"] {
            let again = get(addr, path, &[("If-None-Match", condition)]).await;
            assert_eq!(again.status, 304, "{path} with If-None-Match: {condition}");
            assert_eq!(again.body, "", "a 304 has no body");
            assert_eq!(again.header("etag"), Some(etag.as_str()));
            assert_eq!(again.header("cache-control"), Some("public, max-age=300"));
        }
        let changed = get(addr, path, &[("If-None-Match", "\"an-older-tag\"")]).await;
        assert_eq!(changed.status, 200);
        assert_eq!(changed.body, first.body);
    }
}

async fn discovery_names_the_issuer_the_absolute_key_set_url_and_the_algorithms(app: TestApp) {
    let (_app, addr) = with_http(app, &[("IDENTITY_PUBLIC_URL", "https://id.example.com/")]).await;
    let discovery = get(addr, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(discovery.status, 200);
    assert_eq!(discovery.header("cache-control"), Some("public, max-age=300"));
    let document = discovery.json();
    assert_eq!(document["issuer"], "identity");
    assert_eq!(document["jwks_uri"], "https://id.example.com/.well-known/jwks.json");
    assert_eq!(document["id_token_signing_alg_values_supported"], serde_json::json!(["EdDSA"]));
}

async fn keys_and_metrics_can_share_one_listener(app: TestApp) {
    let shared = "127.0.0.1:0";
    let app = app.restart_with(&[("IDENTITY_HTTP_ADDR", shared), ("IDENTITY_METRICS_ADDR", shared)]).await;
    let addr = app.http_addr.unwrap();
    assert_eq!(app.metrics_addr, Some(addr), "one listener");
    assert_eq!(get(addr, "/.well-known/jwks.json", &[]).await.status, 200);
    let metrics = get(addr, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("identity_"), "{}", metrics.body);
    // Without a public URL, jwks_uri points at the listener itself.
    let document = get(addr, "/.well-known/openid-configuration", &[]).await.json();
    assert_eq!(document["jwks_uri"], format!("http://{addr}/.well-known/jwks.json"));
}

async fn a_new_key_in_the_set_changes_its_etag(app: TestApp) {
    let (app, addr) = with_http(app, &[]).await;
    let before = get(addr, "/.well-known/jwks.json", &[]).await;
    let next = app.data_dir().join("next.pem");
    std::fs::write(
        &next,
        identity::tokens::generate_key_pem(identity_contract::SigningAlgorithm::EdDSA).unwrap(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600)).unwrap();
    let next = next.display().to_string();
    // Step 2 of the rotation runbook: the next key is published before it signs.
    let (_app, addr) = with_http(app, &[("IDENTITY_VERIFY_KEY_FILES", &next)]).await;
    let etag = before.header("etag").unwrap();
    let after = get(addr, "/.well-known/jwks.json", &[("If-None-Match", etag)]).await;
    assert_eq!(after.status, 200, "the cached copy is stale");
    assert_ne!(after.header("etag"), Some(etag));
    assert_eq!(after.json()["keys"].as_array().unwrap().len(), 2);
}
