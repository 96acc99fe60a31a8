//! The server's keys: the signing key (from a PEM file, or generated once into the data
//! directory with mode 0600) and the retired keys that still verify, each an Ed25519, P-256 or
//! RSA (2048 bits or more) key pinned to its own algorithm (EdDSA, ES256, RS256) and published as
//! the contract's JWK ([`PublicJwk`], kid = RFC 7638 thumbprint) so that rotation, even to
//! another algorithm, logs nobody out.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use identity_contract::{KeyRejected, PublicJwk, SigningAlgorithm, VerificationKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::Rng;

/// The signing key generated into the data directory for `algorithm` when none is configured
/// (the Ed25519 one keeps the name it always had).
pub fn generated_key_file(algorithm: SigningAlgorithm) -> &'static str {
    match algorithm {
        SigningAlgorithm::EdDSA => "signing_key.pem",
        SigningAlgorithm::ES256 => "signing_key_es256.pem",
        SigningAlgorithm::RS256 => "signing_key_rs256.pem",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a key in PEM form: an Ed25519, P-256 or RSA PKCS#8 private key (RSA also PKCS#1), or its public key"
    )]
    NotAKey { path: PathBuf },
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: KeyRejected },
    #[error("{path} must hold a private key: it is the signing key")]
    NotPrivate { path: PathBuf },
    #[error("{path} is an {key} key but IDENTITY_SIGNING_ALG is {configured}: set one to match the other")]
    AlgorithmMismatch { path: PathBuf, key: SigningAlgorithm, configured: SigningAlgorithm },
    #[error("cannot encode a new key")]
    Encode,
}

/// The key that signs new tokens. Its `Debug` shows only the key id and algorithm.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub(super) encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The active signing key plus every key that still verifies (the active one included), so a
/// key can be rotated without logging anybody out.
pub struct KeyRing {
    pub signing: SigningKey,
    pub(super) verifying: HashMap<String, VerificationKey>,
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
    /// Loads the signing key from `signing_key_file` (it must be of `algorithm`), or from
    /// (generating it on first start) `<data_dir>/`[`generated_key_file`], and the retired keys
    /// that still verify, of any algorithm.
    pub fn load(
        signing_key_file: Option<&Path>,
        data_dir: &Path,
        verify_key_files: &[PathBuf],
        algorithm: SigningAlgorithm,
    ) -> Result<Self, KeyError> {
        let (path, pem) = match signing_key_file {
            Some(path) => (path.to_owned(), read(path)?),
            None => load_or_generate(&data_dir.join(generated_key_file(algorithm)), algorithm)?,
        };
        let (encoding, public) = match parse_pem(&path, &pem)? {
            ParsedKey::Private(encoding, public) => (encoding, public),
            ParsedKey::Public(_) => return Err(KeyError::NotPrivate { path }),
        };
        if public.algorithm() != algorithm {
            return Err(KeyError::AlgorithmMismatch { path, key: public.algorithm(), configured: algorithm });
        }
        let mut ring = Self {
            signing: SigningKey { kid: public.kid.clone(), algorithm, encoding },
            verifying: HashMap::new(),
            jwks: Vec::new(),
        };
        ring.add_verifier(&path, public)?;
        for path in verify_key_files {
            let (ParsedKey::Private(_, public) | ParsedKey::Public(public)) = parse_pem(path, &read(path)?)?;
            ring.add_verifier(path, public)?;
        }
        Ok(ring)
    }

    fn add_verifier(&mut self, path: &Path, jwk: PublicJwk) -> Result<(), KeyError> {
        if self.verifying.contains_key(&jwk.kid) {
            return Ok(());
        }
        let key = jwk.verification_key().map_err(|error| KeyError::Unusable {
            path: path.to_owned(),
            reason: KeyRejected::Encode(error.to_string()),
        })?;
        self.verifying.insert(jwk.kid.clone(), key);
        self.jwks.push(jwk);
        Ok(())
    }

    /// Every public key that verifies tokens, the signing key first.
    pub fn jwks(&self) -> &[PublicJwk] {
        &self.jwks
    }
}

/// A new private key for `algorithm` as PKCS#8 PEM: Ed25519, P-256, or RSA of 2048 bits.
pub fn generate_key_pem(algorithm: SigningAlgorithm) -> Result<String, KeyError> {
    match algorithm {
        SigningAlgorithm::EdDSA => {
            let secret: [u8; 32] = rand::rng().random();
            ed25519_dalek::SigningKey::from_bytes(&secret)
                .to_pkcs8_pem(LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|_| KeyError::Encode)
        }
        SigningAlgorithm::ES256 => {
            // A random scalar below the group order: the first 32 random bytes nearly always are.
            let secret = std::iter::repeat_with(|| rand::rng().random::<[u8; 32]>())
                .take(64)
                .find_map(|bytes| p256::SecretKey::from_slice(&bytes).ok())
                .ok_or(KeyError::Encode)?;
            p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&secret, p256::pkcs8::LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|_| KeyError::Encode)
        }
        SigningAlgorithm::RS256 => {
            let private = rsa::PrivateKey::new(&mut getrandom::SysRng, PublicJwk::MIN_RSA_BITS)
                .map_err(|_| KeyError::Encode)?;
            rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&private, rsa::pkcs8::LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|_| KeyError::Encode)
        }
    }
}

