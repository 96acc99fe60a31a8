//! `identity.v1.UserService`: the caller's own account, reached with a bearer access token.

use std::sync::Arc;

use secrecy::ExposeSecret;

use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    mfa::{parse_second_factor, recovery_codes_message},
    parse_session_id,
    proto::{
        BeginTotpEnrollmentRequest, BeginTotpEnrollmentResponse, ChangeEmailRequest, ChangeEmailResponse,
        ChangePasswordRequest, ChangePasswordResponse, ConfirmTotpEnrollmentRequest,
        ConfirmTotpEnrollmentResponse, DeleteAccountRequest, DeleteAccountResponse, DisableTotpRequest,
        DisableTotpResponse, GetCurrentUserRequest, GetCurrentUserResponse, ListSessionsRequest,
        ListSessionsResponse, RegenerateRecoveryCodesRequest, RegenerateRecoveryCodesResponse,
        RevokeSessionRequest, RevokeSessionResponse, SendVerificationEmailRequest,
        SendVerificationEmailResponse, StepUpRequest, StepUpResponse, user_service_server::UserService,
    },
    requester::requester,
    session_message, user_message,
};
use crate::{
    clients::{Requester, TrustedProxies},
    domain::{Email, PasswordPolicy, PresentedPassword, TotpCode, Violations},
    error::AppError,
    service::Identity,
    tokens::VerifiedToken,
};

pub struct UserApi {
    identity: Arc<Identity>,
    policy: PasswordPolicy,
    proxies: TrustedProxies,
}

impl UserApi {
    pub fn new(identity: Arc<Identity>, policy: PasswordPolicy, proxies: TrustedProxies) -> Self {
        Self { identity, policy, proxies }
    }

    /// The claims of the active access token in `authorization: Bearer <token>`.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Arc<VerifiedToken>, AppError> {
        let header = metadata
            .get("authorization")
            .ok_or(AppError::Unauthenticated("missing authorization metadata"))?
            .to_str()
            .map_err(|_| {
                AppError::Unauthenticated("authorization metadata must be `Bearer <access token>`")
            })?;
        let token = super::bearer_token(header)
            .ok_or(AppError::Unauthenticated("authorization metadata must be `Bearer <access token>`"))?;
        self.identity.validate(token).map_err(|reason| {
            tracing::debug!(%reason, "inactive bearer token");
            AppError::Unauthenticated("invalid or expired access token")
        })
    }

    /// The caller of a call that checks the current password (and so hashes): authenticated,
    /// and shed before any other work when the hash pool is full.
    async fn password_checking_caller<T: Sync>(
        &self,
        request: &Request<T>,
    ) -> Result<(Arc<VerifiedToken>, Requester), AppError> {
        let caller = self.authenticate(request.metadata())?;
        let requester = requester(request, &self.proxies);
        self.identity.shed_if_saturated(&requester).await?;
        Ok((caller, requester))
    }
}

/// The current password of a call that checks it.
fn current_password(raw: String) -> Result<PresentedPassword, crate::domain::FieldViolation> {
    PresentedPassword::parse_checked("current_password", raw)
}

