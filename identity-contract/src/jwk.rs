//! The shape of a published verification key: an RFC 8037 Ed25519 JWK (`kty` OKP, `crv`
//! Ed25519, `alg` EdDSA, `use` sig) whose `kid` is its RFC 7638 thumbprint, built and
//! fingerprinted by `jsonwebtoken::jwk`; and the rule by which a consumer accepts one. The kid
//! is derived, never chosen, so a key keeps its kid across restarts and rotations.

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm, OctetKeyPairParameters,
        OctetKeyPairType, PublicKeyUse, ThumbprintHash,
    },
};

/// One Ed25519 public key as it is published (GetJwks) and accepted. The members other than
/// `kid` and `x` are the constants below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// RFC 7638 thumbprint (SHA-256, base64url) of the key.
    pub kid: String,
    /// The raw 32-byte public key, base64url without padding.
    pub x: String,
}

impl PublicJwk {
    pub const KTY: &'static str = "OKP";
    pub const CRV: &'static str = "Ed25519";
    pub const ALG: &'static str = "EdDSA";
    pub const USE: &'static str = "sig";
    /// Length of `x`: 32 bytes in base64url without padding.
    const X_LEN: usize = 43;

    /// The JWK of a raw Ed25519 public key, its kid the RFC 7638 thumbprint.
    pub fn from_ed25519(public_key: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let jwk = Jwk::from_decoding_key(&DecodingKey::from_ed_der(public_key), Some(Algorithm::EdDSA))?;
        let AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            x,
            curve: EllipticCurve::Ed25519,
            ..
        }) = &jwk.algorithm
        else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidEddsaKey.into());
        };
        let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
        Ok(Self { kid, x: x.clone() })
    }

    /// A published key, from its members as strings (the gRPC message): only an Ed25519
    /// signature-verification key with a kid is accepted (`alg` and `use` may be absent, as RFC
    /// 7517 allows); `None` for anything else.
    pub fn from_members(kty: &str, crv: &str, x: &str, kid: &str, alg: &str, key_use: &str) -> Option<Self> {
        let usable = kty == Self::KTY
            && crv == Self::CRV
            && (alg.is_empty() || alg == Self::ALG)
            && (key_use.is_empty() || key_use == Self::USE)
            && !kid.is_empty()
            && x.len() == Self::X_LEN;
        usable.then(|| Self { kid: kid.to_owned(), x: x.to_owned() })
    }

    /// The `alg` tokens signed by this key's private half carry.
    pub fn algorithm_name(&self) -> &'static str {
        Self::ALG
    }

    /// The full JWK, every member set, as `jsonwebtoken` models it.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: self.x.clone(),
            }),
        }
    }

    /// The key that verifies tokens signed by this key's private half.
    pub fn decoding_key(&self) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        DecodingKey::from_jwk(&self.to_jwk())
    }
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

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of the example key. Kids must never change, or a
        // rotation logs everybody out.
        let jwk = PublicJwk::from_ed25519(&RAW).unwrap();
        assert_eq!(jwk.x, X);
        assert_eq!(jwk.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn the_published_shape_is_an_ed25519_signature_key() {
        let json = serde_json::to_value(PublicJwk::from_ed25519(&RAW).unwrap().to_jwk()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": X, "alg": "EdDSA", "use": "sig",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
            })
        );
    }

    #[test]
    fn only_ed25519_verification_keys_are_accepted() {
        let accept = |kty, crv, x, kid, alg, key_use| PublicJwk::from_members(kty, crv, x, kid, alg, key_use);
        assert!(accept("OKP", "Ed25519", X, "k1", "EdDSA", "sig").is_some());
        assert!(accept("OKP", "Ed25519", X, "k1", "", "").is_some());
        assert!(accept("OKP", "X25519", X, "k1", "EdDSA", "sig").is_none());
        assert!(accept("EC", "Ed25519", X, "k1", "EdDSA", "sig").is_none());
        assert!(accept("OKP", "Ed25519", "short", "k1", "EdDSA", "sig").is_none());
        assert!(accept("OKP", "Ed25519", X, "k1", "EdDSA", "enc").is_none());
        assert!(accept("OKP", "Ed25519", X, "k1", "HS256", "sig").is_none());
        assert!(accept("OKP", "Ed25519", X, "", "EdDSA", "sig").is_none());
    }
}
