//! The single-use token a mailed link (or a login challenge) carries: 256 random bits, shown
//! once and stored only as its SHA-256 digest, so a database leak hands out no usable link.
//! Made wherever the link is issued: the RPC paths, and the mail worker answering reset
//! requests.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::MailContent;

/// A single-use token: shown once (in the message), stored as its digest. Its `Debug` is
/// redacted by `SecretString`.
#[derive(Debug)]
pub struct OneTimeToken(SecretString);

impl OneTimeToken {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        Self(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The token itself, to hand to the client once.
    pub fn into_secret(self) -> SecretString {
        self.0
    }

    pub fn digest_of(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub fn digest(&self) -> [u8; 32] {
        Self::digest_of(self.0.expose_secret())
    }

    fn link(&self, template: &str) -> SecretString {
        SecretString::from(template.replace("{token}", self.0.expose_secret()))
    }

    /// The message content carrying this token's link (the name is filled in by the store).
    pub fn content(&self, template: &str, expires_at: DateTime<Utc>) -> MailContent {
        MailContent { name: String::new(), link: Some(self.link(template)), expires_at: Some(expires_at) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_256_random_bits_placed_in_the_link() {
        let token = OneTimeToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(token.0.expose_secret()).unwrap().len(), 32);
        let link = token.link("https://app.example.com/reset?token={token}");
        assert_eq!(
            link.expose_secret(),
            &format!("https://app.example.com/reset?token={}", token.0.expose_secret())
        );
        assert_ne!(OneTimeToken::digest_of("a"), OneTimeToken::digest_of("b"));
        assert!(!format!("{token:?}").contains(token.0.expose_secret()));
    }
}
