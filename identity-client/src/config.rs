//! How the layer verifies: issuer and audience, clock leeway, key and token caching, and what
//! to do while the revocation stream is down.

use std::time::Duration;

/// Settings of an [`crate::IdentityAuth`]. `AuthConfig::default()` matches a default `identity`
/// server; override fields with struct update syntax:
///
/// ```
/// use std::time::Duration;
/// use identity_client::{AuthConfig, RevocationPolicy};
///
/// use identity_client::ServiceKey;
///
/// let config = AuthConfig {
///     audience: "orders".into(),
///     service_key: Some(ServiceKey::new("idk_…")),
///     revocation_policy: RevocationPolicy::FailClosed,
///     ..AuthConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Required `iss` (the server's `IDENTITY_ISSUER`). Default `identity`.
    pub issuer: String,
    /// Required `aud` (the server's `IDENTITY_AUDIENCE`). Default `identity`.
    pub audience: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default 0.
    pub leeway: Duration,
    /// Longest lifetime (`exp - iat`) a token may have; longer ones are refused as forged or
    /// misissued. Set it to the server's `IDENTITY_ACCESS_TOKEN_TTL` for the tightest check.
    /// Default 24 h, the longest TTL the server can be configured with.
    pub max_token_lifetime: Duration,
    /// When a token names a key id the cached key set lacks, the set is fetched again, but at
    /// most once per this interval (and one fetch at a time), so that a flood of made-up key
    /// ids cannot turn into a flood of GetJwks calls. Default 5 s.
    pub jwks_refresh_interval: Duration,
    /// The key set is also fetched again this often, so that a key the server stopped
    /// publishing stops verifying here too. Default 5 min.
    pub jwks_max_age: Duration,
    /// Verified tokens remembered so that a repeat skips the signature check (`exp` and
    /// revocation are still checked on every call); 0 turns the cache off. Default 10 000.
    pub token_cache_size: usize,
    /// What to do while the revocation stream is not connected and caught up.
    pub revocation_policy: RevocationPolicy,
    /// Deadline of each GetJwks call and of opening the revocation stream. Default 5 s.
    pub rpc_timeout: Duration,
    /// The credential `WatchRevocations` needs: a service key made with `identity service-key
    /// create NAME --permission watch_revocations`, sent as `authorization: Bearer idk_…`.
    /// `None` (the default) sends no key: right only where this service's client certificate
    /// is allow-listed (`IDENTITY_MTLS_CALLERS`), with the TLS identity set on the [`Channel`]
    /// given to [`crate::IdentityAuth::connect`].
    ///
    /// [`Channel`]: tonic::transport::Channel
    pub service_key: Option<ServiceKey>,
}

/// A service API key (`idk_…`). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceKey(String);

impl ServiceKey {
    /// The key as `identity service-key create` printed it (surrounding whitespace, such as
    /// the newline of a key file, is dropped).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().trim().to_owned())
    }

    /// Reads a key file written by `identity service-key create NAME --out FILE`.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        std::fs::read_to_string(path).map(Self::new)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey(..)")
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "identity".into(),
            audience: "identity".into(),
            leeway: Duration::ZERO,
            max_token_lifetime: identity_contract::MAX_ACCESS_TOKEN_LIFETIME,
            jwks_refresh_interval: Duration::from_secs(5),
            jwks_max_age: Duration::from_secs(300),
            token_cache_size: 10_000,
            revocation_policy: RevocationPolicy::default(),
            rpc_timeout: Duration::from_secs(5),
            service_key: None,
        }
    }
}

/// What the layer does while it cannot be sure it knows every revocation: before the
/// `WatchRevocations` stream has first caught up, and whenever it is broken (the identity
/// server down or unreachable, or silent for 30 s although it sends a heartbeat every 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationPolicy {
    /// Refuse every token until the stream is connected and caught up again. A logged-out
    /// session is never accepted, at the price of an outage whenever `identity` is down.
    FailClosed,
    /// Keep accepting valid tokens (checked against the revocations known so far) until
    /// `max_staleness` has passed since the last message from the stream (or, before the
    /// first, since [`crate::IdentityAuth::connect`]), then refuse every token until the
    /// stream has caught up again. A revocation made during the outage may go unnoticed for
    /// that long.
    FailOpen { max_staleness: Duration },
}

impl Default for RevocationPolicy {
    /// `FailOpen` with 30 s of staleness.
    fn default() -> Self {
        Self::FailOpen { max_staleness: Duration::from_secs(30) }
    }
}
