use super::FieldViolation;

const MAX_CHARS: usize = 200;

/// A display name: 1 to 200 characters after trimming, any script, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldViolation::new(field, "must not contain control characters"));
        }
        if trimmed.chars().count() > MAX_CHARS {
            return Err(FieldViolation::new(field, "must be at most 200 characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_script_are_accepted_and_trimmed() {
        assert_eq!(FullName::parse("full_name", "  Zoë 山田 ").unwrap().as_str(), "Zoë 山田");
        assert!(FullName::parse("full_name", &"é".repeat(200)).is_ok());
    }

    #[test]
    fn empty_long_and_control_names_are_refused() {
        assert!(FullName::parse("full_name", "   ").is_err());
        assert!(FullName::parse("full_name", &"é".repeat(201)).is_err());
        assert!(FullName::parse("full_name", "a\0b").is_err());
        assert!(FullName::parse("full_name", "a\u{7}b").is_err());
    }
}
