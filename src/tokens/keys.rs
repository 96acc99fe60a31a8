//! The server's Ed25519 keys: the signing key (from a PEM file, or generated once into the data
//! directory with mode 0600) and the retired keys that still verify, each published as the
//! contract's JWK ([`PublicJwk`], kid = RFC 7638 thumbprint) so that rotation logs nobody out.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use ed25519_dalek::{
    VerifyingKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, spki::der::pem::LineEnding},
};
use identity_contract::PublicJwk;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::Rng;

/// The signing key generated into the data directory when none is configured.
pub const GENERATED_KEY_FILE: &str = "signing_key.pem";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is not an Ed25519 key in PEM form (PKCS#8 private key or SPKI public key)")]
    NotEd25519 { path: PathBuf },
    #[error("{path} must hold a private key: it is the signing key")]
    NotPrivate { path: PathBuf },
    #[error("cannot encode a new key")]
    Encode,
}

/// The key that signs new tokens. Its `Debug` shows only the key id.
pub struct SigningKey {
    pub kid: String,
    pub(super) encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The active signing key plus every key that still verifies (the active one included), so a
/// key can be rotated without logging anybody out.
pub struct KeyRing {
    pub signing: SigningKey,
    pub(super) verifying: HashMap<String, DecodingKey>,
    jwks: Vec<PublicJwk>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing", &self.signing.kid)
            .field("verifying", &self.jwks.iter().map(|k| &k.kid).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Loads the signing key from `signing_key_file`, or from (generating it on first start)
    /// `<data_dir>/signing_key.pem`, and the retired keys that still verify.
    pub fn load(
        signing_key_file: Option<&Path>,
        data_dir: &Path,
        verify_key_files: &[PathBuf],
    ) -> Result<Self, KeyError> {
        let (path, pem) = match signing_key_file {
            Some(path) => (path.to_owned(), read(path)?),
            None => load_or_generate(&data_dir.join(GENERATED_KEY_FILE))?,
        };
        let signing_public = match parse_pem(&path, &pem)? {
            ParsedKey::Private(public) => public,
            ParsedKey::Public(_) => return Err(KeyError::NotPrivate { path }),
        };
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|_| KeyError::NotEd25519 { path: path.clone() })?;
        let mut ring = Self {
            signing: SigningKey { kid: public_jwk(&signing_public)?.kid, encoding },
            verifying: HashMap::new(),
            jwks: Vec::new(),
        };
        ring.add_verifier(&signing_public)?;
        for path in verify_key_files {
            let (ParsedKey::Private(public) | ParsedKey::Public(public)) = parse_pem(path, &read(path)?)?;
            ring.add_verifier(&public)?;
        }
        Ok(ring)
    }

    fn add_verifier(&mut self, public: &VerifyingKey) -> Result<(), KeyError> {
        let jwk = public_jwk(public)?;
        if self.verifying.contains_key(&jwk.kid) {
            return Ok(());
        }
        let key = jwk.decoding_key().map_err(|_| KeyError::Encode)?;
        self.verifying.insert(jwk.kid.clone(), key);
        self.jwks.push(jwk);
        Ok(())
    }

    /// Every public key that verifies tokens, the signing key first.
    pub fn jwks(&self) -> &[PublicJwk] {
        &self.jwks
    }
}

/// A new Ed25519 private key as PKCS#8 PEM.
pub fn generate_key_pem() -> Result<String, KeyError> {
    let secret: [u8; 32] = rand::rng().random();
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    key.to_pkcs8_pem(LineEnding::LF).map(|pem| pem.to_string()).map_err(|_| KeyError::Encode)
}

enum ParsedKey {
    Private(VerifyingKey),
    Public(VerifyingKey),
}

fn parse_pem(path: &Path, pem: &str) -> Result<ParsedKey, KeyError> {
    if let Ok(private) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
        return Ok(ParsedKey::Private(private.verifying_key()));
    }
    VerifyingKey::from_public_key_pem(pem)
        .map(ParsedKey::Public)
        .map_err(|_| KeyError::NotEd25519 { path: path.to_owned() })
}

fn read(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })
}

/// Reads the generated key, or creates it (mode 0600) if no process has yet. `create_new` makes
/// two processes starting on one data dir agree on a single key.
fn load_or_generate(path: &Path) -> Result<(PathBuf, String), KeyError> {
    let write_error = |source| KeyError::Write { path: path.to_owned(), source };
    if path.exists() {
        return Ok((path.to_owned(), read(path)?));
    }
    if let Some(dir) = path.parent() {
        crate::secret_files::create_private_dir(dir).map_err(write_error)?;
    }
    let pem = generate_key_pem()?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()).map_err(write_error)?;
            tracing::info!(path = %path.display(), "generated a new signing key");
            Ok((path.to_owned(), pem))
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok((path.to_owned(), read(path)?)),
        Err(error) => Err(write_error(error)),
    }
}

fn public_jwk(public: &VerifyingKey) -> Result<PublicJwk, KeyError> {
    PublicJwk::from_ed25519(public.as_bytes()).map_err(|_| KeyError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_reused_and_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyRing::load(None, dir.path(), &[]).unwrap();
        let second = KeyRing::load(None, dir.path(), &[]).unwrap();
        assert_eq!(first.signing.kid, second.signing.kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(GENERATED_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of the example key (pinned here as well as in
        // the contract crate, because a changed kid breaks rotation).
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let public = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(public_jwk(&public).unwrap().kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn retired_keys_verify_but_do_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        let retired = dir.path().join("retired.pem");
        fs::write(&retired, generate_key_pem().unwrap()).unwrap();
        let active = dir.path().join("active.pem");
        fs::write(&active, generate_key_pem().unwrap()).unwrap();
        let ring = KeyRing::load(Some(&active), dir.path(), std::slice::from_ref(&retired)).unwrap();
        assert_eq!(ring.jwks().len(), 2);
        assert_eq!(ring.jwks()[0].kid, ring.signing.kid);
        assert!(!format!("{ring:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_file_that_is_not_a_key_is_reported_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.pem");
        fs::write(&bogus, "not a key").unwrap();
        let error = KeyRing::load(Some(&bogus), dir.path(), &[]).unwrap_err();
        assert!(error.to_string().contains("bogus.pem"));
    }
}
