//! The forms of the password hashes other apps write, read once: at import, to refuse what no
//! login could check, and at each check of such a hash, by the same parsers. The crypto itself
//! runs in `passwords`, on the hash pool.

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};

use super::stored::HashScheme;

/// Why an imported hash was refused. Never quotes the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportedHashError {
    #[error(
        "not a hash in a scheme identity can check (bcrypt, argon2id, argon2i, pbkdf2-sha256 of passlib or Django)"
    )]
    Unknown,
    #[error("a malformed {0} hash")]
    Malformed(&'static str),
    #[error("a {0} hash whose parameters exceed what a login may cost ({1})")]
    TooCostly(&'static str, String),
}

/// The most an imported Argon2 hash may ask of a login: enough for every default in use
/// (argon2-cffi and Keycloak: 64 MiB; OWASP's smallest: 19 MiB) without letting one row hold
/// gigabytes of memory on a hash thread.
#[derive(Debug, Clone, Copy)]
pub struct Argon2Bounds;

impl Argon2Bounds {
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    pub const MAX_TIME_COST: u32 = 16;
    pub const MAX_PARALLELISM: u32 = 16;
}

/// PBKDF2-HMAC-SHA256 as passlib or Django stores it, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Pbkdf2Parts {
    pub rounds: u32,
    pub salt: Vec<u8>,
    pub checksum: Vec<u8>,
}

impl std::fmt::Debug for Pbkdf2Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pbkdf2Parts").field("rounds", &self.rounds).finish_non_exhaustive()
    }
}

impl Pbkdf2Parts {
    /// Django 5.2 uses 1,000,000; ten times that would hold a hash thread for seconds.
    pub const MAX_ROUNDS: u32 = 10_000_000;

    /// passlib: `$pbkdf2-sha256$ROUNDS$SALT$CHECKSUM`, salt and checksum in its adapted base64
    /// (`.` for `+`, no padding); the salt is the decoded bytes.
    pub fn passlib(text: &str) -> Result<Self, ImportedHashError> {
        const NAME: &str = "pbkdf2-sha256";
        let malformed = || ImportedHashError::Malformed(NAME);
        let rest = text.strip_prefix("$pbkdf2-sha256$").ok_or_else(malformed)?;
        let mut fields = rest.split('$');
        let (Some(rounds), Some(salt), Some(checksum), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        let ab64 = |field: &str| lenient_base64().decode(field.replace('.', "+")).map_err(|_| malformed());
        Self::checked(NAME, rounds, ab64(salt)?, ab64(checksum)?)
    }

    /// Django: `pbkdf2_sha256$ITERATIONS$SALT$BASE64`; the salt is used as the text it is.
    pub fn django(text: &str) -> Result<Self, ImportedHashError> {
        const NAME: &str = "django-pbkdf2-sha256";
        let malformed = || ImportedHashError::Malformed(NAME);
        let rest = text.strip_prefix("pbkdf2_sha256$").ok_or_else(malformed)?;
        let mut fields = rest.split('$');
        let (Some(rounds), Some(salt), Some(checksum), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        let checksum = lenient_base64().decode(checksum).map_err(|_| malformed())?;
        Self::checked(NAME, rounds, salt.as_bytes().to_vec(), checksum)
    }

    fn checked(
        name: &'static str,
        rounds: &str,
        salt: Vec<u8>,
        checksum: Vec<u8>,
    ) -> Result<Self, ImportedHashError> {
        let rounds: u32 = rounds.parse().map_err(|_| ImportedHashError::Malformed(name))?;
        if rounds == 0 || salt.is_empty() || !(16..=64).contains(&checksum.len()) {
            return Err(ImportedHashError::Malformed(name));
        }
        if rounds > Self::MAX_ROUNDS {
            return Err(ImportedHashError::TooCostly(
                name,
                format!("{rounds} rounds; at most {}", Self::MAX_ROUNDS),
            ));
        }
        Ok(Self { rounds, salt, checksum })
    }
}

/// Standard base64, padded or not.
fn lenient_base64() -> GeneralPurpose {
    GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// An Argon2 hash in PHC format, parsed and held to [`Argon2Bounds`].
pub fn argon2(text: &str) -> Result<(argon2::PasswordHash<'_>, HashScheme), ImportedHashError> {
    let (scheme, name) = if text.starts_with("$argon2id$") {
        (HashScheme::Argon2id, "argon2id")
    } else if text.starts_with("$argon2i$") {
        (HashScheme::Argon2i, "argon2i")
    } else {
        return Err(ImportedHashError::Unknown);
    };
    let parsed = argon2::PasswordHash::new(text).map_err(|_| ImportedHashError::Malformed(name))?;
    let params = argon2::Params::try_from(&parsed).map_err(|_| ImportedHashError::Malformed(name))?;
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(ImportedHashError::Malformed(name));
    }
    if params.m_cost() > Argon2Bounds::MAX_MEMORY_KIB
        || params.t_cost() > Argon2Bounds::MAX_TIME_COST
        || params.p_cost() > Argon2Bounds::MAX_PARALLELISM
    {
        return Err(ImportedHashError::TooCostly(
            name,
            format!(
                "m={},t={},p={}; at most m={},t={},p={}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                Argon2Bounds::MAX_MEMORY_KIB,
                Argon2Bounds::MAX_TIME_COST,
                Argon2Bounds::MAX_PARALLELISM
            ),
        ));
    }
    Ok((parsed, scheme))
}

/// The scheme of an imported hash, if it is one identity can check and within its bounds.
pub(super) fn recognise(text: &str) -> Result<HashScheme, ImportedHashError> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|prefix| text.starts_with(prefix)) {
        let parts = text.parse::<bcrypt::HashParts>().map_err(|_| ImportedHashError::Malformed("bcrypt"))?;
        // bcrypt's own ceiling is 31; beyond 16 one login would take minutes.
        if parts.get_cost() > 16 {
            return Err(ImportedHashError::TooCostly(
                "bcrypt",
                format!("cost {}; at most 16", parts.get_cost()),
            ));
        }
        return Ok(HashScheme::ImportedBcrypt);
    }
    if text.starts_with("$argon2") {
        return argon2(text).map(|(_, scheme)| scheme);
    }
    if text.starts_with("$pbkdf2-sha256$") {
        return Pbkdf2Parts::passlib(text).map(|_| HashScheme::PasslibPbkdf2Sha256);
    }
    if text.starts_with("pbkdf2_sha256$") {
        return Pbkdf2Parts::django(text).map(|_| HashScheme::DjangoPbkdf2Sha256);
    }
    Err(ImportedHashError::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_is_recognised_by_its_form() {
        let cases = [
            ("$2b$12$.T9qvKCow/Kv9cB13KqzFu/smAvD2qROHQUtwvjCRrDcq8eDwDeBK", HashScheme::ImportedBcrypt),
            ("$2y$04$.T9qvKCow/Kv9cB13KqzFu/smAvD2qROHQUtwvjCRrDcq8eDwDeBK", HashScheme::ImportedBcrypt),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$56UC/yK6NbUaowO8StsBrg$H/0Si+K7vEwR8w64jQBnh3x/RKkPsMK05DlHVUHScQg",
                HashScheme::Argon2id,
            ),
            (
                "$argon2i$v=19$m=19456,t=2,p=1$ZnJhbmstc2FsdC0xNmJ5dA$/ddes9hheU2PNK/J7p8O4p3FI7vauwPPzS8E9au7xRY",
                HashScheme::Argon2i,
            ),
            (
                "$pbkdf2-sha256$29000$aC0FACBE6L23FuI8B4Awxg$mfXfLTAjhZaMbMF5AYmlnvsPhthdRaJErl4Txiv9bxQ",
                HashScheme::PasslibPbkdf2Sha256,
            ),
            (
                "pbkdf2_sha256$100000$9TnZargDBqp66CdF2kl2eA$OYhPIdCN3YOX90hUgHuY6DwKB3FevQ1NzyWdS3L/qrY=",
                HashScheme::DjangoPbkdf2Sha256,
            ),
        ];
        for (text, scheme) in cases {
            assert_eq!(recognise(text), Ok(scheme), "{text}");
        }
    }

