//! Email addresses: [`Email`] as the user typed it, checked for syntax once at the edge;
//! [`NormalizedEmail`], the NFKC, lower-cased form every lookup matches on; and its
//! [`ConfusableKey`], which keeps two accounts from having addresses that look alike.

use std::{collections::HashMap, str::FromStr, sync::LazyLock};

use email_address::{EmailAddress, Options};
use unicode_normalization::UnicodeNormalization;

use super::{FieldViolation, has_nul};

/// RFC 5321's limit on a forward path.
const MAX_BYTES: usize = 254;

/// A syntactically valid email address, trimmed, kept as the user typed it, with its normalized
/// form (computed once, at parsing, and itself a valid address of at most 254 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    as_typed: String,
    normalized: NormalizedEmail,
}

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        // Kept in NFC: canonically equivalent spellings (a precomposed `é` or `e` plus a
        // combining accent) are the same text, and the syntax check must not tell them apart.
        let composed: String = raw.trim().nfc().collect();
        let trimmed = composed.as_str();
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
        let valid = |text: &str| EmailAddress::parse_with_options(text, options).is_ok();
        if !valid(trimmed) {
            return Err(invalid("is not a valid email address"));
        }
        // NFKC can lengthen text or turn a character into syntax (U+FE52 into `.`): the form
        // that is matched on must pass the same checks as the form that was typed.
        let normalized = NormalizedEmail::of(trimmed);
        if normalized.0.len() > MAX_BYTES {
            return Err(invalid("must be at most 254 bytes"));
        }
        if !valid(&normalized.0) {
            return Err(invalid("is not a valid email address"));
        }
        Ok(Self { as_typed: trimmed.to_owned(), normalized })
    }

    pub fn as_str(&self) -> &str {
        &self.as_typed
    }

    /// The form lookups use (see [`NormalizedEmail`]).
    pub fn normalized(&self) -> NormalizedEmail {
        self.normalized.clone()
    }
}

/// What the `email_lower` columns hold: the address in NFKC (so NFC and NFD spellings, and
/// fullwidth or other compatibility forms, are one address), then lower-cased. Strictly the
/// local part is case-sensitive, but no mail provider in use treats it so, and two accounts that
/// differ only in case are a support ticket waiting to happen. Lower-casing rather than full
/// case folding keeps `ß` and `ss` apart, as IDNA2008 keeps them apart in domain names: they can
/// be two real mailboxes. Only made from an `Email`, so a lookup can never be keyed by text
/// that skipped the syntax check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedEmail(String);

