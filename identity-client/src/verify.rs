//! Local verification of an access token by the contract's rules (`identity_contract`: header,
//! the signature by its key's own algorithm, issuer, audience, claims, validity window with the
//! configured leeway), with keys from [`KeySet`] and a bounded cache of tokens already verified.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use identity_contract::{AccessTokenRules, key_id};
use quick_cache::sync::Cache;

use crate::{claims::VerifiedClaims, config::AuthConfig, error::Rejection, jwks::KeySet};

pub(crate) struct Verifier {
    keys: KeySet,
    /// Verified tokens by their exact text. An entry is dropped when found expired, and the
    /// whole cache when a key stops verifying.
    cache: Option<Cache<String, Arc<VerifiedClaims>>>,
    rules: AccessTokenRules,
}

impl Verifier {
    pub fn new(keys: KeySet, config: &AuthConfig) -> Self {
        Self {
            keys,
            cache: (config.token_cache_size > 0).then(|| Cache::new(config.token_cache_size)),
            rules: AccessTokenRules::new(
                &config.issuer,
                &config.audience,
                config.leeway,
                config.max_token_lifetime,
            ),
        }
    }

    /// Checks everything but revocation. `now` is seconds since the Unix epoch.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedClaims>, Rejection> {
        if let Some(cache) = &self.cache
            && let Some(claims) = cache.get(token)
        {
            if let Err(rejection) = self.check_window(&claims, now) {
                if rejection == Rejection::Token(identity_contract::Rejected::Expired) {
                    cache.remove(token);
                }
                return Err(rejection);
            }
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_signed(token).await?);
        self.check_window(&claims, now)?;
        if let Some(cache) = &self.cache {
            cache.insert(token.to_owned(), Arc::clone(&claims));
        }
        Ok(claims)
    }

    async fn verify_signed(&self, token: &str) -> Result<VerifiedClaims, Rejection> {
        let kid = key_id(token)?;
        let key = match self.keys.get(&kid) {
            Some(key) => key,
            None => {
                let (key, refreshed) = self.keys.get_or_refetch(&kid).await;
                if refreshed.is_some_and(|refreshed| refreshed.removed_any) {
                    self.forget_verified();
                }
                key.ok_or(Rejection::Token(identity_contract::Rejected::UnknownKey))?
            }
        };
        Ok(VerifiedClaims::new(self.rules.decode(token, &key)?))
    }

    fn check_window(&self, claims: &VerifiedClaims, now: i64) -> Result<(), Rejection> {
        Ok(self.rules.check_window(claims, now)?)
    }

    /// Fetches the key set again (the periodic refresh).
    pub async fn refresh_keys(&self) -> Result<(), crate::Error> {
        if self.keys.refresh().await?.removed_any {
            self.forget_verified();
        }
        Ok(())
    }

    /// Drops every cached verification: some were made with a key that no longer verifies.
    fn forget_verified(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}
