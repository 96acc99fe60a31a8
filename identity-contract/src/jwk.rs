//! The signing algorithms and the shape of a published verification key: an Ed25519 key (RFC
//! 8037: `kty` OKP, `crv` Ed25519, `alg` EdDSA), a P-256 key (RFC 7518: `kty` EC, `crv` P-256,
//! `alg` ES256) or an RSA key of at least 2048 bits (`kty` RSA, `alg` RS256), always `use` sig,
//! its `kid` the RFC 7638 thumbprint, built and fingerprinted by `jsonwebtoken::jwk`. Each key is
//! pinned to the one algorithm of its kind: a token is checked with its key's algorithm, never
//! with the one its header names. The kid is derived, never chosen, so a key keeps its kid across
//! restarts and rotations.

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
        EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
        RSAKeyParameters, RSAKeyType, ThumbprintHash,
    },
};

/// An algorithm access tokens may be signed with. Nothing else verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// Ed25519: the default.
    EdDSA,
    /// ECDSA on P-256 with SHA-256, for verifiers without EdDSA.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 bits or more, for verifiers with RSA only.
    RS256,
}

impl SigningAlgorithm {
    pub const ALL: [Self; 3] = [Self::EdDSA, Self::ES256, Self::RS256];

    /// The `alg` name (RFC 7518, RFC 8037).
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    /// The algorithm of an `alg` name, exactly as written.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|algorithm| algorithm.name() == name)
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
            Self::RS256 => Algorithm::RS256,
        }
    }

    pub(crate) fn from_jwt(algorithm: Algorithm) -> Option<Self> {
        Self::ALL.into_iter().find(|ours| ours.jwt() == algorithm)
    }

    /// The `kty` of its keys.
    pub fn key_type(self) -> &'static str {
        match self {
            Self::EdDSA => "OKP",
            Self::ES256 => "EC",
            Self::RS256 => "RSA",
        }
    }

    /// The `crv` of its keys; empty for RSA.
    pub fn curve(self) -> &'static str {
        match self {
            Self::EdDSA => "Ed25519",
            Self::ES256 => "P-256",
            Self::RS256 => "",
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The public material of one key, base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519 { x: String },
    P256 { x: String, y: String },
    Rsa { n: String, e: String },
}

/// One published verification key: its kid and public material; the algorithm follows from the
/// kind of key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// RFC 7638 thumbprint (SHA-256, base64url) of the key.
    pub kid: String,
    pub key: PublicKey,
}

/// A JWK's members as strings (as the gRPC message carries them; absent members are empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct JwkMembers<'a> {
    pub kty: &'a str,
    pub crv: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    pub n: &'a str,
    pub e: &'a str,
    pub kid: &'a str,
    pub alg: &'a str,
    pub key_use: &'a str,
}

/// A verification key with the one algorithm it accepts.
#[derive(Clone)]
pub struct VerificationKey {
    pub algorithm: SigningAlgorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Why a key cannot be published or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejected {
    #[error("not an Ed25519, P-256 or RSA key")]
    Unsupported,
    #[error("an RSA key of {bits} bits: at least {} are required", PublicJwk::MIN_RSA_BITS)]
    RsaTooShort { bits: usize },
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// Length of a 32-byte coordinate or Ed25519 key in base64url without padding.
const COORDINATE_LEN: usize = 43;

impl PublicJwk {
    pub const USE: &'static str = "sig";
    /// The shortest RSA modulus accepted, signing or verifying.
    pub const MIN_RSA_BITS: usize = 2048;

    /// The algorithm this key signs and verifies with, and no other.
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self.key {
            PublicKey::Ed25519 { .. } => SigningAlgorithm::EdDSA,
            PublicKey::P256 { .. } => SigningAlgorithm::ES256,
            PublicKey::Rsa { .. } => SigningAlgorithm::RS256,
        }
    }

    /// The `alg` tokens signed by this key's private half carry.
    pub fn algorithm_name(&self) -> &'static str {
        self.algorithm().name()
    }

    /// The JWK of a raw Ed25519 public key, its kid the RFC 7638 thumbprint.
    pub fn from_ed25519(public_key: &[u8]) -> Result<Self, KeyRejected> {
        Self::from_decoding_key(&DecodingKey::from_ed_der(public_key), SigningAlgorithm::EdDSA)
    }

    /// The public JWK of a private key used with `algorithm`.
    pub fn from_encoding_key(key: &EncodingKey, algorithm: SigningAlgorithm) -> Result<Self, KeyRejected> {
        let jwk = Jwk::from_encoding_key(key, algorithm.jwt()).map_err(|_| KeyRejected::Unsupported)?;
        Self::from_jwk(&jwk)
    }

    /// The JWK of a public key used with `algorithm`.
    pub fn from_decoding_key(key: &DecodingKey, algorithm: SigningAlgorithm) -> Result<Self, KeyRejected> {
        let jwk = Jwk::from_decoding_key(key, Some(algorithm.jwt())).map_err(|_| KeyRejected::Unsupported)?;
        Self::from_jwk(&jwk)
    }