enum ParsedKey {
    Private(EncodingKey, PublicJwk),
    Public(PublicJwk),
}

/// The key in `pem`, of whichever supported kind it is: private keys first, then public ones.
fn parse_pem(path: &Path, pem: &str) -> Result<ParsedKey, KeyError> {
    let unusable = |reason| KeyError::Unusable { path: path.to_owned(), reason };
    let bytes = pem.as_bytes();
    for algorithm in SigningAlgorithm::ALL {
        let private = match algorithm {
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(bytes),
            SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(bytes),
            SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(bytes),
        };
        if let Ok(encoding) = private {
            let public = match algorithm {
                // jsonwebtoken reads the public half of PKCS#8 v1 only; ed25519-dalek also v2.
                SigningAlgorithm::EdDSA => ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                    .map_err(|_| KeyRejected::Unsupported)
                    .and_then(|key| PublicJwk::from_ed25519(key.verifying_key().as_bytes())),
                _ => PublicJwk::from_encoding_key(&encoding, algorithm),
            };
            return Ok(ParsedKey::Private(encoding, public.map_err(unusable)?));
        }
    }
    for algorithm in SigningAlgorithm::ALL {
        let public = match algorithm {
            SigningAlgorithm::EdDSA => DecodingKey::from_ed_pem(bytes),
            SigningAlgorithm::ES256 => DecodingKey::from_ec_pem(bytes),
            SigningAlgorithm::RS256 => DecodingKey::from_rsa_pem(bytes),
        };
        if let Ok(decoding) = public {
            return PublicJwk::from_decoding_key(&decoding, algorithm)
                .map(ParsedKey::Public)
                .map_err(unusable);
        }
    }
    Err(KeyError::NotAKey { path: path.to_owned() })
}

fn read(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })
}

/// Reads the generated key, or creates it (mode 0600) if no process has yet. `create_new` makes
/// two processes starting on one data dir agree on a single key.
fn load_or_generate(path: &Path, algorithm: SigningAlgorithm) -> Result<(PathBuf, String), KeyError> {
    let write_error = |source| KeyError::Write { path: path.to_owned(), source };
    if path.exists() {
        return Ok((path.to_owned(), read(path)?));
    }
    let pem = generate_key_pem(algorithm)?;
    if crate::secret_files::write_new_private_file(path, pem.as_bytes()).map_err(write_error)? {
        tracing::info!(path = %path.display(), %algorithm, "generated a new signing key");
        Ok((path.to_owned(), pem))
    } else {
        Ok((path.to_owned(), read(path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDDSA: SigningAlgorithm = SigningAlgorithm::EdDSA;

    fn write_key(dir: &Path, name: &str, algorithm: SigningAlgorithm) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, generate_key_pem(algorithm).unwrap()).unwrap();
        path
    }

    #[test]
    fn a_generated_key_is_reused_and_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in SigningAlgorithm::ALL {
            let first = KeyRing::load(None, dir.path(), &[], algorithm).unwrap();
            let second = KeyRing::load(None, dir.path(), &[], algorithm).unwrap();
            assert_eq!(first.signing.kid, second.signing.kid);
            assert_eq!(first.signing.algorithm, algorithm);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let file = dir.path().join(generated_key_file(algorithm));
                assert_eq!(fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of the example key (pinned here as well as in
        // the contract crate, because a changed kid breaks rotation).
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(PublicJwk::from_ed25519(&x).unwrap().kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn retired_keys_of_any_algorithm_verify_but_do_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        let retired = write_key(dir.path(), "retired.pem", EDDSA);
        let active = write_key(dir.path(), "active.pem", SigningAlgorithm::ES256);
        let ring =
            KeyRing::load(Some(&active), dir.path(), std::slice::from_ref(&retired), SigningAlgorithm::ES256)
                .unwrap();
        assert_eq!(ring.jwks().len(), 2);
        assert_eq!(ring.jwks()[0].kid, ring.signing.kid);
        assert_eq!(ring.jwks()[0].algorithm(), SigningAlgorithm::ES256);
        assert_eq!(ring.jwks()[1].algorithm(), EDDSA);
        assert!(!format!("{ring:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_signing_key_of_another_algorithm_than_configured_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = write_key(dir.path(), "rsa.pem", SigningAlgorithm::RS256);
        let error = KeyRing::load(Some(&rsa), dir.path(), &[], EDDSA).unwrap_err();
        assert!(matches!(error, KeyError::AlgorithmMismatch { key: SigningAlgorithm::RS256, .. }), "{error}");
        assert!(error.to_string().contains("IDENTITY_SIGNING_ALG"), "{error}");
        let ring = KeyRing::load(Some(&rsa), dir.path(), &[], SigningAlgorithm::RS256).unwrap();
        assert_eq!(ring.signing.algorithm, SigningAlgorithm::RS256);
    }

    #[test]
    fn a_file_that_is_not_a_key_is_reported_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.pem");
        fs::write(&bogus, "not a key").unwrap();
        let error = KeyRing::load(Some(&bogus), dir.path(), &[], EDDSA).unwrap_err();
        assert!(error.to_string().contains("bogus.pem"));
    }
}
