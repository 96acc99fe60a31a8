//! `identity.v1.AdminService`: every call authorised for the `admin` permission (a service key,
//! an allow-listed certificate, or a person's token with the admin role), its request parsed into
//! domain types (INVALID_ARGUMENT naming the field), then handed to the service.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use super::{
    parse_session_id, parse_user_id,
    proto::{
        AdminServiceRevokeSessionRequest, AdminServiceRevokeSessionResponse, DeleteUserRequest,
        DeleteUserResponse, GetUserRequest, GetUserResponse, ListUserSessionsRequest,
        ListUserSessionsResponse, ListUsersRequest, ListUsersResponse, ResetMfaRequest, ResetMfaResponse,
        SetPasswordRequest, SetPasswordResponse, SetRolesRequest, SetRolesResponse, UpdateUserRequest,
        UpdateUserResponse, admin_service_server::AdminService, get_user_request,
    },
    requester::requester,
    session_message, user_message,
};
use crate::{
    clients::TrustedProxies,
    domain::{
        Caller, Email, EmailPrefix, FieldViolation, FullName, InvalidRequest, PasswordPolicy, Permission,
        Role, Violations,
    },
    error::AppError,
    service::{Identity, UserLookup},
    store::UserFilter,
};

pub struct AdminApi {
    identity: Arc<Identity>,
    policy: PasswordPolicy,
    proxies: TrustedProxies,
}

impl AdminApi {
    pub fn new(identity: Arc<Identity>, policy: PasswordPolicy, proxies: TrustedProxies) -> Self {
        Self { identity, policy, proxies }
    }

    async fn admin<T>(&self, request: &Request<T>, action: &'static str) -> Result<Caller, AppError> {
        let credential = super::caller::credential(request)?;
        self.identity.authorize(credential, Permission::Admin, action).await
    }
}

/// One id field, or INVALID_ARGUMENT naming it.
fn user_id(field: &'static str, raw: &str) -> Result<crate::domain::UserId, AppError> {
    let mut violations = Violations::default();
    let id = violations.check(parse_user_id(field, raw));
    Ok(violations.finish(id)?)
}

