//! The plain-HTTP side of the service, for what cannot speak gRPC: `GET /.well-known/jwks.json`
//! (the keys GetJwks returns, as an RFC 7517 JWK set) and `GET /.well-known/openid-configuration`
//! (issuer, `jwks_uri`, signing algorithms) for gateways and JOSE libraries, and `/metrics` when
//! it shares this listener. Both documents are built once at start (the keys only change with a
//! restart), served with a strong `ETag` and `Cache-Control: max-age` [`KEYS_MAX_AGE`]; a
//! matching `If-None-Match` gets 304. Connections are bounded like the gRPC listeners'.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use identity_contract::PublicJwk;
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use crate::connections::{Connection, ConnectionLimits, Handshake, Incoming};

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How long a gateway or library may cache the key set. The rotation runbook waits at least this
/// long between publishing a new key and signing with it, so every cache holds the new key
/// before a token needs it (docs/operations.md, "Signing-key rotation"). Envoy's `remote_jwks`
/// caches for 5 minutes by default too.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(300);

/// One document as it is served: its bytes and their strong validator.
#[derive(Clone)]
struct Document {
    body: axum::body::Bytes,
    etag: HeaderValue,
}

impl Document {
    fn json(value: &serde_json::Value) -> Self {
        let body = axum::body::Bytes::from(value.to_string());
        let digest = Sha256::digest(&body);
        // 128 bits of the digest: a validator, not a security boundary.
        let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]));
        let etag = HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Self { body, etag }
    }

    /// 304 when `If-None-Match` names this document's tag (or `*`), else the document.
    fn respond(&self, request: &HeaderMap) -> Response {
        let cache_control = HeaderValue::from_str(&format!("public, max-age={}", KEYS_MAX_AGE.as_secs()))
            .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
        let headers = [(header::ETAG, self.etag.clone()), (header::CACHE_CONTROL, cache_control)];
        if not_modified(request, &self.etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let content_type = (header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        (StatusCode::OK, headers, [content_type], Body::from(self.body.clone())).into_response()
    }
}

/// RFC 9110 §13.1.2: `If-None-Match` matches with the weak comparison, over every tag listed in
/// every such header.
fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
    })
}

/// The two well-known documents.
#[derive(Clone)]
pub struct WellKnown {
    jwks: Arc<Document>,
    discovery: Arc<Document>,
}

impl WellKnown {
    /// The key set of `keys` (as GetJwks publishes them, signing key first) and the discovery
    /// document naming `issuer`, the key set's absolute URL under `public_url` and the
    /// algorithms of those keys.
    pub fn new(keys: &[PublicJwk], issuer: &str, public_url: &str) -> Self {
        let jwks = serde_json::json!({ "keys": keys.iter().map(PublicJwk::to_jwk).collect::<Vec<_>>() });
        let mut algorithms: Vec<&str> = Vec::new();
        for key in keys {
            if !algorithms.contains(&key.algorithm_name()) {
                algorithms.push(key.algorithm_name());
            }
        }
        // What a resource server needs. There is no standard member for the algorithms of access
        // tokens; OIDC libraries read `id_token_signing_alg_values_supported`, so it names them.
        let discovery = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", public_url.trim_end_matches('/')),
            "id_token_signing_alg_values_supported": algorithms,
        });
        Self { jwks: Arc::new(Document::json(&jwks)), discovery: Arc::new(Document::json(&discovery)) }
    }
}

/// The routes this listener serves: the well-known documents, `/metrics`, or both.
pub fn router(well_known: Option<WellKnown>, metrics: Option<PrometheusHandle>) -> Router {
    let mut router = Router::new();
    if let Some(well_known) = well_known {
        let (jwks, discovery) = (well_known.jwks, well_known.discovery);
        router = router
            .route(JWKS_PATH, get(move |headers: HeaderMap| std::future::ready(jwks.respond(&headers))))
            .route(
                DISCOVERY_PATH,
                get(move |headers: HeaderMap| std::future::ready(discovery.respond(&headers))),
            );
    }
    if let Some(handle) = metrics {
        router = router.route("/metrics", get(move || std::future::ready(handle.render())));
    }
    router
}

/// Serves `router` on `listener` until `shutdown` completes, with the connection limits of the
/// gRPC listeners (a silent connection is closed after the handshake timeout, at most so many
/// open in all and per client). `name` labels the connection metrics.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let local_addr = listener.local_addr();
    // A plain-HTTP request line is longer than the 24 bytes the handshake deadline waits for.
    let incoming =
        Limited { incoming: Incoming::new(listener, limits, Handshake::Plaintext, name), local_addr };
    if let Err(error) = axum::serve(incoming, router).with_graceful_shutdown(shutdown).await {
        tracing::warn!(%error, listener = name, "HTTP server stopped");
    }
}

/// [`Incoming`] as an axum listener.
struct Limited {
    incoming: Incoming,
    local_addr: io::Result<SocketAddr>,
}

impl axum::serve::Listener for Limited {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // `Incoming` handles accept errors itself and never ends.
            if let Some(Ok(connection)) = self.incoming.next().await {
                let peer = connection.peer().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                return (connection, peer);
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local_addr {
            Ok(addr) => Ok(*addr),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_the_weak_comparison_over_every_listed_tag() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            }
            not_modified(&headers, &etag)
        };
        assert!(with(&["\"abc\""]));
        assert!(with(&["W/\"abc\""]));
        assert!(with(&["\"x\", \"abc\""]));
        assert!(with(&["\"x\"", "\"abc\""]));
        assert!(with(&["*"]));
        assert!(!with(&[]));
        assert!(!with(&["\"abcd\""]));
        assert!(!with(&["abc"]));
    }
}
