//! Local verification of an access token: header (alg, typ, kid), Ed25519 signature, issuer,
//! audience and validity window, with a bounded cache of tokens already verified.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use quick_cache::sync::Cache;

use crate::{claims::VerifiedClaims, config::AuthConfig, error::Rejection, jwks::KeySet};

/// RFC 9068 media type of a JWT access token, in the `typ` header (either spelling).
const ACCESS_TOKEN_TYPES: [&str; 2] = ["at+jwt", "application/at+jwt"];

pub(crate) struct Verifier {
    keys: KeySet,
    /// Verified tokens by their exact text. An entry is dropped when found expired, and the
    /// whole cache when a key stops verifying.
    cache: Option<Cache<String, Arc<VerifiedClaims>>>,
    validation: Validation,
    leeway: i64,
}

impl Verifier {
    pub fn new(keys: KeySet, config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // exp and nbf are checked below, on every call including cache hits, with the same
        // rule as the server (a token is expired from its `exp` second on).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            keys,
            cache: (config.token_cache_size > 0).then(|| Cache::new(config.token_cache_size)),
            validation,
            leeway: i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Checks everything but revocation. `now` is seconds since the Unix epoch.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedClaims>, Rejection> {
        if let Some(cache) = &self.cache
            && let Some(claims) = cache.get(token)
        {
            if let Err(rejection) = self.check_window(&claims, now) {
                if rejection == Rejection::Expired {
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
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|typ| ACCESS_TOKEN_TYPES.iter().any(|known| typ.eq_ignore_ascii_case(known)));
        if header.alg != Algorithm::EdDSA || !typ_ok {
            return Err(Rejection::Header);
        }
        let kid = header.kid.as_deref().ok_or(Rejection::Header)?;
        let key = match self.keys.get(kid) {
            Some(key) => key,
            None => {
                let (key, refreshed) = self.keys.get_or_refetch(kid).await;
                if refreshed.is_some_and(|refreshed| refreshed.removed_any) {
                    self.forget_verified();
                }
                key.ok_or(Rejection::UnknownKey)?
            }
        };
        jsonwebtoken::decode::<VerifiedClaims>(token, &key, &self.validation).map(|data| data.claims).map_err(
            |error| match error.kind() {
                ErrorKind::InvalidSignature => Rejection::BadSignature,
                ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
                ErrorKind::InvalidAudience => Rejection::WrongAudience,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => Rejection::Malformed,
                ErrorKind::InvalidAlgorithm => Rejection::Header,
                _ => Rejection::InvalidClaims,
            },
        )
    }

    fn check_window(&self, claims: &VerifiedClaims, now: i64) -> Result<(), Rejection> {
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(Rejection::Expired);
        }
        if now.saturating_add(self.leeway) < claims.nbf {
            return Err(Rejection::NotYetValid);
        }
        Ok(())
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
