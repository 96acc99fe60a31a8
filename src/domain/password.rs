//! Passwords in the two forms a request carries them: a new [`Password`] that met the policy, and
//! a [`PresentedPassword`] to be checked against a stored hash. Neither ever prints itself.
//!
//! Passwords are compared in NFKC (NIST SP 800-63B-4 section 3.1.1.2): the same password typed
//! as NFC or NFD, or with fullwidth characters, is the same password. The policy measures the
//! normalized form and new hashes are made of it; hashes made before normalization was
//! introduced are of the text as typed, and are checked against that until the next successful
//! login rehashes them (see [`PasswordHash`]).

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use super::{FieldViolation, PasswordHash, has_nul};

/// The form a password is measured, hashed and verified in.
fn normalize(text: &str) -> String {
    text.nfkc().collect()
}

/// bcrypt reads at most 72 bytes, and the crate's non-truncating API refuses 72 or more, so the
/// longest password that can be set is 71 bytes.
pub const MAX_PASSWORD_BYTES: usize = 71;

/// The longest password read to be checked (nobody sends megabytes to be normalized and
/// hashed); longer than [`MAX_PASSWORD_BYTES`] because imported hashes may be of longer ones.
pub const MAX_CHECKED_PASSWORD_BYTES: usize = 1024;

/// A password that met the policy, in NFKC. `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// The normalized text: what is hashed.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// NIST SP 800-63B-4 / OWASP ASVS 5 V6: a length floor, bcrypt's ceiling, no composition rules,
/// and no password that is common or built from the user's own email or name.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub min_length: usize,
}

impl PasswordPolicy {
    /// Checks `candidate` for the account identified by `context` (email, name), which an
    /// attacker would try first. Everything is measured on the NFKC form, which is what will
    /// be hashed: length in its code points, bcrypt's ceiling on its bytes.
    pub fn check(
        &self,
        field: &'static str,
        candidate: &str,
        context: &[&str],
    ) -> Result<Password, FieldViolation> {
        let refuse = |why: String| Err(FieldViolation::new(field, why));
        if has_nul(candidate) {
            return refuse("must not contain a NUL character".into());
        }
        let candidate = normalize(candidate);
        let candidate = candidate.as_str();
        if candidate.chars().count() < self.min_length {
            return refuse(format!("must be at least {} characters", self.min_length));
        }
        if candidate.len() > MAX_PASSWORD_BYTES {
            return refuse(format!(
                "must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8 (longer passwords would be truncated by bcrypt)"
            ));
        }
        let estimate = zxcvbn::zxcvbn(candidate, &context_words(context));
        if u8::from(estimate.score()) < 3 {
            let hint = estimate
                .feedback()
                .and_then(|feedback| feedback.warning())
                .map(|warning| format!(": {warning}"))
                .unwrap_or_default();
            return refuse(format!("is too easy to guess{hint}"));
        }
        Ok(Password(SecretString::from(candidate)))
    }
}

/// The words of the user's email and name, which zxcvbn then treats as a dictionary.
fn context_words<'a>(context: &[&'a str]) -> Vec<&'a str> {
    let mut words = Vec::new();
    for item in context {
        words.push(*item);
        words.extend(item.split(|c: char| !c.is_alphanumeric()).filter(|word| word.chars().count() >= 3));
    }
    words
}

/// A password as the client sent it, for login and for checking a current password: never
/// refused for its form, since the policy may have changed since it was set. Holds the text as
/// sent and its NFKC form, both computed at parsing, so that checking either costs the same.
#[derive(Debug, Clone)]
pub struct PresentedPassword {
    as_sent: SecretString,
    normalized: SecretString,
}

impl PresentedPassword {
    pub fn new(raw: String) -> Self {
        let normalized = SecretString::from(normalize(&raw));
        Self { as_sent: SecretString::from(raw), normalized }
    }

    /// A password presented in `field`, within the limits every presented value shares (see
    /// [`Presented`](super::Presented)).
    pub fn parse(field: &'static str, raw: String, max_bytes: usize) -> Result<Self, FieldViolation> {
        super::Presented::parse(field, raw, max_bytes).map(|text| Self::new(text.into_inner()))
    }

    /// A password presented to be checked against a stored hash (Login, ChangePassword's
    /// current password): at most [`MAX_CHECKED_PASSWORD_BYTES`] as sent. Longer than bcrypt's
    /// ceiling is allowed: an imported hash may be of such a password (a bcrypt one truncated
    /// by the old app, or an Argon2 or PBKDF2 one); against any other hash it costs the same
    /// full check as any wrong password, so it is no cheaper way to count failures.
    pub fn parse_checked(field: &'static str, raw: String) -> Result<Self, FieldViolation> {
        Self::parse(field, raw, MAX_CHECKED_PASSWORD_BYTES)
    }

