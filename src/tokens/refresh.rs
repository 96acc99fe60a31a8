//! Refresh tokens: opaque random strings handed to the client once, stored only as a digest.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub use crate::domain::RefreshTokenDigest;

/// An opaque refresh token: 256 random bits, base64url. Shown to the client once and stored
/// only as its digest. `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as presented by a client; any text, since a wrong one simply matches nothing.
    pub fn presented(raw: String) -> Self {
        Self(SecretString::from(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn digest(&self) -> RefreshTokenDigest {
        RefreshTokenDigest::from_bytes(Sha256::digest(self.expose().as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_random_bits_and_differ() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), RefreshToken::presented(a.expose().to_owned()).digest());
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
