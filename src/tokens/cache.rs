//! Tokens whose signature and claims were already verified, so that a repeat validation costs a
//! lookup instead of an Ed25519 check (as Envoy's JWT filter does). Expiry and revocation are
//! still checked on every call by the caller.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::AccessClaims;

/// Claims whose signature and contents were verified (their ids are typed, so nothing is left
/// to parse); the window and revocation are checked on every use.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
}

pub struct VerifiedTokenCache {
    /// Keyed by the whole token: no second hash to compute, and no collision to reason about.
    entries: Option<Cache<String, Arc<VerifiedToken>>>,
}

impl VerifiedTokenCache {
    /// A cache of at most `capacity` tokens; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        Self { entries: (capacity > 0).then(|| Cache::new(capacity)) }
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        self.entries.as_ref()?.get(token)
    }

    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        if let Some(entries) = &self.entries {
            entries.insert(token.to_owned(), verified);
        }
    }
}