    /// A key as `jsonwebtoken` models it, its kid computed (a kid it carries is ignored): only the
    /// kinds above, an `alg` (if any) matching the kind, an RSA modulus of 2048 bits or more.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyRejected> {
        let key = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                curve: EllipticCurve::Ed25519,
                x,
                ..
            }) if x.len() == COORDINATE_LEN => PublicKey::Ed25519 { x: x.clone() },
            AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                curve: EllipticCurve::P256,
                x,
                y,
                ..
            }) if x.len() == COORDINATE_LEN && y.len() == COORDINATE_LEN => {
                PublicKey::P256 { x: x.clone(), y: y.clone() }
            }
            AlgorithmParameters::RSA(RSAKeyParameters { n, e, .. }) => {
                let bits = rsa_bits(n).ok_or(KeyRejected::Unsupported)?;
                if bits < Self::MIN_RSA_BITS {
                    return Err(KeyRejected::RsaTooShort { bits });
                }
                if e.is_empty() {
                    return Err(KeyRejected::Unsupported);
                }
                PublicKey::Rsa { n: n.clone(), e: e.clone() }
            }
            _ => return Err(KeyRejected::Unsupported),
        };
        let mut ours = Self { kid: String::new(), key };
        if let Some(alg) = jwk.common.key_algorithm
            && alg != key_algorithm(ours.algorithm())
        {
            return Err(KeyRejected::Unsupported);
        }
        ours.kid = ours
            .to_jwk()
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyRejected::Encode(e.to_string()))?;
        Ok(ours)
    }

    /// A published key, from its members as strings (the gRPC message): only a signature key of
    /// the kinds above, with a kid, whose `alg` (if given: RFC 7517 lets it be absent) is its
    /// kind's; `None` for anything else. The kid is taken as published.
    pub fn from_members(members: JwkMembers<'_>) -> Option<Self> {
        let algorithm = SigningAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.key_type() == members.kty && algorithm.curve() == members.crv)?;
        let usable = (members.alg.is_empty() || members.alg == algorithm.name())
            && (members.key_use.is_empty() || members.key_use == Self::USE)
            && !members.kid.is_empty();
        if !usable {
            return None;
        }
        let key = match algorithm {
            SigningAlgorithm::EdDSA if members.x.len() == COORDINATE_LEN => {
                PublicKey::Ed25519 { x: members.x.to_owned() }
            }
            SigningAlgorithm::ES256
                if members.x.len() == COORDINATE_LEN && members.y.len() == COORDINATE_LEN =>
            {
                PublicKey::P256 { x: members.x.to_owned(), y: members.y.to_owned() }
            }
            SigningAlgorithm::RS256
                if !members.e.is_empty()
                    && rsa_bits(members.n).is_some_and(|bits| bits >= Self::MIN_RSA_BITS) =>
            {
                PublicKey::Rsa { n: members.n.to_owned(), e: members.e.to_owned() }
            }
            _ => return None,
        };
        Some(Self { kid: members.kid.to_owned(), key })
    }

    /// Every member as published (absent ones empty).
    pub fn members(&self) -> JwkMembers<'_> {
        let algorithm = self.algorithm();
        let common = JwkMembers {
            kty: algorithm.key_type(),
            crv: algorithm.curve(),
            kid: &self.kid,
            alg: algorithm.name(),
            key_use: Self::USE,
            ..JwkMembers::default()
        };
        match &self.key {
            PublicKey::Ed25519 { x } => JwkMembers { x, ..common },
            PublicKey::P256 { x, y } => JwkMembers { x, y, ..common },
            PublicKey::Rsa { n, e } => JwkMembers { n, e, ..common },
        }
    }

    /// The full JWK, every member set, as `jsonwebtoken` models it.
    pub fn to_jwk(&self) -> Jwk {
        let algorithm = match &self.key {
            PublicKey::Ed25519 { x } => AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: x.clone(),
            }),
            PublicKey::P256 { x, y } => AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: x.clone(),
                y: y.clone(),
            }),
            PublicKey::Rsa { n, e } => AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: n.clone(),
                e: e.clone(),
            }),
        };
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(key_algorithm(self.algorithm())),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm,
        }
    }

    /// The key that verifies tokens signed by this key's private half, pinned to its algorithm.
    pub fn verification_key(&self) -> Result<VerificationKey, jsonwebtoken::errors::Error> {
        Ok(VerificationKey { algorithm: self.algorithm(), key: DecodingKey::from_jwk(&self.to_jwk())? })
    }
}

fn key_algorithm(algorithm: SigningAlgorithm) -> KeyAlgorithm {
    match algorithm {
        SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
        SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
        SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
    }
}

