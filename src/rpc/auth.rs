//! `identity.v1.AuthService`: signup, login, refresh and logout. Requests become domain types
//! here (naming the field that fails) before the service sees them.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    mfa::{challenge_message, parse_second_factor},
    proto::{
        CompleteLoginRequest, CompleteLoginResponse, LoginRequest, LoginResponse, LogoutRequest,
        LogoutResponse, RefreshTokenRequest, RefreshTokenResponse, RequestPasswordResetRequest,
        RequestPasswordResetResponse, ResetPasswordRequest, ResetPasswordResponse, SignupRequest,
        SignupResponse, VerifyEmailRequest, VerifyEmailResponse, auth_service_server::AuthService,
    },
    requester::{requester, session_origin},
    tokens_message, user_message,
};
use crate::{
    clients::TrustedProxies,
    domain::{
        Email, FullName, InvalidRequest, Password, PasswordPolicy, Presented, PresentedPassword, Violations,
    },
    error::AppError,
    service::{Identity, LoginOutcome, SignupInput},
    tokens::RefreshToken,
};

/// Ours are 43 characters; anything much longer is not one.
const MAX_REFRESH_TOKEN_BYTES: usize = 512;

pub struct AuthApi {
    identity: Arc<Identity>,
    policy: PasswordPolicy,
    proxies: TrustedProxies,
}

impl AuthApi {
    pub fn new(identity: Arc<Identity>, policy: PasswordPolicy, proxies: TrustedProxies) -> Self {
        Self { identity, policy, proxies }
    }
}

fn parse_signup(policy: &PasswordPolicy, request: &SignupRequest) -> Result<SignupInput, InvalidRequest> {
    let mut violations = Violations::default();
    let email = violations.check(Email::parse("email", &request.email));
    let full_name = violations.check(FullName::parse("full_name", &request.full_name));
    let context = [request.email.trim(), request.full_name.trim()];
    let password = violations.check(policy.check("password", &request.password, &context));
    violations.finish(email.zip(full_name).zip(password).map(|((email, full_name), password)| SignupInput {
        email,
        password,
        full_name,
    }))
}

