//! Credentials in the form the database keeps them: a bcrypt [`PasswordHash`] and the SHA-256
//! [`RefreshTokenDigest`] of a refresh token. Both are secrets to the extent that their `Debug`
//! prints nothing of them; the store takes them typed, never as bare strings or bytes.

use secrecy::{ExposeSecret, SecretString};

/// A bcrypt hash as stored. Treated as a secret: it never reaches a log line.
#[derive(Debug, Clone)]
pub struct PasswordHash(SecretString);

impl PasswordHash {
    pub fn new(hash: String) -> Self {
        Self(SecretString::from(hash))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
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