    #[test]
    fn unknown_malformed_and_costly_hashes_are_refused() {
        assert_eq!(recognise("5f4dcc3b5aa765d61d8327deb882cf99"), Err(ImportedHashError::Unknown));
        assert_eq!(recognise("$1$salt$hash"), Err(ImportedHashError::Unknown));
        assert_eq!(recognise("$2b$12$short"), Err(ImportedHashError::Malformed("bcrypt")));
        assert!(matches!(
            recognise(
                "$argon2id$v=19$m=4194304,t=2,p=1$56UC/yK6NbUaowO8StsBrg$H/0Si+K7vEwR8w64jQBnh3x/RKkPsMK05DlHVUHScQg"
            ),
            Err(ImportedHashError::TooCostly("argon2id", _))
        ));
        assert!(matches!(
            recognise("pbkdf2_sha256$900000000$salt$OYhPIdCN3YOX90hUgHuY6DwKB3FevQ1NzyWdS3L/qrY="),
            Err(ImportedHashError::TooCostly(..))
        ));
        assert_eq!(
            recognise("$pbkdf2-sha256$29000$aC0FACBE6L23FuI8B4Awxg"),
            Err(ImportedHashError::Malformed("pbkdf2-sha256"))
        );
        assert_eq!(
            recognise("pbkdf2_sha256$x$salt$OYhPIdCN3YOX90hUgHuY6DwKB3FevQ1NzyWdS3L/qrY="),
            Err(ImportedHashError::Malformed("django-pbkdf2-sha256"))
        );
        let error = recognise("pbkdf2_sha256$1000$salt$notbase64!!").unwrap_err().to_string();
        assert!(!error.contains("notbase64"));
    }

    #[test]
    fn passlib_salts_are_decoded_from_its_adapted_base64() {
        let parts =
            Pbkdf2Parts::passlib("$pbkdf2-sha256$1000$a.bc$mfXfLTAjhZaMbMF5AYmlnvsPhthdRaJErl4Txiv9bxQ")
                .unwrap();
        assert_eq!(parts.salt, [0x6b, 0xe6, 0xdc]);
        assert_eq!(parts.checksum.len(), 32);
        let django =
            Pbkdf2Parts::django("pbkdf2_sha256$1000$a.b$OYhPIdCN3YOX90hUgHuY6DwKB3FevQ1NzyWdS3L/qrY=")
                .unwrap();
        assert_eq!(django.salt, b"a.b");
    }
}
