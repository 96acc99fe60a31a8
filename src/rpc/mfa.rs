//! The second factor on the wire: a presented [`proto::SecondFactor`] becomes a domain
//! [`SecondFactor`] (naming the field that fails), and the service's answers become messages.

use secrecy::ExposeSecret;

use super::{proto, timestamp};
use crate::{
    domain::{FieldViolation, RecoveryCode, SecondFactor, TotpCode},
    service::MfaChallenge,
};

/// `second_factor` with one of its two codes set.
pub(super) fn parse_second_factor(
    field: &'static str,
    presented: Option<proto::SecondFactor>,
) -> Result<SecondFactor, FieldViolation> {
    match presented.and_then(|factor| factor.factor) {
        Some(proto::second_factor::Factor::TotpCode(code)) => {
            TotpCode::parse(concat_field(field, "totp_code"), &code).map(SecondFactor::Totp)
        }
        Some(proto::second_factor::Factor::RecoveryCode(code)) => {
            RecoveryCode::parse(concat_field(field, "recovery_code"), &code).map(SecondFactor::Recovery)
        }
        None => Err(FieldViolation::new(field, "must hold a totp_code or a recovery_code")),
    }
}

/// The path of a code within `second_factor` (the only field name callers use).
fn concat_field(field: &'static str, code: &'static str) -> &'static str {
    match (field, code) {
        ("second_factor", "totp_code") => "second_factor.totp_code",
        ("second_factor", "recovery_code") => "second_factor.recovery_code",
        _ => code,
    }
}

pub(super) fn challenge_message(challenge: &MfaChallenge) -> proto::MfaChallenge {
    proto::MfaChallenge {
        challenge: challenge.handle.expose_secret().to_owned(),
        allowed_factors: vec![proto::MfaFactor::Totp.into(), proto::MfaFactor::RecoveryCode.into()],
        expires_at: Some(timestamp(challenge.expires_at)),
    }
}

pub(super) fn recovery_codes_message(codes: &[RecoveryCode]) -> Vec<String> {
    codes.iter().map(RecoveryCode::display).collect()
}
