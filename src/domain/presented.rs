//! Text a client presents to be compared with something stored (a login password, a current
//! password, a refresh token): never held to the rules it was created under, which may have
//! changed since, only to the sanity limits every such field shares.

use super::{FieldViolation, has_nul};

/// Presented text that is present, free of NUL characters and of a sane size. Holds the text as
/// sent (untrimmed): a password's spaces are part of it. Often a secret, so `Debug` hides it.
pub struct Presented(String);

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presented(..)")
    }
}

impl Presented {
    /// Refuses blank text ("is required"), a NUL character (no stored password or token can
    /// contain one), and more than `max_bytes` (nobody gets to send megabytes to be hashed).
    pub fn parse(field: &'static str, raw: String, max_bytes: usize) -> Result<Self, FieldViolation> {
        if raw.trim().is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if has_nul(&raw) {
            return Err(FieldViolation::new(field, "must not contain a NUL character"));
        }
        if raw.len() > max_bytes {
            return Err(FieldViolation::new(field, format!("must be at most {max_bytes} bytes")));
        }
        Ok(Self(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<String, String> {
        Presented::parse("field", raw.to_owned(), 8).map(Presented::into_inner).map_err(|v| v.description)
    }

    #[test]
    fn blank_nul_and_oversized_text_is_refused_and_the_rest_kept_as_sent() {
        assert_eq!(parse(" a b "), Ok(" a b ".to_owned()));
        assert_eq!(parse("12345678"), Ok("12345678".to_owned()));
        assert_eq!(parse(""), Err("is required".to_owned()));
        assert_eq!(parse(" \t "), Err("is required".to_owned()));
        assert_eq!(parse("a\0b"), Err("must not contain a NUL character".to_owned()));
        assert_eq!(parse("123456789"), Err("must be at most 8 bytes".to_owned()));
    }
}
