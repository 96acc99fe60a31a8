//! Credentials in the form the database keeps them: a bcrypt [`PasswordHash`] and the SHA-256
//! [`RefreshTokenDigest`] of a refresh token. Both are secrets to the extent that their `Debug`
//! prints nothing of them; the store takes them typed, never as bare strings or bytes.

use secrecy::{ExposeSecret, SecretString};

/// A bcrypt hash as stored, and what text it was made of. Treated as a secret: it never
/// reaches a log line.
#[derive(Debug, Clone)]
pub struct PasswordHash {
    hash: SecretString,
    /// Made of the NFKC form of the password (every hash made now), rather than of the text as
    /// typed (hashes made before passwords were normalized: the `password_normalized` column
    /// is false for them until a successful login rehashes them).
    of_normalized_text: bool,
}

impl PasswordHash {
    /// A hash made now, of a normalized password.
    pub fn new(hash: String) -> Self {
        Self { hash: SecretString::from(hash), of_normalized_text: true }
    }

    /// A hash as the database holds it, with its `password_normalized` flag.
    pub fn from_stored(hash: String, of_normalized_text: bool) -> Self {
        Self { hash: SecretString::from(hash), of_normalized_text }
    }

    pub fn expose(&self) -> &str {
        self.hash.expose_secret()
    }

    /// False for a hash of the password as typed, made before passwords were normalized.
    pub fn is_of_normalized_text(&self) -> bool {
        self.of_normalized_text
    }

    /// The cost the hash was made with, if it is a bcrypt hash at all.
    pub fn cost(&self) -> Option<u32> {
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
    }
}