/// The current password and second factor of a call that checks both.
fn password_and_factor(
    password: String,
    factor: Option<super::proto::SecondFactor>,
) -> Result<(PresentedPassword, crate::domain::SecondFactor), AppError> {
    let mut violations = Violations::default();
    let current = violations.check(current_password(password));
    let factor = violations.check(parse_second_factor("second_factor", factor));
    Ok(violations.finish(current.zip(factor))?)
}

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(skip_all)]
    async fn begin_totp_enrollment(
        &self,
        request: Request<BeginTotpEnrollmentRequest>,
    ) -> Result<Response<BeginTotpEnrollmentResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        let start = self.identity.begin_totp_enrollment(&caller).await?;
        Ok(Response::new(BeginTotpEnrollmentResponse {
            otpauth_uri: start.otpauth_uri.expose_secret().to_owned(),
            qr_code_png: start.qr_png,
            secret: start.secret_base32.expose_secret().to_owned(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_totp_enrollment(
        &self,
        request: Request<ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<ConfirmTotpEnrollmentResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        let requester = requester(&request, &self.proxies);
        let mut violations = Violations::default();
        let code = violations.check(TotpCode::parse("totp_code", &request.get_ref().totp_code));
        let code = violations.finish(code).map_err(AppError::from)?;
        let codes = self.identity.confirm_totp_enrollment(&caller, &code, &requester).await?;
        Ok(Response::new(ConfirmTotpEnrollmentResponse { recovery_codes: recovery_codes_message(&codes) }))
    }

    #[tracing::instrument(skip_all)]
    async fn regenerate_recovery_codes(
        &self,
        request: Request<RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<RegenerateRecoveryCodesResponse>, Status> {
        let (caller, requester) = self.password_checking_caller(&request).await?;
        let request = request.into_inner();
        let (current, factor) = password_and_factor(request.current_password, request.second_factor)?;
        let codes = self.identity.regenerate_recovery_codes(&caller, &current, &factor, &requester).await?;
        Ok(Response::new(RegenerateRecoveryCodesResponse { recovery_codes: recovery_codes_message(&codes) }))
    }

    #[tracing::instrument(skip_all)]
    async fn disable_totp(
        &self,
        request: Request<DisableTotpRequest>,
    ) -> Result<Response<DisableTotpResponse>, Status> {
        let (caller, requester) = self.password_checking_caller(&request).await?;
        let request = request.into_inner();
        let (current, factor) = password_and_factor(request.current_password, request.second_factor)?;
        self.identity.disable_totp(&caller, &current, &factor, &requester).await?;
        Ok(Response::new(DisableTotpResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn step_up(&self, request: Request<StepUpRequest>) -> Result<Response<StepUpResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        let requester = requester(&request, &self.proxies);
        let mut violations = Violations::default();
        let factor =
            violations.check(parse_second_factor("second_factor", request.into_inner().second_factor));
        let factor = violations.finish(factor).map_err(AppError::from)?;
        let access = self.identity.step_up(&caller, &factor, &requester).await?;
        let expires_in =
            (access.expires_at - self.identity.now()).num_seconds().clamp(0, i64::from(i32::MAX));
        Ok(Response::new(StepUpResponse {
            access_token: access.token,
            expires_in: i32::try_from(expires_in).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_current_user(
        &self,
        request: Request<GetCurrentUserRequest>,
    ) -> Result<Response<GetCurrentUserResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        let user = self.identity.current_user(&caller.claims).await?;
        Ok(Response::new(GetCurrentUserResponse { user: Some(user_message(&user)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let (caller, requester) = self.password_checking_caller(&request).await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let current = violations.check(current_password(request.current_password));
        let context = [caller.claims.email.as_str(), caller.claims.name.as_str()];
        let new_password =
            violations.check(self.policy.check("new_password", &request.new_password, &context));
        let (current, new_password) = violations.finish(current.zip(new_password)).map_err(AppError::from)?;
        self.identity.change_password(&caller, &current, &new_password, &requester).await?;
        Ok(Response::new(ChangePasswordResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn send_verification_email(
        &self,
        request: Request<SendVerificationEmailRequest>,
    ) -> Result<Response<SendVerificationEmailResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        self.identity.send_verification(&caller.claims).await?;
        Ok(Response::new(SendVerificationEmailResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn change_email(
        &self,
        request: Request<ChangeEmailRequest>,
    ) -> Result<Response<ChangeEmailResponse>, Status> {
        let (caller, requester) = self.password_checking_caller(&request).await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let current = violations.check(current_password(request.current_password));
        let new_email = violations.check(Email::parse("new_email", &request.new_email));
        let (current, new_email) = violations.finish(current.zip(new_email)).map_err(AppError::from)?;
        self.identity.change_email(&caller, &current, &new_email, &requester).await?;
        Ok(Response::new(ChangeEmailResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        let sessions = self.identity.own_sessions(&caller).await?;
        let current = Some(caller.claims.sid);
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions.iter().map(|session| session_message(session, current)).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let caller = self.authenticate(request.metadata())?;
        let mut violations = Violations::default();
        let session = violations.check(parse_session_id("session_id", &request.get_ref().session_id));
        let session = violations.finish(session).map_err(AppError::from)?;
        self.identity.revoke_own_session(&caller, session).await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        let (caller, requester) = self.password_checking_caller(&request).await?;
        let mut violations = Violations::default();
        let current = violations.check(current_password(request.into_inner().current_password));
        let current = violations.finish(current).map_err(AppError::from)?;
        self.identity.delete_account(&caller, &current, &requester).await?;
        Ok(Response::new(DeleteAccountResponse {}))
    }
}
