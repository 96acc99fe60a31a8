//! Secrets kept at rest (TOTP secrets) sealed with XChaCha20-Poly1305 under a 256-bit key read
//! from `IDENTITY_ENCRYPTION_KEY_FILE`, or generated into the data directory (0600) on the
//! SQLite default. Each ciphertext is stored with its random 192-bit nonce and the id of the key
//! that sealed it, and is bound to its owner by associated data (the user id), so a row copied
//! onto another account does not open. Rotation: the new key becomes
//! `IDENTITY_ENCRYPTION_KEY_FILE`, the old one moves to `IDENTITY_DECRYPTION_KEY_FILES` and keeps
//! opening what it sealed; each secret is re-sealed under the new key at its next use.

use std::{
    collections::HashMap,
    fmt, fs, io,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    Key, XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use rand::Rng;
use sha2::{Digest, Sha256};

/// The file a key is generated into, in the data directory, when none is configured.
pub const GENERATED_KEY_FILE: &str = "encryption_key";

#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    #[error("cannot read the encryption key {path}: {source}", path = path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write a new encryption key to {path}: {source}", path = path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("the encryption key {path} is not 32 bytes in base64", path = path.display())]
    Malformed { path: PathBuf },
}

/// A sealed secret as stored: ciphertext (with its tag), nonce, and the id of the sealing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Why a sealed secret did not open. Either means the configuration lost a key or the row was
/// tampered with: an internal error, never the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("no configured key has the id the secret was sealed with")]
    UnknownKey,
    #[error("the sealed secret does not authenticate")]
    Corrupt,
}

/// The current key (which seals) and the former ones (which only open).
pub struct Sealer {
    current: String,
    keys: HashMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("current", &self.current).finish_non_exhaustive()
    }
}

impl Sealer {
    /// The key in `key_file`, or (when `None`) the one generated into `data_dir` earlier or
    /// now; `former` keys only open.
    pub fn load(key_file: Option<&Path>, data_dir: &Path, former: &[PathBuf]) -> Result<Self, SealingError> {
        let current = match key_file {
            Some(path) => read_key(path)?,
            None => load_or_generate(&data_dir.join(GENERATED_KEY_FILE))?,
        };
        let mut sealer = Self::from_key(&current);
        for path in former {
            let key = read_key(path)?;
            sealer.keys.entry(key_id(&key)).or_insert_with(|| cipher(&key));
        }
        Ok(sealer)
    }

    fn from_key(key: &[u8; 32]) -> Self {
        let id = key_id(key);
        Self { current: id.clone(), keys: HashMap::from([(id, cipher(key))]) }
    }

    /// A sealer with a fresh random key (tests).
    pub fn random() -> Self {
        Self::from_key(&rand::rng().random())
    }

    /// The id of the key that seals (stored beside each secret it sealed).
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Whether `sealed` was sealed by a key other than the current one (to re-seal it).
    pub fn is_stale(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current
    }

    /// Seals `secret` for `owner` (the associated data) under the current key.
    pub fn seal(&self, secret: &[u8], owner: &[u8]) -> Sealed {
        let nonce: [u8; 24] = rand::rng().random();
        let ciphertext = self
            .keys
            .get(&self.current)
            .and_then(|cipher| {
                cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: owner }).ok()
            })
            // Encryption of an in-memory buffer cannot fail; an empty result would fail to open.
            .unwrap_or_default();
        Sealed { ciphertext, nonce: nonce.to_vec(), key_id: self.current.clone() }
    }

    /// The secret in `sealed`, if `owner` is the one it was sealed for.
    pub fn open(&self, sealed: &Sealed, owner: &[u8]) -> Result<Vec<u8>, OpenError> {
        let cipher = self.keys.get(&sealed.key_id).ok_or(OpenError::UnknownKey)?;
        if sealed.nonce.len() != 24 {
            return Err(OpenError::Corrupt);
        }
        cipher
            .decrypt(XNonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: owner })
            .map_err(|_| OpenError::Corrupt)
    }
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(Key::from_slice(key))
}

/// A short public name for a key: the start of a hash of it (which reveals nothing of a random
/// 256-bit key), so the id never has to be configured alongside the key.
fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::new().chain_update(b"identity encryption key id\0").chain_update(key).finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn read_key(path: &Path) -> Result<[u8; 32], SealingError> {
    let text =
        fs::read_to_string(path).map_err(|source| SealingError::Read { path: path.to_owned(), source })?;
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| SealingError::Malformed { path: path.to_owned() })
}

/// Reads the generated key, or writes a new one (0600, never replacing a file that appeared
/// meanwhile) on first start.
fn load_or_generate(path: &Path) -> Result<[u8; 32], SealingError> {
    if path.exists() {
        return read_key(path);
    }
    let key: [u8; 32] = rand::rng().random();
    let text = format!("{}\n", STANDARD.encode(key));
    match crate::secret_files::write_new_private_file(path, text.as_bytes()) {
        Ok(true) => {
            tracing::info!(path = %path.display(), "generated an encryption key for secrets at rest");
            Ok(key)
        }
        // Another process made it first: use theirs.
        Ok(false) => read_key(path),
        Err(source) => Err(SealingError::Write { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_for_its_owner_only() {
        let sealer = Sealer::random();
        let sealed = sealer.seal(b"totp secret", b"user-a");
        assert_ne!(sealed.ciphertext, b"totp secret");
        assert_eq!(sealer.open(&sealed, b"user-a").unwrap(), b"totp secret");
        assert_eq!(sealer.open(&sealed, b"user-b"), Err(OpenError::Corrupt));
        assert_eq!(Sealer::random().open(&sealed, b"user-a"), Err(OpenError::UnknownKey));
        assert!(!format!("{sealed:?}").contains("ciphertext"));
    }

    #[cfg(unix)]
    #[test]
    fn a_generated_key_is_private_and_reused_and_a_former_key_still_opens() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Sealer::load(None, dir.path(), &[]).unwrap();
        let path = dir.path().join(GENERATED_KEY_FILE);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = first.seal(b"s", b"u");
        let again = Sealer::load(None, dir.path(), &[]).unwrap();
        assert_eq!(again.open(&sealed, b"u").unwrap(), b"s");
        // Rotation: a new current key, the old one kept for opening.
        let next = dir.path().join("next");
        fs::write(&next, STANDARD.encode([7u8; 32])).unwrap();
        let rotated = Sealer::load(Some(&next), dir.path(), std::slice::from_ref(&path)).unwrap();
        assert!(rotated.is_stale(&sealed));
        assert_eq!(rotated.open(&sealed, b"u").unwrap(), b"s");
        assert!(!rotated.is_stale(&rotated.seal(b"s", b"u")));
    }
}
