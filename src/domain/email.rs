//! Email addresses: [`Email`] as the user typed it, checked for syntax once at the edge, and
//! [`NormalizedEmail`], the lower-cased form every uniqueness check and lookup matches on.

use std::str::FromStr;

use email_address::{EmailAddress, Options};

use super::{FieldViolation, has_nul};

/// RFC 5321's limit on a forward path.
const MAX_BYTES: usize = 254;

/// A syntactically valid email address, trimmed, kept as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        let invalid = |why: &str| FieldViolation::new(field, why);
        if trimmed.is_empty() {
            return Err(invalid("is required"));
        }
        if has_nul(trimmed) || trimmed.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        if trimmed.len() > MAX_BYTES {
            return Err(invalid("must be at most 254 bytes"));
        }
        // The parser accepts `Name <a@b>` unless told not to; an account email is the bare address.
        let options = Options::default().without_display_text();
        EmailAddress::parse_with_options(trimmed, options)
            .map_err(|_| invalid("is not a valid email address"))?;
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness and lookups use: the whole address lower-cased. Strictly the local
    /// part is case-sensitive, but no mail provider in use treats it so, and two accounts that
    /// differ only in case are a support ticket waiting to happen.
    pub fn normalized(&self) -> NormalizedEmail {
        NormalizedEmail(self.0.to_lowercase())
    }
}

/// The lower-cased form of an [`Email`]: what the `email_lower` columns hold. Only made from an
/// `Email`, so a lookup can never be keyed by text that skipped the syntax check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedEmail(String);

impl NormalizedEmail {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Email {
    type Err = FieldViolation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse("email", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_addresses_are_trimmed_and_kept_as_given() {
        let email: Email = "  Alice.Smith@Example.COM ".parse().unwrap();
        assert_eq!(email.as_str(), "Alice.Smith@Example.COM");
        assert_eq!(email.normalized().as_str(), "alice.smith@example.com");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "alice@",
            "a b@example.com",
            "Alice <a@example.com>",
            "a@example.com\0",
            "a\n@example.com",
        ] {
            assert!(bad.parse::<Email>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn addresses_longer_than_254_bytes_are_refused() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
        assert!(long.len() > 254);
        let error = long.parse::<Email>().unwrap_err();
        assert!(error.description.contains("254"));
    }
}
