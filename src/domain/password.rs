//! Passwords in the two forms a request carries them: a new [`Password`] that met the policy, and
//! a [`PresentedPassword`] to be checked against a stored hash. Neither ever prints itself.

use secrecy::{ExposeSecret, SecretString};

use super::{FieldViolation, has_nul};

/// bcrypt reads at most 72 bytes, and the crate's non-truncating API refuses 72 or more, so the
/// longest password that is checked in full is 71 bytes.
pub const MAX_PASSWORD_BYTES: usize = 71;

/// A password that met the policy. `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
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
    /// attacker would try first.
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
/// refused for its form, since the policy may have changed since it was set.
#[derive(Debug, Clone)]
pub struct PresentedPassword(SecretString);

impl PresentedPassword {
    pub fn new(raw: String) -> Self {
        Self(SecretString::from(raw))
    }

    /// A password presented in `field`, within the limits every presented value shares (see
    /// [`Presented`](super::Presented)).
    pub fn parse(field: &'static str, raw: String, max_bytes: usize) -> Result<Self, FieldViolation> {
        super::Presented::parse(field, raw, max_bytes).map(|text| Self::new(text.into_inner()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
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
    fn debug_output_hides_the_password() {
        let password = check("maple-orbit-tundra-42-vessel").unwrap();
        assert!(!format!("{password:?}").contains("maple"));
        let presented = PresentedPassword::new("hunter2-hunter2".into());
        assert!(!format!("{presented:?}").contains("hunter2"));
    }
}
