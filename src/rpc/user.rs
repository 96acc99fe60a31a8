//! `identity.v1.UserService`: the caller's own account, reached with a bearer access token.

use std::sync::Arc;

use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    proto::{
        ChangePasswordRequest, ChangePasswordResponse, GetCurrentUserRequest, GetCurrentUserResponse,
        user_service_server::UserService,
    },
    requester::requester,
    user_message,
};
use crate::{
    clients::TrustedProxies,
    domain::{PasswordPolicy, PresentedPassword, Violations},
    error::AppError,
    service::Identity,
    tokens::VerifiedToken,
};

/// Longest current password accepted: well above the policy's ceiling, so a password set under
/// an older policy still works, yet nobody sends megabytes to be hashed.
const MAX_CURRENT_PASSWORD_BYTES: usize = 1024;

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
}

#[tonic::async_trait]
impl UserService for UserApi {
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
        let caller = self.authenticate(request.metadata())?;
        let requester = requester(&request, &self.proxies);
        self.identity.shed_if_saturated(&requester)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let current = violations.check(PresentedPassword::parse_settable(
            "current_password",
            request.current_password,
            MAX_CURRENT_PASSWORD_BYTES,
        ));
        let context = [caller.claims.email.as_str(), caller.claims.name.as_str()];
        let new_password =
            violations.check(self.policy.check("new_password", &request.new_password, &context));
        let (current, new_password) = violations.finish(current.zip(new_password)).map_err(AppError::from)?;
        self.identity.change_password(&caller, &current, &new_password, &requester).await?;
        Ok(Response::new(ChangePasswordResponse {}))
    }
}
