use std::sync::Arc;

use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    proto::{
        ChangePasswordRequest, ChangePasswordResponse, GetCurrentUserRequest,
        GetCurrentUserResponse, user_service_server::UserService,
    },
    user_message,
};
use crate::{error::AppError, service::Identity, tokens::AccessClaims};

pub struct UserApi {
    identity: Arc<Identity>,
}

impl UserApi {
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }

    /// The claims of the active access token in `authorization: Bearer <token>`.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<AccessClaims, AppError> {
        let header = metadata
            .get("authorization")
            .ok_or(AppError::Unauthenticated("missing authorization metadata"))?
            .to_str()
            .map_err(|_| {
                AppError::Unauthenticated("authorization metadata must be `Bearer <access token>`")
            })?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(AppError::Unauthenticated(
                "authorization metadata must be `Bearer <access token>`",
            ))?;
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
        let claims = self.authenticate(request.metadata())?;
        let user = self.identity.current_user(&claims).await?;
        Ok(Response::new(GetCurrentUserResponse {
            user: Some(user_message(&user)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let _claims = self.authenticate(request.metadata())?;
        Err(Status::unimplemented(
            "ChangePassword is not implemented yet",
        ))
    }
}
