//! Credentials in the form the database keeps them: a [`PasswordHash`] in one of the
//! [`HashScheme`]s the service can check (its own bcrypt, and the schemes of the apps users are
//! imported from), and the SHA-256 [`RefreshTokenDigest`] of a refresh token. Both are secrets to
//! the extent that their `Debug` prints nothing of them; the store takes them typed, never as
//! bare strings or bytes.

use secrecy::{ExposeSecret, SecretString};

pub use super::imported_hash::{Argon2Bounds, ImportedHashError, Pbkdf2Parts};

/// How a stored password hash is checked, and the name the `password_scheme` column and
/// `identity user hash-schemes` use for it. Every scheme but [`HashScheme::Bcrypt`] is on its way
/// out: the owner's next successful login replaces it with a bcrypt hash at the configured cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashScheme {
    /// bcrypt made by this service, of the NFKC password: checked in full, so a password bcrypt
    /// would truncate (72 bytes or more) never matches.
    Bcrypt,
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`, any cost) imported from another app, which hashed what
    /// bcrypt read of the password: its first 72 bytes. Checked the same way, so its owner gets
    /// in with the long password they have always typed.
    ImportedBcrypt,
    /// Argon2id or Argon2i in PHC format (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`).
    Argon2id,
    Argon2i,
    /// PBKDF2-HMAC-SHA256 as passlib writes it: `$pbkdf2-sha256$rounds$salt$checksum`, salt and
    /// checksum in passlib's adapted base64.
    PasslibPbkdf2Sha256,
    /// PBKDF2-HMAC-SHA256 as Django writes it: `pbkdf2_sha256$iterations$salt$base64`.
    DjangoPbkdf2Sha256,
    /// No password at all (imported from an export without hashes): nothing ever matches; the
    /// owner sets one by password reset.
    NoPassword,
}

impl HashScheme {
    pub const ALL: [Self; 7] = [
        Self::Bcrypt,
        Self::ImportedBcrypt,
        Self::Argon2id,
        Self::Argon2i,
        Self::PasslibPbkdf2Sha256,
        Self::DjangoPbkdf2Sha256,
        Self::NoPassword,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bcrypt => "bcrypt",
            Self::ImportedBcrypt => "bcrypt-imported",
            Self::Argon2id => "argon2id",
            Self::Argon2i => "argon2i",
            Self::PasslibPbkdf2Sha256 => "pbkdf2-sha256",
            Self::DjangoPbkdf2Sha256 => "django-pbkdf2-sha256",
            Self::NoPassword => "none",
        }
    }

    /// The scheme a `password_scheme` value names; `None` for a name this version does not know
    /// (written by a newer replica), whose hash is then never matched.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scheme| scheme.as_str() == name)
    }

    /// A bcrypt scheme, whose cost tells how much a check costs.
    pub fn is_bcrypt(self) -> bool {
        matches!(self, Self::Bcrypt | Self::ImportedBcrypt)
    }
}

impl std::fmt::Display for HashScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A password hash as stored, its scheme, and what text it was made of. Treated as a secret: it
/// never reaches a log line.
#[derive(Debug, Clone)]
pub struct PasswordHash {
    hash: SecretString,
    /// Made of the NFKC form of the password (every hash made now), rather than of the text as
    /// typed (hashes made before passwords were normalized, and every imported hash: the
    /// `password_normalized` column is false for them until a successful login rehashes them).
    of_normalized_text: bool,
    /// `None`: a scheme this version does not know.
    scheme: Option<HashScheme>,
}

impl PasswordHash {
    /// A bcrypt hash made now, of a normalized password.
    pub fn new(hash: String) -> Self {
        Self { hash: SecretString::from(hash), of_normalized_text: true, scheme: Some(HashScheme::Bcrypt) }
    }

    /// A hash as the database holds it, with its `password_normalized` flag and
    /// `password_scheme` name.
    pub fn from_stored(hash: String, of_normalized_text: bool, scheme: &str) -> Self {
        Self { hash: SecretString::from(hash), of_normalized_text, scheme: HashScheme::from_name(scheme) }
    }

    /// A hash written by another app, of the password as its owner typed it, recognised by its
    /// form: bcrypt, Argon2id/Argon2i (PHC), passlib's or Django's PBKDF2-SHA256. Refused when
    /// it is none of them, is malformed, or asks for more work or memory than a login may take
    /// (see [`Argon2Bounds`], [`Pbkdf2Parts::MAX_ROUNDS`]). The error names what is wrong
    /// without quoting the hash.
    pub fn parse_imported(text: &str) -> Result<Self, ImportedHashError> {
        let scheme = super::imported_hash::recognise(text)?;
        Ok(Self {
            hash: SecretString::from(text.to_owned()),
            of_normalized_text: false,
            scheme: Some(scheme),
        })
    }

    /// An account without a password: never matches anything.
    pub fn no_password() -> Self {
        Self {
            hash: SecretString::from(String::new()),
            of_normalized_text: true,
            scheme: Some(HashScheme::NoPassword),
        }
    }

    pub fn expose(&self) -> &str {
        self.hash.expose_secret()
    }

    /// `None` for a scheme this version does not know.
    pub fn scheme(&self) -> Option<HashScheme> {
        self.scheme
    }

    /// The name stored in `password_scheme`.
    pub fn scheme_name(&self) -> &'static str {
        self.scheme.map_or("unknown", HashScheme::as_str)
    }

    /// False for a hash of the password as typed: made before passwords were normalized, or
    /// imported.
    pub fn is_of_normalized_text(&self) -> bool {
        self.of_normalized_text
    }

    /// The cost the hash was made with, if it is a bcrypt hash at all.
    pub fn cost(&self) -> Option<u32> {
        if !self.scheme.is_some_and(HashScheme::is_bcrypt) {
            return None;
        }
        self.expose().parse::<bcrypt::HashParts>().ok().map(|parts| parts.get_cost())
    }
}

/// SHA-256 of a refresh token: what the sessions table keeps. A database dump therefore holds
/// nothing a client could present.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshTokenDigest([u8; 32]);

impl RefreshTokenDigest {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for RefreshTokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshTokenDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_neither_hash_nor_digest() {
        let hash = PasswordHash::new("$2b$04$abcdefghijklmnopqrstuu".into());
        assert!(!format!("{hash:?}").contains("abcdef"));
        assert_eq!(format!("{:?}", RefreshTokenDigest::from_bytes([7; 32])), "RefreshTokenDigest(..)");
        let imported = PasswordHash::parse_imported(
            "pbkdf2_sha256$1000$salt$c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
        );
        assert!(!format!("{imported:?}").contains("c2Vj"));
    }

    #[test]
    fn scheme_names_round_trip() {
        for scheme in HashScheme::ALL {
            assert_eq!(HashScheme::from_name(scheme.as_str()), Some(scheme));
        }
        assert_eq!(HashScheme::from_name("md5"), None);
        assert_eq!(PasswordHash::from_stored("x".into(), true, "md5").scheme_name(), "unknown");
    }
}
