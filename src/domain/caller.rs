//! Who calls the service-facing RPCs (WatchRevocations today; the admin API and the user-event
//! stream later) and what they may do: a closed set of [`Permission`]s, the [`Credential`] a
//! call presents (a client certificate, a service API key, or later a person's access token),
//! and the [`Caller`] it authenticates as. Parsing and comparison only; checking a credential
//! against the allow-list and the key table is the service's job.

use std::{collections::BTreeSet, fmt};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{FieldViolation, UserId};

/// What a service-facing caller may do. Closed: a new right is a new variant, a migration of
/// nothing (keys store names) and a line in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// The admin API (not built yet).
    Admin,
    /// WatchUserEvents (not built yet).
    WatchEvents,
    /// WatchRevocations.
    WatchRevocations,
}

impl Permission {
    pub const ALL: [Self; 3] = [Self::Admin, Self::WatchEvents, Self::WatchRevocations];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::WatchEvents => "watch_events",
            Self::WatchRevocations => "watch_revocations",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|p| p.as_str() == text).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown permission {text:?} (known: {})", known.join(", "))
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions, kept sorted so that its text form (`admin,watch_revocations`) is
/// canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(BTreeSet<Permission>);

impl Permissions {
    pub fn contains(&self, permission: Permission) -> bool {
        self.0.contains(&permission)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    /// A comma-separated list (`watch_revocations,admin`); blanks around names are ignored, an
    /// unknown name or an empty list is an error.
    pub fn parse_list(text: &str) -> Result<Self, String> {
        let permissions: Self = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Permission::parse)
            .collect::<Result<_, _>>()?;
        if permissions.is_empty() {
            return Err("names no permission".into());
        }
        Ok(permissions)
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Permission::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// The name of a service API key: what audit events and `service-key list` show, never the key.
/// Lower-case ASCII letters, digits, `.`, `_` and `-`, 1 to 64 characters, so that it is safe in
/// a log line and a shell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKeyName(String);

impl ServiceKeyName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(FieldViolation::new(
                field,
                format!("must be 1 to {} characters of a-z, 0-9, '.', '_' and '-'", Self::MAX_LEN),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A name read back from the database, where only parsed names are written.
    pub(crate) fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service API key: `idk_` and 256 random bits in base64url. The prefix makes it
/// recognisable (to secret scanners, and to the server, which never mistakes it for a JWT).
/// Shown once when created; the database keeps only its [`ServiceKeyDigest`]. `Debug` hides it.
#[derive(Clone)]
pub struct ServiceKey(SecretString);

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceKey(..)")
    }
}

impl ServiceKey {
    pub const PREFIX: &'static str = "idk_";
    /// `idk_` and 43 base64url characters (32 bytes, unpadded).
    const LEN: usize = 4 + 43;

    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        Self(SecretString::from(format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(bytes))))
    }

    /// A key as presented; `None` unless it has the shape of one of ours (prefix, length,
    /// alphabet), so that garbage is refused without a database lookup. Whether it is a real
    /// key is for the lookup by digest to say.
    pub fn presented(raw: &str) -> Option<Self> {
        let well_formed = raw.len() == Self::LEN
            && raw.strip_prefix(Self::PREFIX).is_some_and(|body| {
                body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        well_formed.then(|| Self(SecretString::from(raw.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// SHA-256 of the key: what is stored, and what a presented key is looked up by (an index
    /// lookup, so no comparison of secrets whose timing could leak them).
    pub fn digest(&self) -> ServiceKeyDigest {
        ServiceKeyDigest(Sha256::digest(self.expose().as_bytes()).into())
    }
}

/// SHA-256 of a [`ServiceKey`], as the `service_keys` table keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceKeyDigest([u8; 32]);

impl ServiceKeyDigest {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ServiceKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceKeyDigest(..)")
    }
}

/// The names a verified client certificate carries, as mutual TLS presented it: its subject's
/// common name and its DNS and URI (e.g. SPIFFE) subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
}

impl CertificateNames {
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.common_name.iter().chain(&self.dns_names).chain(&self.uris).map(String::as_str)
    }
}

/// The client-certificate names let in, each with its permissions: what
/// `IDENTITY_MTLS_CALLERS` says. A certificate matches an entry when its subject common name or
/// one of its DNS or URI subject alternative names equals the entry's name exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedCertificates(Vec<(String, Permissions)>);

impl AllowedCertificates {
    /// `NAME=PERMISSION[,PERMISSION]` entries separated by `;`, e.g.
    /// `spiffe://prod/ns/shop/sa/orders=watch_revocations; billing.internal=watch_revocations,admin`.
    /// The name ends at the entry's last `=`, so a URI may contain one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, permissions)) = entry.rsplit_once('=') else {
                return Err(format!("{entry:?} is not NAME=PERMISSION[,PERMISSION]"));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{entry:?} names no certificate"));
            }
            if entries.iter().any(|(known, _): &(String, Permissions)| known == name) {
                return Err(format!("{name:?} is listed twice"));
            }
            let permissions =
                Permissions::parse_list(permissions).map_err(|why| format!("{name:?}: {why}"))?;
            entries.push((name.to_owned(), permissions));
        }
        Ok(Self(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first entry one of the certificate's names matches: the name it is known by, and
    /// its permissions.
    pub fn matching(&self, certificate: &CertificateNames) -> Option<(&str, &Permissions)> {
        self.0
            .iter()
            .find(|(name, _)| certificate.all().any(|presented| presented == name))
            .map(|(name, permissions)| (name.as_str(), permissions))
    }
}

impl fmt::Display for AllowedCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<_> =
            self.0.iter().map(|(name, permissions)| format!("{name}={permissions}")).collect();
        f.write_str(&entries.join(";"))
    }
}

/// What a call presented to say who is calling.
#[derive(Debug)]
pub enum Credential {
    /// Nothing: no API key and no client certificate.
    None,
    /// A client certificate the TLS layer verified against `IDENTITY_TLS_CLIENT_CA_FILE`.
    Certificate(CertificateNames),
    /// `authorization: Bearer idk_…`.
    ServiceKey(ServiceKey),
    /// `authorization: Bearer <anything else>`: a person's access token. The seam for the admin
    /// role: today no token carries a permission.
    AccessToken(SecretString),
}

/// How a caller proved who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// An allow-listed certificate name (`IDENTITY_MTLS_CALLERS`).
    Certificate,
    /// A service key; its digest lets a long stream re-check that the key still stands.
    ServiceKey(ServiceKeyDigest),
    /// A person, by access token.
    User(UserId),
}

