//! What a client presents as a second factor: a TOTP code (RFC 6238, 6 digits) or one of the
//! account's recovery codes, parsed once at the edge. Both are secrets: `Debug` hides them.

use rand::Rng;
use sha2::{Digest, Sha256};

use super::FieldViolation;

/// The digits of an RFC 6238 code as authenticator apps show them (SHA-1, 30 s steps).
pub const TOTP_DIGITS: usize = 6;
/// Recovery codes handed out at once.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code: 16 of Crockford's base32 alphabet, 80 random bits.
const RECOVERY_CODE_CHARS: usize = 16;
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A second factor as presented.
pub enum SecondFactor {
    Totp(TotpCode),
    Recovery(RecoveryCode),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Totp(_) => "SecondFactor::Totp(..)",
            Self::Recovery(_) => "SecondFactor::Recovery(..)",
        })
    }
}

/// Six ASCII digits (spaces between groups, as apps show them, are ignored).
pub struct TotpCode(String);

impl TotpCode {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if digits.len() != TOTP_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldViolation::new(field, "must be the 6-digit code from the authenticator app"));
        }
        Ok(Self(digits))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A recovery code, normalized: lower case, without the dashes and spaces it is shown with.
pub struct RecoveryCode(String);

impl RecoveryCode {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let code: String =
            raw.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_lowercase()).collect();
        if code.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if code.len() != RECOVERY_CODE_CHARS || !code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)) {
            return Err(FieldViolation::new(field, "is not a recovery code (xxxx-xxxx-xxxx-xxxx)"));
        }
        Ok(Self(code))
    }

    /// A fresh code: 80 random bits.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self(
            (0..RECOVERY_CODE_CHARS)
                .map(|_| char::from(RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())]))
                .collect(),
        )
    }

    /// What is stored. A recovery code has 80 random bits, so a plain SHA-256 leaves nothing to
    /// guess offline (2^80 tries per code): the slow, salted hashes passwords need exist for
    /// low-entropy secrets, and would cost a bcrypt per code at every use.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// As shown to the user once: `xxxx-xxxx-xxxx-xxxx`.
    pub fn display(&self) -> String {
        let groups: Vec<&str> = (0..RECOVERY_CODE_CHARS / 4).map(|i| &self.0[i * 4..i * 4 + 4]).collect();
        groups.join("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_as_people_type_them() {
        assert_eq!(TotpCode::parse("code", " 123 456 ").unwrap().expose(), "123456");
        assert!(TotpCode::parse("code", "12345").is_err());
        assert!(TotpCode::parse("code", "12345a").is_err());
        assert!(TotpCode::parse("code", "١٢٣٤٥٦").is_err());
        let code = RecoveryCode::generate();
        let shown = code.display();
        assert_eq!(shown.len(), 19);
        let typed = RecoveryCode::parse("recovery_code", &shown.to_uppercase()).unwrap();
        assert_eq!(typed.digest(), code.digest());
        assert!(RecoveryCode::parse("recovery_code", "not-a-code").is_err());
        assert_ne!(RecoveryCode::generate().digest(), code.digest());
    }
}
