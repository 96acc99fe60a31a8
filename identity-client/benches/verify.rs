//! Local verification cost per request, in process: the real identity server runs in-process
//! (SQLite in a temp dir) only to publish its keys; tokens are signed here with its key file.
//!
//!     cargo bench -p identity-client --bench verify
//!
//! Scenarios, each printed as ns/op:
//! - repeated token: the same token every time (a cache hit after the first);
//! - new token each time: a different token every time (signature check + cache insert);
//! - no cache: the same token with the cache off (signature check every time);
//! - through the layer: the whole `IdentityAuthService` around a no-op inner service, for a
//!   repeated and for a new token.

use std::{
    convert::Infallible,
    future::poll_fn,
    time::{Duration, Instant},
};

use identity::testing::TestServer;
use identity_client::{
    AuthConfig, IdentityAuth, ServiceKey,
    proto::{GetJwksRequest, TokenServiceClient},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tower::{Layer, Service};

const REPEATS: usize = 200_000;
const NEW_TOKENS: usize = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = tempfile::tempdir()?;
    let mut server = TestServer::start(&identity::testing::config(data_dir.path(), [])?).await?;
    let url = server.url();
    let name = identity::domain::ServiceKeyName::parse("name", "bench").map_err(|v| v.description)?;
    let permissions = [identity::domain::Permission::WatchRevocations].into_iter().collect();
    let key = server.identity().service_keys().create(&name, &permissions).await?.ok_or("key name taken")?;
    let config = AuthConfig { service_key: Some(ServiceKey::new(key.expose())), ..AuthConfig::default() };

    let jwks = TokenServiceClient::new(server.channel()).get_jwks(GetJwksRequest {}).await?.into_inner();
    let kid = jwks.keys.first().ok_or("no key")?.kid.clone();
    let key = EncodingKey::from_ed_pem(&std::fs::read(data_dir.path().join("signing_key.pem"))?)?;
    let sign = |_: usize| -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let claims = json!({
            "iss": "identity", "sub": uuid::Uuid::new_v4().to_string(), "aud": "identity",
            "exp": now + 900, "iat": now, "nbf": now, "jti": uuid::Uuid::new_v4().to_string(),
            "sid": uuid::Uuid::new_v4().to_string(), "email": "bench@example.com", "name": "Bench User",
        });
        let header =
            Header { typ: Some("at+jwt".into()), kid: Some(kid.clone()), ..Header::new(Algorithm::EdDSA) };
        jsonwebtoken::encode(&header, &claims, &key)
    };
    let token = sign(0)?;
    let fresh_for_verify: Vec<String> = (0..NEW_TOKENS).map(sign).collect::<Result<_, _>>()?;
    let fresh_for_layer: Vec<String> = (0..NEW_TOKENS).map(sign).collect::<Result<_, _>>()?;

    let auth = IdentityAuth::connect_to(&url, config.clone()).await?;
    let uncached = IdentityAuth::connect_to(&url, AuthConfig { token_cache_size: 0, ..config }).await?;
    for handle in [&auth, &uncached] {
        if !handle.wait_until_synchronised(Duration::from_secs(10)).await {
            return Err("revocation stream did not catch up".into());
        }
    }
    println!("identity-client local verification ({} token bytes), ns/op:", token.len());

    auth.verify(&token).await?;
    let started = Instant::now();
    for _ in 0..REPEATS {
        std::hint::black_box(auth.verify(std::hint::black_box(&token)).await?);
    }
    report("verify, repeated token (cache hit)", started.elapsed(), REPEATS);

    let started = Instant::now();
    for token in &fresh_for_verify {
        std::hint::black_box(auth.verify(token).await?);
    }
    report("verify, new token each time (signature)", started.elapsed(), NEW_TOKENS);

    let started = Instant::now();
    for _ in 0..NEW_TOKENS {
        std::hint::black_box(uncached.verify(&token).await?);
    }
    report("verify, cache off (signature)", started.elapsed(), NEW_TOKENS);

    let mut layered = auth.layer().layer(tower::service_fn(|request: http::Request<()>| async move {
        let found = request.extensions().get::<identity_client::VerifiedClaims>().is_some();
        Ok::<_, Infallible>(http::Response::new(found))
    }));
    let mut call = async |token: &str| -> Result<bool, Infallible> {
        poll_fn(|cx| layered.poll_ready(cx)).await?;
        let request = http::Request::builder()
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap_or_default();
        Ok(layered.call(request).await?.into_body())
    };
    if !call(&token).await? {
        return Err("the layer refused a good token".into());
    }
    let started = Instant::now();
    for _ in 0..REPEATS {
        std::hint::black_box(call(&token).await?);
    }
    report("layer, repeated token (cache hit)", started.elapsed(), REPEATS);
    let started = Instant::now();
    for token in &fresh_for_layer {
        std::hint::black_box(call(token).await?);
    }
    report("layer, new token each time (signature)", started.elapsed(), NEW_TOKENS);

    server.stop().await?;
    Ok(())
}

fn report(name: &str, elapsed: Duration, ops: usize) {
    let ns = elapsed.as_nanos() as f64 / ops as f64;
    println!("  {name:<42} {ns:>10.0} ns/op  ({ops} ops in {elapsed:.2?})");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}