impl CallerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Certificate => "mtls",
            Self::ServiceKey(_) => "service_key",
            Self::User(_) => "user",
        }
    }
}

impl fmt::Debug for CallerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller: its name (the matched certificate name, the key's name, or the
/// user id), how it authenticated, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub kind: CallerKind,
    pub permissions: Permissions,
}

impl Caller {
    /// Who this caller is across calls, for per-caller limits: the kind and the name, so that a
    /// key and a certificate that happen to share a name are counted apart.
    pub fn id(&self) -> (&'static str, &str) {
        (self.kind.as_str(), &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_to_a_canonical_sorted_list() {
        let parsed = Permissions::parse_list(" watch_revocations, admin ,admin").unwrap();
        assert_eq!(parsed.to_string(), "admin,watch_revocations");
        assert!(parsed.contains(Permission::Admin) && !parsed.contains(Permission::WatchEvents));
        assert!(Permissions::parse_list("root").unwrap_err().contains("unknown permission"));
        assert!(Permissions::parse_list(" , ").is_err());
    }

    #[test]
    fn the_allow_list_matches_a_common_name_or_any_san_exactly() {
        let list = AllowedCertificates::parse(
            " spiffe://prod/ns/shop/sa/orders?x=1=watch_revocations ;billing=admin, watch_revocations;",
        )
        .unwrap();
        assert_eq!(
            list.to_string(),
            "spiffe://prod/ns/shop/sa/orders?x=1=watch_revocations;billing=admin,watch_revocations"
        );
        let by_uri = CertificateNames {
            uris: vec!["spiffe://prod/ns/shop/sa/orders?x=1".into()],
            ..Default::default()
        };
        assert_eq!(list.matching(&by_uri).unwrap().0, "spiffe://prod/ns/shop/sa/orders?x=1");
        let by_cn = CertificateNames { common_name: Some("billing".into()), ..Default::default() };
        assert!(list.matching(&by_cn).unwrap().1.contains(Permission::Admin));
        let other = CertificateNames { dns_names: vec!["billing.evil".into()], ..Default::default() };
        assert!(list.matching(&other).is_none());
        for bad in ["billing", "=admin", "billing=root", "a=admin;a=admin", "billing="] {
            assert!(AllowedCertificates::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AllowedCertificates::parse("").unwrap().is_empty());
    }

    #[test]
    fn key_names_are_plain() {
        assert!(ServiceKeyName::parse("name", "billing-api.v2_1").is_ok());
        for bad in ["", "Billing", "a b", "é", "x;rm", &"a".repeat(65)] {
            assert!(ServiceKeyName::parse("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_prefixed_256_bit_secrets_looked_up_by_digest() {
        let key = ServiceKey::generate();
        let text = key.expose().to_owned();
        assert!(text.starts_with("idk_"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&text[4..]).unwrap().len(), 32);
        assert_ne!(text, ServiceKey::generate().expose());
        assert_eq!(ServiceKey::presented(&text).unwrap().digest(), key.digest());
        assert!(!format!("{key:?}{:?}", key.digest()).contains(&text[4..]));
        assert!(ServiceKey::presented("eyJhbGciOi.x.y").is_none());
        assert!(ServiceKey::presented(&format!("idk_{}", "a".repeat(200))).is_none());
        assert!(ServiceKey::presented(&format!("idk_{}", "a".repeat(42))).is_none());
        assert!(ServiceKey::presented(&format!("idk_{}+", "a".repeat(42))).is_none());
        assert!(ServiceKey::presented(&format!("idk_{}", "a".repeat(43))).is_some());
    }
}
