//! The server's token verification keys (GetJwks), cached by key id, fetched again when a token
//! names an unknown one (rate-limited, one fetch at a time) and periodically. Which published
//! keys are usable is the contract's rule ([`PublicJwk::from_members`]).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use identity_contract::{JwkMembers, PublicJwk, VerificationKey};
use tokio::{sync::Mutex, time::Instant};
use tonic::transport::Channel;

use crate::{
    error::Error,
    proto::{GetJwksRequest, JsonWebKey, TokenServiceClient},
};

type Keys = HashMap<String, Arc<VerificationKey>>;

pub(crate) struct KeySet {
    client: TokenServiceClient<Channel>,
    keys: RwLock<Arc<Keys>>,
    /// When the last fetch for an unknown key id started; held across that fetch, so that
    /// concurrent requests with the same new key id wait for one fetch instead of each making
    /// their own.
    last_refetch: Mutex<Option<Instant>>,
    refetch_interval: Duration,
    rpc_timeout: Duration,
}

/// What fetching the key set again changed.
pub(crate) struct Refreshed {
    /// Some key that verified before no longer does.
    pub removed_any: bool,
}

impl KeySet {
    /// Fetches the key set once; fails when the server cannot be reached or publishes no key.
    pub async fn fetch(
        client: TokenServiceClient<Channel>,
        refetch_interval: Duration,
        rpc_timeout: Duration,
    ) -> Result<Self, Error> {
        let keys = fetch_keys(&client, rpc_timeout).await?;
        Ok(Self {
            client,
            keys: RwLock::new(Arc::new(keys)),
            last_refetch: Mutex::new(None),
            refetch_interval,
            rpc_timeout,
        })
    }

    pub fn get(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.keys.read().ok().and_then(|keys| keys.get(kid).cloned())
    }

    /// The key for `kid`, fetching the key set again first if no fetch for an unknown key
    /// started within the refresh interval. `None` when the key is still unknown.
    pub async fn get_or_refetch(&self, kid: &str) -> (Option<Arc<VerificationKey>>, Option<Refreshed>) {
        let mut last = self.last_refetch.lock().await;
        // Another request may have fetched it while this one waited for the lock.
        if let Some(key) = self.get(kid) {
            return (Some(key), None);
        }
        if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return (None, None);
        }
        *last = Some(Instant::now());
        let refreshed = match self.refresh().await {
            Ok(refreshed) => Some(refreshed),
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the key set for an unknown key id");
                None
            }
        };
        (self.get(kid), refreshed)
    }

    /// Fetches the key set and replaces the cached one with it.
    pub async fn refresh(&self) -> Result<Refreshed, Error> {
        let fresh = fetch_keys(&self.client, self.rpc_timeout).await?;
        let Ok(mut keys) = self.keys.write() else {
            return Ok(Refreshed { removed_any: false });
        };
        let removed_any = keys.keys().any(|kid| !fresh.contains_key(kid));
        let added = fresh.keys().filter(|kid| !keys.contains_key(*kid)).count();
        if removed_any || added > 0 {
            tracing::info!(keys = fresh.len(), added, removed_any, "token signing keys changed");
        }
        *keys = Arc::new(fresh);
        Ok(Refreshed { removed_any })
    }
}

async fn fetch_keys(client: &TokenServiceClient<Channel>, timeout: Duration) -> Result<Keys, Error> {
    let mut request = tonic::Request::new(GetJwksRequest {});
    request.set_timeout(timeout);
    let response = tokio::time::timeout(timeout, client.clone().get_jwks(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("GetJwks timed out"))
        .and_then(|result| result)
        .map_err(|status| Error::Jwks(Box::new(status)))?;
    let keys: Keys = response.into_inner().keys.iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err(Error::NoUsableKeys);
    }
    Ok(keys)
}

/// A signature-verification JWK of a kind the contract accepts (Ed25519, P-256, RSA of 2048
/// bits or more), pinned to its algorithm, with its key id; `None` for anything else.
fn usable_key(jwk: &JsonWebKey) -> Option<(String, Arc<VerificationKey>)> {
    let members = JwkMembers {
        kty: &jwk.kty,
        crv: &jwk.crv,
        x: &jwk.x,
        y: &jwk.y,
        n: &jwk.n,
        e: &jwk.e,
        kid: &jwk.kid,
        alg: &jwk.alg,
        key_use: &jwk.r#use,
    };
    let Some(usable) = PublicJwk::from_members(members) else {
        tracing::debug!(kid = %jwk.kid, kty = %jwk.kty, crv = %jwk.crv, alg = %jwk.alg, "ignoring a JWK that is not a usable verification key");
        return None;
    };
    let key = usable.verification_key().ok()?;
    Some((usable.kid, Arc::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(kty: &str, crv: &str, x: &str) -> JsonWebKey {
        JsonWebKey {
            kty: kty.into(),
            crv: crv.into(),
            x: x.into(),
            kid: "k1".into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
            ..JsonWebKey::default()
        }
    }

    #[test]
    fn only_verification_keys_the_contract_accepts_are_used() {
        // RFC 8037 appendix A.2.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        assert!(usable_key(&jwk("OKP", "Ed25519", x)).is_some());
        assert!(usable_key(&jwk("OKP", "X25519", x)).is_none());
        assert!(usable_key(&jwk("EC", "Ed25519", x)).is_none());
        assert!(usable_key(&jwk("OKP", "Ed25519", "short")).is_none());
        assert!(usable_key(&JsonWebKey { r#use: "enc".into(), ..jwk("OKP", "Ed25519", x) }).is_none());
        assert!(usable_key(&JsonWebKey { kid: String::new(), ..jwk("OKP", "Ed25519", x) }).is_none());
        assert!(usable_key(&JsonWebKey { alg: "HS256".into(), ..jwk("OKP", "Ed25519", x) }).is_none());
        // A P-256 point (RFC 7515 appendix A.3) is usable as ES256, and only as ES256.
        let (ex, ey) =
            ("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");
        let ec = JsonWebKey { y: ey.into(), alg: "ES256".into(), ..jwk("EC", "P-256", ex) };
        assert!(usable_key(&ec).is_some());
        assert!(usable_key(&JsonWebKey { alg: "EdDSA".into(), ..ec.clone() }).is_none());
        assert!(usable_key(&JsonWebKey { y: String::new(), ..ec }).is_none());
    }
}
