//! Checking a password against a stored hash in each [`HashScheme`], on a hash thread. bcrypt
//! made here is checked in full; every imported scheme is checked as the app that wrote it did.

use argon2::PasswordVerifier;
use subtle::ConstantTimeEq;

use crate::domain::{HashScheme, PasswordHash, Pbkdf2Parts, parse_argon2};

/// What a check cost, so the caller can top it up to one verify at the configured cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spent {
    /// One bcrypt verify at this cost.
    Bcrypt(u32),
    /// Another scheme's check, whose cost is only known as the time it took.
    Measured,
    /// Nothing: no password, an unknown scheme, a malformed hash, or a password bcrypt made
    /// here cannot have been set with (72 bytes or more).
    Nothing,
}

/// Whether `text` is the password behind `hash`, and what finding out cost.
pub(super) fn check(hash: &PasswordHash, text: &str) -> (bool, Spent) {
    let bcrypt_spent = || hash.cost().map_or(Spent::Nothing, Spent::Bcrypt);
    match hash.scheme() {
        Some(HashScheme::Bcrypt) => match bcrypt::non_truncating_verify(text, hash.expose()) {
            Ok(matches) => (matches, bcrypt_spent()),
            Err(_) => (false, Spent::Nothing),
        },
        // What the old app did: bcrypt reads the first 72 bytes of a longer password.
        Some(HashScheme::ImportedBcrypt) => match bcrypt::verify(text, hash.expose()) {
            Ok(matches) => (matches, bcrypt_spent()),
            Err(_) => (false, Spent::Nothing),
        },
        Some(HashScheme::Argon2id | HashScheme::Argon2i) => match parse_argon2(hash.expose()) {
            Ok((parsed, _)) => {
                (argon2::Argon2::default().verify_password(text.as_bytes(), &parsed).is_ok(), Spent::Measured)
            }
            Err(_) => (false, Spent::Nothing),
        },
        Some(HashScheme::PasslibPbkdf2Sha256) => pbkdf2(Pbkdf2Parts::passlib(hash.expose()).ok(), text),
        Some(HashScheme::DjangoPbkdf2Sha256) => pbkdf2(Pbkdf2Parts::django(hash.expose()).ok(), text),
        Some(HashScheme::NoPassword) | None => (false, Spent::Nothing),
    }
}

fn pbkdf2(parts: Option<Pbkdf2Parts>, text: &str) -> (bool, Spent) {
    let Some(parts) = parts else { return (false, Spent::Nothing) };
    let mut derived = vec![0u8; parts.checksum.len()];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(text.as_bytes(), &parts.salt, parts.rounds, &mut derived);
    (bool::from(derived.ct_eq(&parts.checksum)), Spent::Measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Python (tests/fixtures/import/make_fixtures.py): bcrypt 4.3 (which truncates at
    /// 72 bytes), argon2-cffi, passlib and Django's algorithm.
    const FIXTURES: &[(&str, &str)] = &[
        (
            "$2b$12$0iA2Qq1twOBcsm.P4uDI8e.KcmAbkgNyNiptGjhEtm2fRehhKV9FK",
            "the quick brown fox jumps over the lazy dog while the cat watches from the sofa!!",
        ),
        (
            "$argon2id$v=19$m=19456,t=2,p=1$/svG85JNzzzHPHpVmK3HWw$gv0AFmW0o/kCMViBf76vGxwGumRIV+ZSoRGLbZPBT9k",
            "erin-argon2id-password",
        ),
        (
            "$argon2i$v=19$m=19456,t=2,p=1$ZnJhbmstc2FsdC0xNmJ5dA$/ddes9hheU2PNK/J7p8O4p3FI7vauwPPzS8E9au7xRY",
            "frank-argon2i-password",
        ),
        (
            "$pbkdf2-sha256$29000$kpKyVsrZu3eOcU6pde69dw$CeqV4I3UxBNT5FkMFWmXVmS/q6KFeJ5SivBRhIjXKQU",
            "grace-passlib-pbkdf2",
        ),
        (
            "pbkdf2_sha256$100000$Uvm6MpZVQrM87eBHLgZubw$qfmdXJi74RrgKEUvAkVu0Oo5Oow8g5iFBiw3gNrxwTo=",
            "heidi-django-pbkdf2",
        ),
    ];

    #[test]
    fn each_imported_scheme_checks_its_password_and_no_other() {
        for (text, password) in FIXTURES {
            let hash = PasswordHash::parse_imported(text).unwrap();
            assert!(check(&hash, password).0, "{:?}", hash.scheme());
            assert!(!check(&hash, &format!("x{password}")).0, "{:?}", hash.scheme());
        }
    }

    #[test]
    fn only_imported_bcrypt_reads_just_the_first_72_bytes() {
        let (text, password) = FIXTURES[0];
        let imported = PasswordHash::parse_imported(text).unwrap();
        assert!(check(&imported, &password[..72]).0, "what the old app hashed");
        let ours = PasswordHash::new(text.to_owned());
        assert_eq!(check(&ours, password), (false, Spent::Nothing));
    }

    #[test]
    fn no_password_and_unknown_schemes_never_match() {
        assert_eq!(check(&PasswordHash::no_password(), ""), (false, Spent::Nothing));
        let unknown = PasswordHash::from_stored(FIXTURES[3].0.into(), false, "sha1-crypt");
        assert_eq!(check(&unknown, FIXTURES[3].1), (false, Spent::Nothing));
    }
}