    /// The normalized text: what a new hash is made of (a rehash at login).
    pub fn expose(&self) -> &str {
        self.normalized.expose_secret()
    }

    /// The text to check against `hash`: the normalized form, or for a hash made before
    /// passwords were normalized, the text as sent (as it was hashed then).
    pub fn text_for(&self, hash: &PasswordHash) -> &str {
        if hash.is_of_normalized_text() { self.expose() } else { self.as_sent.expose_secret() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_length: 15 };

    fn check(password: &str) -> Result<Password, FieldViolation> {
        POLICY.check("password", password, &["alice.smith@example.com", "Alice Smith"])
    }

    #[test]
    fn a_long_unpredictable_password_is_accepted() {
        assert!(check("maple-orbit-tundra-42-vessel").is_ok());
    }

    #[test]
    fn short_passwords_are_refused_counting_code_points() {
        assert!(check("Xq7!vR2#pL9").unwrap_err().description.contains("at least 15"));
        // 14 two-byte characters: 28 bytes but only 14 characters.
        assert!(check(&"é".repeat(14)).unwrap_err().description.contains("at least 15"));
    }

    #[test]
    fn passwords_bcrypt_would_truncate_are_refused_not_truncated() {
        let long = "correct-horse-battery-staple-".repeat(3);
        assert!(long.len() > MAX_PASSWORD_BYTES);
        assert!(check(&long).unwrap_err().description.contains("at most 71 bytes"));
    }

    #[test]
    fn nul_and_guessable_passwords_are_refused() {
        assert!(check("maple-orbit-tundra\0-42").unwrap_err().description.contains("NUL"));
        assert!(check("passwordpassword").unwrap_err().description.contains("too easy"));
        assert!(check("aaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(check("alice.smith@example.com").is_err());
        assert!(check("AliceSmithAliceSmith").is_err());
    }

    #[test]
    fn the_policy_measures_and_keeps_the_nfkc_form() {
        // "ﬃ" is one code point and NFKC makes it "ffi": 14 code points as typed, 16 measured.
        let with_ligature = "\u{fb03}-tundra-orbi7";
        assert_eq!(with_ligature.chars().count(), 14);
        assert!(check(with_ligature).is_ok());
        // NFD and NFC of one password are one password.
        let nfd = check("cafe\u{301}-maple-orbit-tundra-42").unwrap();
        let nfc = check("caf\u{e9}-maple-orbit-tundra-42").unwrap();
        assert_eq!(nfd.expose(), nfc.expose());
        // Fullwidth letters are the ASCII ones.
        assert_eq!(
            check("\u{ff4d}aple-orbit-tundra-42-vessel").unwrap().expose(),
            "maple-orbit-tundra-42-vessel"
        );
        // U+FDFA is 3 bytes but 33 once normalized: the ceiling applies to what is hashed.
        let expanding = format!("{}-maple-orbit-42", "\u{fdfa}".repeat(3));
        assert!(expanding.len() <= MAX_PASSWORD_BYTES);
        assert!(check(&expanding).unwrap_err().description.contains("at most 71 bytes"));
    }

    #[test]
    fn a_presented_password_is_checked_as_sent_against_a_hash_of_the_text_as_typed() {
        let presented = PresentedPassword::new("cafe\u{301}-maple".into());
        let legacy = PasswordHash::from_stored("$2b$04$x".into(), false, "bcrypt");
        let current = PasswordHash::new("$2b$04$x".into());
        assert_eq!(presented.text_for(&legacy), "cafe\u{301}-maple");
        assert_eq!(presented.text_for(&current), "caf\u{e9}-maple");
        assert_eq!(presented.expose(), "caf\u{e9}-maple");
    }

    #[test]
    fn a_presented_password_is_read_up_to_the_checked_ceiling() {
        let parse = |raw: &str| PresentedPassword::parse_checked("password", raw.into());
        assert!(parse(&"a".repeat(MAX_PASSWORD_BYTES + 1)).is_ok(), "an imported hash may be of it");
        assert!(parse(&"a".repeat(MAX_CHECKED_PASSWORD_BYTES)).is_ok());
        let error = parse(&"a".repeat(MAX_CHECKED_PASSWORD_BYTES + 1)).unwrap_err();
        assert_eq!(error.field, "password");
        assert!(error.description.contains("at most 1024 bytes"), "{}", error.description);
    }

    #[test]
    fn debug_output_hides_the_password() {
        let password = check("maple-orbit-tundra-42-vessel").unwrap();
        assert!(!format!("{password:?}").contains("maple"));
        let presented = PresentedPassword::new("hunter2-hunter2".into());
        assert!(!format!("{presented:?}").contains("hunter2"));
    }
}