fn instant(
    field: &'static str,
    at: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, FieldViolation> {
    at.map(|at| {
        u32::try_from(at.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
            .ok_or_else(|| FieldViolation::new(field, "is not a valid timestamp"))
    })
    .transpose()
}

fn parse_filter(request: &ListUsersRequest) -> Result<(UserFilter, u32), InvalidRequest> {
    let mut violations = Violations::default();
    let page_size = violations.check(
        u32::try_from(request.page_size)
            .map_err(|_| FieldViolation::new("page_size", "must not be negative")),
    );
    let email_prefix = match request.email_prefix.as_str() {
        "" => Some(None),
        raw => violations.check(EmailPrefix::parse("email_prefix", raw)).map(Some),
    };
    let role = match request.role.as_str() {
        "" => Some(None),
        raw => violations.check(Role::parse("role", raw)).map(Some),
    };
    let created_from = violations.check(instant("created_after", request.created_after.as_ref()));
    let created_before = violations.check(instant("created_before", request.created_before.as_ref()));
    if request.page_token.len() > 1024 {
        violations.push(FieldViolation::new("page_token", "is not a page token of this listing"));
    }
    let parsed = page_size.zip(email_prefix).zip(role).zip(created_from).zip(created_before).map(
        |((((page_size, email_prefix), role), created_from), created_before)| {
            let filter =
                UserFilter { email_prefix, active: request.active, role, created_from, created_before };
            (filter, page_size)
        },
    );
    violations.finish(parsed)
}

/// The update a mask asks for: (full name, email, active), each `None` when not named.
type Update = (Option<FullName>, Option<Email>, Option<bool>);

fn parse_update(request: &UpdateUserRequest) -> Result<(crate::domain::UserId, Update), InvalidRequest> {
    let mut violations = Violations::default();
    let Some(user) = &request.user else {
        return Err(InvalidRequest(vec![FieldViolation::new("user", "is required")]));
    };
    let id = violations.check(parse_user_id("user.id", &user.id));
    let paths = request.update_mask.as_ref().map(|mask| mask.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        violations.push(FieldViolation::new("update_mask", "is required: full_name, email and/or is_active"));
    }
    let (mut name_named, mut email_named, mut active_named) = (false, false, false);
    for path in paths {
        match path.as_str() {
            "*" => (name_named, email_named, active_named) = (true, true, true),
            "full_name" => name_named = true,
            "email" => email_named = true,
            "is_active" => active_named = true,
            _ => violations.push(FieldViolation::new(
                "update_mask",
                "may name only full_name, email and is_active (or *)",
            )),
        }
    }
    let full_name =
        if name_named { violations.check(FullName::parse("user.full_name", &user.full_name)) } else { None };
    let email = if email_named { violations.check(Email::parse("user.email", &user.email)) } else { None };
    let active = active_named.then_some(user.is_active);
    violations.finish(id.map(|id| (id, (full_name, email, active))))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    #[tracing::instrument(skip_all)]
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let caller = self.admin(&request, "get_user").await?;
        let lookup = match &request.get_ref().user {
            Some(get_user_request::User::UserId(id)) => UserLookup::Id(user_id("user_id", id)?),
            Some(get_user_request::User::Email(email)) => {
                let mut violations = Violations::default();
                let email = violations.check(Email::parse("email", email));
                UserLookup::Email(violations.finish(email).map_err(AppError::from)?)
            }
            None => {
                return Err(AppError::from(InvalidRequest(vec![FieldViolation::new(
                    "user_id",
                    "user_id or email is required",
                )]))
                .into());
            }
        };
        let user = self.identity.admin_get_user(&caller, &lookup).await?;
        let mfa_enabled = self.identity.admin_has_mfa(user.id).await?;
        Ok(Response::new(GetUserResponse { user: Some(user_message(&user)), mfa_enabled }))
    }

    #[tracing::instrument(skip_all)]
    async fn reset_mfa(
        &self,
        request: Request<ResetMfaRequest>,
    ) -> Result<Response<ResetMfaResponse>, Status> {
        let caller = self.admin(&request, "reset_mfa").await?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let removed = self.identity.admin_reset_mfa(&caller, id).await?;
        Ok(Response::new(ResetMfaResponse { removed }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let caller = self.admin(&request, "list_users").await?;
        let (filter, page_size) = parse_filter(request.get_ref()).map_err(AppError::from)?;
        let page = self
            .identity
            .admin_list_users(&caller, &filter, page_size, &request.get_ref().page_token)
            .await?;
        Ok(Response::new(ListUsersResponse {
            users: page.users.iter().map(user_message).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let caller = self.admin(&request, "update_user").await?;
        let (id, (full_name, email, active)) = parse_update(request.get_ref()).map_err(AppError::from)?;
        let user =
            self.identity.admin_update_user(&caller, id, full_name.as_ref(), email.as_ref(), active).await?;
        Ok(Response::new(UpdateUserResponse { user: Some(user_message(&user)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_password(
        &self,
        request: Request<SetPasswordRequest>,
    ) -> Result<Response<SetPasswordResponse>, Status> {
        let caller = self.admin(&request, "set_password").await?;
        let requester = requester(&request, &self.proxies);
        self.identity.shed_if_saturated(&requester).await?;
        let request = request.into_inner();
        let id = user_id("user_id", &request.user_id)?;
        let user = self.identity.admin_user(id).await?;
        let mut violations = Violations::default();
        let context = [user.email.as_str(), user.full_name.as_str()];
        let password = violations.check(self.policy.check("password", &request.password, &context));
        let password = violations.finish(password).map_err(AppError::from)?;
        self.identity.admin_set_password(&caller, id, &password, &requester).await?;
        Ok(Response::new(SetPasswordResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let caller = self.admin(&request, "delete_user").await?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        self.identity.admin_delete_user(&caller, id).await?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_user_sessions(
        &self,
        request: Request<ListUserSessionsRequest>,
    ) -> Result<Response<ListUserSessionsResponse>, Status> {
        let caller = self.admin(&request, "list_user_sessions").await?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let sessions = self.identity.admin_list_user_sessions(&caller, id).await?;
        Ok(Response::new(ListUserSessionsResponse {
            sessions: sessions.iter().map(|session| session_message(session, None)).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_session(
        &self,
        request: Request<AdminServiceRevokeSessionRequest>,
    ) -> Result<Response<AdminServiceRevokeSessionResponse>, Status> {
        let caller = self.admin(&request, "revoke_session").await?;
        let request = request.get_ref();
        let mut violations = Violations::default();
        let user = violations.check(parse_user_id("user_id", &request.user_id));
        let session = violations.check(parse_session_id("session_id", &request.session_id));
        let (user, session) = violations.finish(user.zip(session)).map_err(AppError::from)?;
        self.identity.admin_revoke_session(&caller, user, session).await?;
        Ok(Response::new(AdminServiceRevokeSessionResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn set_roles(
        &self,
        request: Request<SetRolesRequest>,
    ) -> Result<Response<SetRolesResponse>, Status> {
        let caller = self.admin(&request, "set_roles").await?;
        let request = request.get_ref();
        let mut violations = Violations::default();
        let id = violations.check(parse_user_id("user_id", &request.user_id));
        let roles = violations.check(Role::parse_set("roles", &request.roles));
        let (id, roles) = violations.finish(id.zip(roles)).map_err(AppError::from)?;
        let user = self.identity.admin_set_roles(&caller, id, roles).await?;
        Ok(Response::new(SetRolesResponse { user: Some(user_message(&user)) }))
    }
}
