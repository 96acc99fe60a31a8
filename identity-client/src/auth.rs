//! The handle a service holds: verifier, revocation set and their background tasks.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, header::AUTHORIZATION};
use tokio::task::AbortHandle;
use tonic::transport::{Channel, Endpoint};

use crate::{
    claims::VerifiedClaims,
    config::AuthConfig,
    error::{Error, Rejection},
    jwks::KeySet,
    layer::IdentityAuthLayer,
    proto::TokenServiceClient,
    revocations::{Revocations, keep_watching},
    verify::{Verifier, unix_now},
};

/// Verifies access tokens issued by an `identity` server, locally. Cheap to clone; the
/// background tasks (revocation stream, periodic key refresh) stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct IdentityAuth {
    shared: Arc<Shared>,
}

struct Shared {
    verifier: Arc<Verifier>,
    revocations: Arc<Revocations>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for IdentityAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityAuth").field("synchronised", &self.is_synchronised()).finish_non_exhaustive()
    }
}

impl IdentityAuth {
    /// Connects to the identity server at `url` (`http://host:port`), with HTTP/2 keepalive so
    /// that a dead connection is noticed. For TLS or a load-balanced channel, build the
    /// [`Channel`] yourself and call [`IdentityAuth::connect`].
    pub async fn connect_to(url: &str, config: AuthConfig) -> Result<Self, Error> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(Error::InvalidAddress)?
            .connect_timeout(config.rpc_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Self::connect(channel, config).await
    }

    /// Fetches the signing keys (GetJwks; fails if the server cannot be reached or publishes
    /// none), then starts watching revocations in the background. Must be called within a
    /// tokio runtime. The handle does not wait for the revocation stream to catch up: see
    /// [`IdentityAuth::wait_until_synchronised`] and [`crate::RevocationPolicy`].
    pub async fn connect(channel: Channel, config: AuthConfig) -> Result<Self, Error> {
        let client = TokenServiceClient::new(channel);
        // Checked before anything starts, so a bad key fails here rather than in every retry.
        let authorization = config
            .service_key
            .as_ref()
            .map(|key| {
                tonic::metadata::MetadataValue::try_from(format!("Bearer {}", key.expose()))
                    .map(|mut value| {
                        value.set_sensitive(true);
                        value
                    })
                    .map_err(|_| Error::InvalidServiceKey)
            })
            .transpose()?;
        let keys = KeySet::fetch(client.clone(), config.jwks_refresh_interval, config.rpc_timeout).await?;
        let verifier = Arc::new(Verifier::new(keys, &config));
        let revocations = Arc::new(Revocations::new(config.revocation_policy));
        let watcher =
            tokio::spawn(keep_watching(Arc::clone(&revocations), client, authorization, config.rpc_timeout));
        let refresher = tokio::spawn(refresh_keys_periodically(Arc::clone(&verifier), config.jwks_max_age));
        Ok(Self {
            shared: Arc::new(Shared {
                verifier,
                revocations,
                tasks: vec![watcher.abort_handle(), refresher.abort_handle()],
            }),
        })
    }

    /// A tower layer for a tonic server (or for one of its services) that lets through only
    /// requests with a good bearer token.
    pub fn layer(&self) -> IdentityAuthLayer {
        IdentityAuthLayer::new(self.clone())
    }

    /// Whether the revocation stream is connected and caught up, so that every revocation is
    /// known. For a readiness check.
    pub fn is_synchronised(&self) -> bool {
        self.shared.revocations.is_synced()
    }

    /// Follows [`IdentityAuth::is_synchronised`]: the receiver sees every change, e.g. to
    /// drive a grpc.health.v1 entry.
    pub fn watch_synchronised(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.revocations.subscribe()
    }

    /// Waits until [`IdentityAuth::is_synchronised`] holds, at most `timeout`; returns whether
    /// it does.
    pub async fn wait_until_synchronised(&self, timeout: Duration) -> bool {
        let mut changes = self.shared.revocations.subscribe();
        tokio::time::timeout(timeout, changes.wait_for(|synced| *synced))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Checks an access token: header, signature, issuer, audience, validity window,
    /// revocation and the revocation policy. What the layer does for each request.
    pub async fn verify(&self, token: &str) -> Result<VerifiedClaims, Rejection> {
        let now = unix_now();
        let claims = self.shared.verifier.verify(token, now).await?;
        self.shared.revocations.check(claims.sid.as_uuid(), now)?;
        Ok(VerifiedClaims::clone(&claims))
    }

    /// Finds the bearer token in `headers` (`authorization: Bearer <token>`, the scheme in any
    /// case) and checks it as [`IdentityAuth::verify`] does.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<VerifiedClaims, Rejection> {
        let token = bearer_token(headers)?;
        self.verify(token).await
    }
}

/// The token of the request's single `authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Rejection::MissingToken)?;
    if values.next().is_some() {
        return Err(Rejection::Malformed);
    }
    let value = value.to_str().map_err(|_| Rejection::Malformed)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::NotBearer);
    }
    let token = token.trim_start();
    if token.is_empty() {
        return Err(Rejection::MissingToken);
    }
    Ok(token)
}

async fn refresh_keys_periodically(verifier: Arc<Verifier>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = verifier.refresh_keys().await {
            tracing::warn!(%error, "periodic key set refresh failed; keeping the cached keys");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["BEARER  abc "])), Ok("abc"));
    }

    #[test]
    fn anything_but_one_bearer_token_is_refused() {
        assert_eq!(bearer_token(&headers(&[])), Err(Rejection::MissingToken));
        assert_eq!(bearer_token(&headers(&["Bearer "])), Err(Rejection::NotBearer));
        assert_eq!(bearer_token(&headers(&["Bearer"])), Err(Rejection::NotBearer));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwYXNz"])), Err(Rejection::NotBearer));
        assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer b"])), Err(Rejection::Malformed));
    }
}