/// A login's password is not held to the signup policy (it may have changed since), only to
/// the limits of any presented value, so a weak old password still reads as "invalid email or
/// password". The email must be a syntactically valid address, as at signup: a malformed one
/// is INVALID_ARGUMENT naming `email`, which depends on the input alone and so says nothing
/// about which accounts exist, and it costs no lockout row and no database round trip. So is a
/// password longer than any that is read (`PresentedPassword::parse_checked`): refused before
/// anything is counted.
fn parse_login(request: LoginRequest) -> Result<(Email, PresentedPassword), InvalidRequest> {
    let mut violations = Violations::default();
    let email = violations.check(Email::parse("email", &request.email));
    let password = violations.check(PresentedPassword::parse_checked("password", request.password));
    violations.finish(email.zip(password))
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all)]
    async fn signup(&self, request: Request<SignupRequest>) -> Result<Response<SignupResponse>, Status> {
        let requester = requester(&request, &self.proxies);
        self.identity.shed_if_saturated(&requester).await?;
        let input = parse_signup(&self.policy, request.get_ref()).map_err(AppError::from)?;
        let user = self.identity.signup(input, &requester).await?;
        Ok(Response::new(SignupResponse { user: Some(user_message(&user)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let requester = requester(&request, &self.proxies);
        self.identity.shed_if_saturated(&requester).await?;
        let origin = session_origin(&request, &self.proxies);
        let (email, password) = parse_login(request.into_inner()).map_err(AppError::from)?;
        let response = match self.identity.login(&email, &password, &requester, &origin).await? {
            LoginOutcome::Tokens(user, tokens) => LoginResponse {
                tokens: Some(tokens_message(tokens)),
                user: Some(user_message(&user)),
                mfa_challenge: None,
            },
            LoginOutcome::SecondFactorRequired(challenge) => {
                LoginResponse { tokens: None, user: None, mfa_challenge: Some(challenge_message(&challenge)) }
            }
        };
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_login(
        &self,
        request: Request<CompleteLoginRequest>,
    ) -> Result<Response<CompleteLoginResponse>, Status> {
        let requester = requester(&request, &self.proxies);
        let origin = session_origin(&request, &self.proxies);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let challenge =
            violations.check(Presented::parse("challenge", request.challenge, MAX_REFRESH_TOKEN_BYTES));
        let factor = violations.check(parse_second_factor("second_factor", request.second_factor));
        let (challenge, factor) = violations.finish(challenge.zip(factor)).map_err(AppError::from)?;
        let (user, tokens) =
            self.identity.complete_login(challenge.into_inner().trim(), &factor, &requester, &origin).await?;
        Ok(Response::new(CompleteLoginResponse {
            tokens: Some(tokens_message(tokens)),
            user: Some(user_message(&user)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(
        &self,
        request: Request<RefreshTokenRequest>,
    ) -> Result<Response<RefreshTokenResponse>, Status> {
        let presented = parse_refresh_token(request.into_inner().refresh_token).map_err(AppError::from)?;
        let tokens = self.identity.refresh(&presented).await?;
        Ok(Response::new(RefreshTokenResponse { tokens: Some(tokens_message(tokens)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn request_password_reset(
        &self,
        request: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &request.get_ref().email));
        let email = violations.finish(email).map_err(AppError::from)?;
        self.identity.request_password_reset(&email).await?;
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        let requester = requester(&request, &self.proxies);
        self.identity.shed_if_saturated(&requester).await?;
        let (token, password) = parse_reset(&self.policy, request.into_inner()).map_err(AppError::from)?;
        self.identity.reset_password(&token, &password, &requester).await?;
        Ok(Response::new(ResetPasswordResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn verify_email(
        &self,
        request: Request<VerifyEmailRequest>,
    ) -> Result<Response<VerifyEmailResponse>, Status> {
        let mut violations = Violations::default();
        let token =
            violations.check(Presented::parse("token", request.into_inner().token, MAX_REFRESH_TOKEN_BYTES));
        let token = violations.finish(token).map_err(AppError::from)?;
        let email = self.identity.verify_email(token.into_inner().trim()).await?;
        Ok(Response::new(VerifyEmailResponse { email }))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        let presented = parse_refresh_token(request.into_inner().refresh_token).map_err(AppError::from)?;
        self.identity.logout(&presented).await?;
        Ok(Response::new(LogoutResponse {}))
    }
}

/// A reset token is opaque: any text within the limits is looked up by its digest.
fn parse_reset(
    policy: &PasswordPolicy,
    request: ResetPasswordRequest,
) -> Result<(String, Password), InvalidRequest> {
    let mut violations = Violations::default();
    let token = violations.check(Presented::parse("token", request.token, MAX_REFRESH_TOKEN_BYTES));
    let password = violations.check(policy.check("new_password", &request.new_password, &[]));
    violations
        .finish(token.zip(password))
        .map(|(token, password)| (token.into_inner().trim().to_owned(), password))
}

/// Refresh tokens are opaque: any text within the limits of a presented value is looked up
/// (and simply matches nothing if it is not ours).
fn parse_refresh_token(raw: String) -> Result<RefreshToken, InvalidRequest> {
    let mut violations = Violations::default();
    let token = violations.check(Presented::parse("refresh_token", raw, MAX_REFRESH_TOKEN_BYTES));
    let token = violations.finish(token)?;
    Ok(RefreshToken::presented(token.into_inner().trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tonic::Code;

    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_length: 15 };

    /// Any text, including what arbitrary bytes decode to.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(any::<u8>(), 0..600)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[a-zA-Z0-9._%+-]{0,70}@[a-zA-Z0-9.-]{0,70}",
        ]
    }

    /// A validator may accept or refuse, but a refusal is INVALID_ARGUMENT naming real fields,
    /// and nothing panics.
    fn refused_cleanly(invalid: InvalidRequest, fields: &[&str]) -> Result<(), TestCaseError> {
        prop_assert!(!invalid.0.is_empty());
        prop_assert!(invalid.0.iter().all(|v| fields.contains(&v.field)));
        let status = Status::from(AppError::from(invalid));
        prop_assert_eq!(status.code(), Code::InvalidArgument);
        Ok(())
    }

    proptest! {
        #[test]
        fn signup_validation_accepts_or_names_a_field(email in text(), password in text(), full_name in text()) {
            let request = SignupRequest { email, password, full_name };
            if let Err(invalid) = parse_signup(&POLICY, &request) {
                refused_cleanly(invalid, &["email", "password", "full_name"])?;
            }
        }

        #[test]
        fn login_validation_accepts_or_names_a_field(email in text(), password in text()) {
            if let Err(invalid) = parse_login(LoginRequest { email, password }) {
                refused_cleanly(invalid, &["email", "password"])?;
            }
        }

        #[test]
        fn refresh_token_validation_accepts_or_names_the_field(token in text()) {
            if let Err(invalid) = parse_refresh_token(token) {
                refused_cleanly(invalid, &["refresh_token"])?;
            }
        }
    }
}