/// The bit length of an RSA modulus given in base64url; `None` if it does not decode.
fn rsa_bits(n: &str) -> Option<usize> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    let first = bytes.iter().position(|byte| *byte != 0)?;
    Some((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 appendix A.2 public key.
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RAW: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e,
        0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
    ];
    /// RFC 7638 section 3.1: an RSA key and its thumbprint.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const RFC7638_E: &str = "AQAB";
    const RFC7638_KID: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of the example key. Kids must never change, or a
        // rotation logs everybody out.
        let jwk = PublicJwk::from_ed25519(&RAW).unwrap();
        assert_eq!(jwk.key, PublicKey::Ed25519 { x: X.into() });
        assert_eq!(jwk.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let rsa = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: RFC7638_N.into(),
                e: RFC7638_E.into(),
            }),
        };
        assert_eq!(PublicJwk::from_jwk(&rsa).unwrap().kid, RFC7638_KID);
    }

    #[test]
    fn the_published_shape_follows_the_kind_of_key() {
        let json = serde_json::to_value(PublicJwk::from_ed25519(&RAW).unwrap().to_jwk()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": X, "alg": "EdDSA", "use": "sig",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
            })
        );
        let rsa = PublicJwk {
            kid: RFC7638_KID.into(),
            key: PublicKey::Rsa { n: RFC7638_N.into(), e: RFC7638_E.into() },
        };
        let json = serde_json::to_value(rsa.to_jwk()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "use": "sig", "kid": RFC7638_KID,
            })
        );
        let ec = PublicJwk { kid: "k".into(), key: PublicKey::P256 { x: X.into(), y: X.into() } };
        let json = serde_json::to_value(ec.to_jwk()).unwrap();
        assert_eq!(json["kty"], "EC");
        assert_eq!(json["crv"], "P-256");
        assert_eq!(json["alg"], "ES256");
    }

    #[test]
    fn only_signature_keys_of_the_three_kinds_are_accepted_each_with_its_own_alg() {
        let ed = JwkMembers {
            kty: "OKP",
            crv: "Ed25519",
            x: X,
            kid: "k1",
            alg: "EdDSA",
            key_use: "sig",
            ..JwkMembers::default()
        };
        let ec = JwkMembers {
            kty: "EC",
            crv: "P-256",
            x: X,
            y: X,
            kid: "k2",
            alg: "ES256",
            key_use: "sig",
            ..JwkMembers::default()
        };
        let rsa = JwkMembers {
            kty: "RSA",
            n: RFC7638_N,
            e: RFC7638_E,
            kid: "k3",
            alg: "RS256",
            key_use: "sig",
            ..JwkMembers::default()
        };
        let accept = PublicJwk::from_members;
        assert_eq!(accept(ed).unwrap().algorithm(), SigningAlgorithm::EdDSA);
        assert_eq!(accept(ec).unwrap().algorithm(), SigningAlgorithm::ES256);
        assert_eq!(accept(rsa).unwrap().algorithm(), SigningAlgorithm::RS256);
        assert!(accept(JwkMembers { alg: "", key_use: "", ..ed }).is_some());
        assert!(accept(JwkMembers { crv: "X25519", ..ed }).is_none());
        assert!(accept(JwkMembers { kty: "EC", ..ed }).is_none());
        assert!(accept(JwkMembers { x: "short", ..ed }).is_none());
        assert!(accept(JwkMembers { key_use: "enc", ..ed }).is_none());
        assert!(accept(JwkMembers { kid: "", ..ed }).is_none());
        // Each kind with another kind's algorithm, or one we do not verify.
        for alg in ["HS256", "ES256", "RS256", "PS256", "none"] {
            assert!(accept(JwkMembers { alg, ..ed }).is_none(), "Ed25519 with {alg}");
        }
        for alg in ["HS256", "EdDSA", "RS256", "ES384"] {
            assert!(accept(JwkMembers { alg, ..ec }).is_none(), "P-256 with {alg}");
        }
        for alg in ["HS256", "EdDSA", "ES256", "PS256", "RS512"] {
            assert!(accept(JwkMembers { alg, ..rsa }).is_none(), "RSA with {alg}");
        }
        assert!(accept(JwkMembers { crv: "P-384", ..ec }).is_none());
        assert!(accept(JwkMembers { y: "", ..ec }).is_none());
        assert!(accept(JwkMembers { e: "", ..rsa }).is_none());
        // A 1008-bit modulus (the start of the RFC 7638 one) is too short.
        let short = &RFC7638_N[..168];
        assert!(accept(JwkMembers { n: short, ..rsa }).is_none());
    }

    #[test]
    fn an_rsa_key_under_2048_bits_is_refused_with_its_size() {
        let short = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: RFC7638_N[..168].into(),
                e: RFC7638_E.into(),
            }),
        };
        assert_eq!(PublicJwk::from_jwk(&short), Err(KeyRejected::RsaTooShort { bits: 1008 }));
    }

    #[test]
    fn members_round_trip() {
        let rsa =
            PublicJwk { kid: "k".into(), key: PublicKey::Rsa { n: RFC7638_N.into(), e: RFC7638_E.into() } };
        let ec = PublicJwk { kid: "k".into(), key: PublicKey::P256 { x: X.into(), y: X.into() } };
        let ed = PublicJwk::from_ed25519(&RAW).unwrap();
        for key in [rsa, ec, ed] {
            assert_eq!(PublicJwk::from_members(key.members()).as_ref(), Some(&key));
        }
    }
}
