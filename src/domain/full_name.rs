//! A person's display name: any script, but nothing that hides or reorders what is shown.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::FieldViolation;

const MAX_CHARS: usize = 200;

/// ZERO WIDTH NON-JOINER and ZERO WIDTH JOINER: format characters that Persian, the Indic
/// scripts and emoji sequences need to be spelled right, and that cannot reorder text.
const JOINERS: [char; 2] = ['\u{200c}', '\u{200d}'];

/// Characters a name must not hold although they are not control characters: format characters
/// (general category Cf: the bidirectional embeddings, overrides and isolates U+202A-202E and
/// U+2066-2069 that make a name display as something else, the marks U+200E/F, soft hyphens,
/// byte-order marks, tag characters), except the two joiners; and line and paragraph
/// separators, which break a name across lines.
fn is_hidden_formatting(c: char) -> bool {
    match c.general_category() {
        GeneralCategory::Format => !JOINERS.contains(&c),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => true,
        _ => false,
    }
}

/// A display name: 1 to 200 characters after trimming, any script, no control characters, no
/// invisible formatting (see [`is_hidden_formatting`]).
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
        if trimmed.chars().any(is_hidden_formatting) {
            return Err(FieldViolation::new(
                field,
                "must not contain invisible formatting characters (such as bidirectional overrides)",
            ));
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

    #[test]
    fn bidi_controls_and_other_format_characters_are_refused_but_joiners_are_not() {
        let bidi = ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}');
        let others =
            ['\u{200e}', '\u{200f}', '\u{ad}', '\u{feff}', '\u{2060}', '\u{e0041}', '\u{2028}', '\u{2029}'];
        for c in bidi.chain(others) {
            let error = FullName::parse("full_name", &format!("Eve{c}evil")).unwrap_err();
            assert_eq!(error.field, "full_name");
            assert!(error.description.contains("invisible formatting"), "{c:?}: {error:?}");
        }
        // Persian with a ZWNJ, Devanagari with a ZWJ, a family emoji.
        for name in [
            "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}",
            "\u{915}\u{94d}\u{200d}\u{937}",
            "Ann \u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}",
        ] {
            assert!(FullName::parse("full_name", name).is_ok(), "{name:?}");
        }
    }
}