impl NormalizedEmail {
    fn of(text: &str) -> Self {
        let nfkc: String = text.nfkc().collect();
        // Lower-casing can leave text that is no longer in NFKC (a dotted capital I becomes
        // `i` and a combining dot); normalizing again makes the form a fixed point.
        Self(nfkc.to_lowercase().nfkc().collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized form of an account's stored email (checked when it was stored), for
    /// keying a login throttle on the account a login challenge belongs to.
    pub fn of_stored(email: &str) -> Self {
        Self::of(email)
    }

    /// The key under which no two accounts may share an address: see [`ConfusableKey`].
    pub fn confusable_key(&self) -> ConfusableKey {
        ConfusableKey::of(&self.0)
    }
}

/// The start of a normalized address, for ListUsers' filter: normalized as an address is
/// (NFKC, lower-cased), so `ADA@` finds `ada@example.com`. Matched bytewise against
/// `email_lower`, as one index range: see [`EmailPrefix::upper_bound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailPrefix(String);

impl EmailPrefix {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let prefix = NormalizedEmail::of(raw.trim_start()).0;
        if prefix.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if prefix.chars().any(char::is_control) {
            return Err(FieldViolation::new(field, "must not contain control characters"));
        }
        if prefix.len() > MAX_BYTES {
            return Err(FieldViolation::new(field, "must be at most 254 bytes"));
        }
        Ok(Self(prefix))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The least text greater than every text that starts with the prefix (in code point order,
    /// which is UTF-8 byte order): the prefix with its last character advanced by one. `None`
    /// when there is no such text (a prefix of U+10FFFF characters only).
    pub fn upper_bound(&self) -> Option<String> {
        let mut chars: Vec<char> = self.0.chars().collect();
        while let Some(last) = chars.pop() {
            let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
            if let Some(next) = next {
                chars.push(next);
                return Some(chars.into_iter().collect());
            }
        }
        None
    }
}

/// The Unicode TS #39 skeleton of a normalized address, with one change: ASCII characters stand
/// for themselves. `аlice` with a Cyrillic `а` has the key `alice`, as `alice` does, so it
/// cannot become a second account; but `arnie` and `amie`, or `bill1` and `billl`, which a
/// plain skeleton would merge (`m` looks like `rn`, `1` like `l`), are different real mailboxes
/// that people type on ordinary keyboards, and keep different keys. A non-ASCII character takes
/// the ASCII character whose skeleton it shares when there is one (a look-alike of `m` becomes
/// `m`, not `rn`), else its own skeleton; default-ignorable characters (zero-width joiners, soft
/// hyphens) vanish, as in TS #39.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfusableKey(String);

impl ConfusableKey {
    fn of(normalized: &str) -> Self {
        let mut key = String::with_capacity(normalized.len());
        let mut buffer = [0; 4];
        for c in normalized.chars() {
            if c.is_ascii() {
                key.push(c);
                continue;
            }
            let skeleton: String = unicode_security::skeleton(c.encode_utf8(&mut buffer)).collect();
            match ASCII_BY_SKELETON.get(&skeleton) {
                Some(&ascii) => key.push(ascii),
                None => key.push_str(&skeleton),
            }
        }
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Each printable ASCII character under its TS #39 skeleton; where several share one (`l`, `1`,
/// `|`), the first in this order wins: lower-case letters, digits, the rest. Upper case never
/// occurs in a normalized address.
static ASCII_BY_SKELETON: LazyLock<HashMap<String, char>> = LazyLock::new(|| {
    let preference = ('a'..='z').chain('0'..='9').chain((b'!'..=b'~').map(char::from));
    let mut table = HashMap::new();
    let mut buffer = [0; 4];
    for c in preference {
        table.entry(unicode_security::skeleton(c.encode_utf8(&mut buffer)).collect()).or_insert(c);
    }
    table
});

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
    fn a_prefix_is_normalized_and_bounded_by_its_successor() {
        let prefix = EmailPrefix::parse("email_prefix", "ADA").unwrap();
        assert_eq!(prefix.as_str(), "ada");
        assert_eq!(prefix.upper_bound().as_deref(), Some("adb"));
        let fullwidth = EmailPrefix::parse("email_prefix", "\u{ff21}").unwrap();
        assert_eq!(fullwidth.as_str(), "a");
        let last = EmailPrefix::parse("email_prefix", "a\u{d7ff}").unwrap();
        assert_eq!(last.upper_bound().as_deref(), Some("a\u{e000}"), "surrogates skipped");
        let max = EmailPrefix::parse("email_prefix", "b\u{10ffff}").unwrap();
        assert_eq!(max.upper_bound().as_deref(), Some("c"));
        assert!(EmailPrefix::parse("email_prefix", "\u{10ffff}").unwrap().upper_bound().is_none());
        for bad in ["", "  ", "a\u{7}"] {
            assert!(EmailPrefix::parse("email_prefix", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn valid_addresses_are_trimmed_and_kept_as_given() {
        let email: Email = "  Alice.Smith@Example.COM ".parse().unwrap();
        assert_eq!(email.as_str(), "Alice.Smith@Example.COM");
        assert_eq!(email.normalized().as_str(), "alice.smith@example.com");
    }

    fn normalized(text: &str) -> String {
        text.parse::<Email>().unwrap().normalized().as_str().to_owned()
    }

    fn key(text: &str) -> String {
        text.parse::<Email>().unwrap().normalized().confusable_key().as_str().to_owned()
    }

    #[test]
    fn nfc_nfd_and_fullwidth_spellings_are_one_address() {
        let nfc = "jos\u{e9}@example.com";
        let nfd = "jose\u{301}@example.com";
        assert_ne!(nfc, nfd);
        assert_eq!(normalized(nfc), normalized(nfd));
        assert_eq!(normalized("\u{ff21}lice@example.com"), "alice@example.com");
        assert_eq!(normalized("\u{130}nci@example.com"), normalized("i\u{307}nci@example.com"));
        // Lower-cased, not case-folded: these can be two mailboxes.
        assert_ne!(normalized("stra\u{df}e@example.com"), normalized("strasse@example.com"));
    }

    #[test]
    fn a_normalized_form_that_is_no_address_is_refused() {
        // U+FE52 SMALL FULL STOP becomes `.`, and `a..b` is not a valid local part.
        assert!("a\u{fe52}.b@example.com".parse::<Email>().is_err());
    }

    #[test]
    fn look_alikes_share_a_key_and_distinct_ascii_addresses_do_not() {
        let alice = key("alice@example.com");
        // Cyrillic а, Greek ο in the domain, a zero-width joiner.
        for look_alike in ["\u{430}lice@example.com", "alice@example.c\u{3bf}m", "ali\u{200d}ce@example.com"]
        {
            assert_eq!(key(look_alike), alice, "{look_alike:?}");
        }
        assert_ne!(key("amie@example.com"), key("arnie@example.com"));
        assert_ne!(key("bill1@example.com"), key("billl@example.com"));
        assert_ne!(key("bob@example.com"), alice);
        // A non-ASCII look-alike of `l` takes the ASCII letter.
        assert_eq!(key("\u{4cf}ily@example.com"), key("lily@example.com"));
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
