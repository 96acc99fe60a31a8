//! AdminService through the real server: who may call it, every RPC, NOT_FOUND, paging, filters,
//! lost updates, roles reaching tokens and their removal ending them, erasure.

use std::time::Duration;

use identity::{
    clock::Clock,
    domain::{Email, Permission, Role},
    proto::{
        AdminServiceRevokeSessionRequest, DeleteUserRequest, GetUserRequest, ListUserSessionsRequest,
        ListUsersRequest, ListUsersResponse, LoginResponse, RefreshTokenRequest, SetPasswordRequest,
        SetRolesRequest, UpdateUserRequest, User, ValidateTokenRequest, WatchRevocationsResponse,
        admin_service_client::AdminServiceClient, get_user_request,
    },
    service::AccountAdmin,
};
use prost_types::FieldMask;
use tonic::{Code, Request, transport::Channel};

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer, eventually},
    on_both_backends,
};

on_both_backends!(
    the_admin_api_needs_a_credential_and_the_admin_permission,
    a_person_with_the_admin_role_is_an_admin_caller,
    get_user_finds_by_id_or_email_and_an_unknown_user_is_not_found,
    list_users_pages_through_everyone_once_in_creation_order,
    list_users_filters_by_email_prefix_activity_role_and_creation_time,
    a_page_token_that_is_garbage_or_from_another_listing_is_invalid,
    update_user_sets_only_the_masked_fields,
    concurrent_admin_writes_lose_no_update,
    set_password_is_held_to_the_policy_and_ends_every_session,
    delete_user_erases_the_account_and_its_tokens_die_everywhere,
    an_admin_lists_and_ends_a_user_s_sessions,
    set_roles_reach_tokens_at_refresh_and_removal_ends_the_sessions,
    unknown_ids_are_not_found_and_malformed_ids_invalid,
);

struct Admin {
    client: AdminServiceClient<Channel>,
    key: String,
}

impl Admin {
    async fn new(app: &TestApp) -> Self {
        let name = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let key = app.service_key(&name, &[Permission::Admin]).await;
        Self { client: AdminServiceClient::new(app.channel.clone()), key }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        bearer(message, &self.key)
    }

    async fn get(&self, id: &str) -> Result<User, tonic::Status> {
        let request = GetUserRequest { user: Some(get_user_request::User::UserId(id.into())) };
        Ok(self.client.clone().get_user(self.request(request)).await?.into_inner().user.unwrap())
    }

    async fn list(&self, request: ListUsersRequest) -> Result<ListUsersResponse, tonic::Status> {
        Ok(self.client.clone().list_users(self.request(request)).await?.into_inner())
    }

    async fn update(&self, user: User, paths: &[&str]) -> Result<User, tonic::Status> {
        let mask = FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() };
        let request = UpdateUserRequest { user: Some(user), update_mask: Some(mask) };
        Ok(self.client.clone().update_user(self.request(request)).await?.into_inner().user.unwrap())
    }

    async fn set_roles(&self, id: &str, roles: &[&str]) -> Result<User, tonic::Status> {
        let request =
            SetRolesRequest { user_id: id.into(), roles: roles.iter().map(|r| (*r).into()).collect() };
        Ok(self.client.clone().set_roles(self.request(request)).await?.into_inner().user.unwrap())
    }

    /// Every user of a listing, page by page.
    async fn all(&self, template: ListUsersRequest) -> Vec<User> {
        let mut users = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list(ListUsersRequest { page_token: token, ..template.clone() }).await.unwrap();
            users.extend(page.users);
            if page.next_page_token.is_empty() {
                return users;
            }
            token = page.next_page_token;
        }
    }
}

fn access_token(login: &LoginResponse) -> String {
    login.tokens.as_ref().unwrap().access_token.clone()
}

async fn inactive_soon(app: &TestApp, token: &str) -> bool {
    eventually(Duration::from_secs(5), || async { !app.is_active(token).await }).await.is_some()
}

async fn signup(app: &TestApp, email: &str) -> User {
    app.signup(email, PASSWORD, "Listed User").await.expect("signup succeeds")
}

async fn the_admin_api_needs_a_credential_and_the_admin_permission(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let get = || GetUserRequest { user: Some(get_user_request::User::UserId(user.id.clone())) };
    let mut client = AdminServiceClient::new(app.channel.clone());
    let status = assert_code(client.get_user(get()).await, Code::Unauthenticated);
    assert!(status.message().contains("credential"), "{}", status.message());
    let watcher = app.service_key("watcher", &[Permission::WatchRevocations]).await;
    assert_code(client.get_user(bearer(get(), &watcher)).await, Code::PermissionDenied);
    // A person without the admin role: known, but not an admin.
    assert_code(client.get_user(bearer(get(), &access_token(&login))).await, Code::PermissionDenied);
    assert_code(client.get_user(bearer(get(), "not-a-token")).await, Code::Unauthenticated);
    let admin = Admin::new(&app).await;
    assert_eq!(admin.get(&user.id).await.unwrap().email, user.email);
}

async fn a_person_with_the_admin_role_is_an_admin_caller(app: TestApp) {
    let (operator, _) = app.signed_in_user().await;
    let admin = AccountAdmin::new(app.store.clone(), Clock::system(), None);
    let email = Email::parse("email", &operator.email).unwrap();
    let granted = admin.grant_or_revoke(&email, Role::parse("role", "identity.admin").unwrap(), true).await;
    assert_eq!(granted.unwrap().unwrap().user.roles, [Role::parse("role", "identity.admin").unwrap()]);
    let login = app.login(&operator.email, PASSWORD).await.unwrap();
    let (someone, _) = app.signed_in_user().await;
    let request = GetUserRequest { user: Some(get_user_request::User::Email(someone.email.to_uppercase())) };
    let mut client = AdminServiceClient::new(app.channel.clone());
    let found =
        client.get_user(bearer(request, &access_token(&login))).await.expect("the admin role lets in");
    assert_eq!(found.into_inner().user.unwrap().id, someone.id);

    // Another role name is not the admin role.
    let restarted = app.restart_with(&[("IDENTITY_ADMIN_ROLE", "support:tier-2")]).await;
    let login = restarted.login(&operator.email, PASSWORD).await.unwrap();
    let request = GetUserRequest { user: Some(get_user_request::User::UserId(someone.id.clone())) };
    let mut client = AdminServiceClient::new(restarted.channel.clone());
    assert_code(client.get_user(bearer(request, &access_token(&login))).await, Code::PermissionDenied);
}

async fn get_user_finds_by_id_or_email_and_an_unknown_user_is_not_found(app: TestApp) {
    let admin = Admin::new(&app).await;
    let user = signup(&app, "Grace.Hopper@Example.com").await;
    assert_eq!(admin.get(&user.id).await.unwrap(), user);
    let by_email =
        GetUserRequest { user: Some(get_user_request::User::Email("grace.hopper@EXAMPLE.com".into())) };
    let found = admin.client.clone().get_user(admin.request(by_email)).await.unwrap().into_inner().user;
    assert_eq!(found.unwrap(), user);
    assert_code(admin.get(&uuid::Uuid::new_v4().to_string()).await, Code::NotFound);
    let nobody = GetUserRequest { user: Some(get_user_request::User::Email("nobody@example.com".into())) };
    assert_code(admin.client.clone().get_user(admin.request(nobody)).await, Code::NotFound);
    let status = assert_code(
        admin.client.clone().get_user(admin.request(GetUserRequest { user: None })).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&status), ["user_id"]);
}

async fn list_users_pages_through_everyone_once_in_creation_order(app: TestApp) {
    let admin = Admin::new(&app).await;
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(signup(&app, &format!("page-{i:02}@example.com")).await.id);
    }
    let first = admin.list(ListUsersRequest { page_size: 5, ..Default::default() }).await.unwrap();
    assert_eq!(first.users.len(), 5);
    assert!(!first.next_page_token.is_empty());
    let listed: Vec<String> = admin
        .all(ListUsersRequest { page_size: 5, ..Default::default() })
        .await
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(listed, created, "every user once, in creation order");
    let whole = admin.list(ListUsersRequest { page_size: 100_000, ..Default::default() }).await.unwrap();
    assert_eq!(whole.users.len(), 23, "a large page size is coerced, not refused");
    assert!(whole.next_page_token.is_empty(), "no token after the last page");
    let default = admin.list(ListUsersRequest::default()).await.unwrap();
    assert_eq!(default.users.len(), 23);
    let status = assert_code(
        admin.list(ListUsersRequest { page_size: -1, ..Default::default() }).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&status), ["page_size"]);
}

async fn list_users_filters_by_email_prefix_activity_role_and_creation_time(app: TestApp) {
    let admin = Admin::new(&app).await;
    let ada = signup(&app, "ada@example.com").await;
    let adam = signup(&app, "Adam@example.com").await;
    let bob = signup(&app, "bob@example.com").await;
    let emails = |users: Vec<User>| users.into_iter().map(|u| u.email).collect::<Vec<_>>();
    let prefix = |p: &str| ListUsersRequest { email_prefix: p.into(), page_size: 1, ..Default::default() };
    assert_eq!(emails(admin.all(prefix("AD")).await), ["ada@example.com", "Adam@example.com"]);
    assert_eq!(emails(admin.all(prefix("ada@")).await), ["ada@example.com"]);
    assert!(admin.all(prefix("zz")).await.is_empty());

    let mut deactivated = adam.clone();
    deactivated.is_active = false;
    admin.update(deactivated, &["is_active"]).await.unwrap();
    let active = |a| ListUsersRequest { active: Some(a), ..Default::default() };
    assert_eq!(emails(admin.all(active(false)).await), ["Adam@example.com"]);
    assert_eq!(emails(admin.all(active(true)).await), ["ada@example.com", "bob@example.com"]);

    admin.set_roles(&bob.id, &["billing.read"]).await.unwrap();
    admin.set_roles(&ada.id, &["billing.read", "support"]).await.unwrap();
    let role = ListUsersRequest { role: "billing.read".into(), ..Default::default() };
    let holders = admin.all(role).await;
    assert_eq!(emails(holders.clone()), ["ada@example.com", "bob@example.com"]);
    assert_eq!(holders[0].roles, ["billing.read", "support"]);

    let between = ListUsersRequest {
        created_after: adam.created_at,
        created_before: bob.created_at,
        ..Default::default()
    };
    assert_eq!(emails(admin.all(between).await), ["Adam@example.com"], "from inclusive, before exclusive");

    let status = assert_code(
        admin
            .list(ListUsersRequest {
                role: "Not A Role".into(),
                email_prefix: "\u{7}".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&status), ["email_prefix", "role"]);
}

async fn a_page_token_that_is_garbage_or_from_another_listing_is_invalid(app: TestApp) {
    let admin = Admin::new(&app).await;
    for i in 0..3 {
        signup(&app, &format!("token-{i}@example.com")).await;
    }
    let page = admin.list(ListUsersRequest { page_size: 1, ..Default::default() }).await.unwrap();
    for garbage in ["nope", "%%%", &"A".repeat(2000), &page.next_page_token[1..]] {
        let request = ListUsersRequest { page_token: garbage.into(), ..Default::default() };
        let status = assert_code(admin.list(request).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["page_token"], "{garbage:?}");
    }
    let other_filters = ListUsersRequest {
        page_token: page.next_page_token.clone(),
        active: Some(true),
        ..Default::default()
    };
    assert_code(admin.list(other_filters).await, Code::InvalidArgument);
    let same = ListUsersRequest { page_token: page.next_page_token, page_size: 1, ..Default::default() };
    assert_eq!(admin.list(same).await.unwrap().users.len(), 1, "a page size may change between pages");
}

async fn update_user_sets_only_the_masked_fields(app: TestApp) {
    let admin = Admin::new(&app).await;
    let (user, login) = app.signed_in_user().await;
    let taken = signup(&app, "taken@example.com").await;

    let changes = User { full_name: "Renamed".into(), email: "ignored@example.com".into(), ..user.clone() };
    let updated = admin.update(changes, &["full_name"]).await.unwrap();
    assert_eq!((updated.full_name.as_str(), updated.email.as_str()), ("Renamed", user.email.as_str()));

    let moved = admin
        .update(User { email: "Moved@Example.com".into(), ..updated.clone() }, &["email"])
        .await
        .unwrap();
    assert_eq!(moved.email, "Moved@Example.com");
    assert!(!moved.email_verified, "a new address is unverified");
    assert!(app.login("moved@example.com", PASSWORD).await.is_ok(), "the new email logs in");
    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    assert_code(
        admin.update(User { email: taken.email.to_uppercase(), ..moved.clone() }, &["email"]).await,
        Code::AlreadyExists,
    );

    let status = assert_code(admin.update(moved.clone(), &[]).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["update_mask"]);
    let status = assert_code(admin.update(moved.clone(), &["password_hash"]).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["update_mask"]);
    let status = assert_code(
        admin.update(User { full_name: " ".into(), ..moved.clone() }, &["*"]).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&status), ["user.full_name"]);

    // Deactivating ends every session at once.
    let token = access_token(&login);
    let off = admin.update(User { is_active: false, ..moved.clone() }, &["is_active"]).await.unwrap();
    assert!(!off.is_active);
    assert!(inactive_soon(&app, &token).await);
    assert_code(app.login("moved@example.com", PASSWORD).await, Code::Unauthenticated);
    admin.update(User { is_active: true, ..off }, &["is_active"]).await.unwrap();
    assert!(app.login("moved@example.com", PASSWORD).await.is_ok());
}

async fn concurrent_admin_writes_lose_no_update(app: TestApp) {
    let admin = Admin::new(&app).await;
    let user = signup(&app, "contended@example.com").await;
    // Two writers on two fields, and twenty role grants, all at once: every write stands.
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (client, key, user) = (admin.client.clone(), admin.key.clone(), user.clone());
        writers.spawn(async move {
            let admin = Admin { client, key };
            let renamed = User { full_name: format!("Name {i}"), ..user.clone() };
            admin.update(renamed, &["full_name"]).await.unwrap();
            let moved = User { email: format!("contended-{i}@example.com"), ..user };
            admin.update(moved, &["email"]).await.unwrap();
        });
    }
    let roles = AccountAdmin::new(app.store.clone(), Clock::system(), None);
    let roles = std::sync::Arc::new(roles);
    // Granted by id (the email changes under the writers above).
    for i in 0..20 {
        let (roles, id) = (std::sync::Arc::clone(&roles), user.id.parse().unwrap());
        writers.spawn(async move {
            let role = Role::parse("role", &format!("role.{i:02}")).unwrap();
            let change = identity::store::RoleChange::Grant(role);
            let operator = identity::domain::Actor::operator();
            roles.change_roles(identity::store::UserKey::Id(id), &change, &operator).await.unwrap().unwrap();
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let after = admin.get(&user.id).await.unwrap();
    assert!(after.full_name.starts_with("Name "), "{}", after.full_name);
    assert!(after.email.starts_with("contended-"), "{}", after.email);
    let expected: Vec<String> = (0..20).map(|i| format!("role.{i:02}")).collect();
    assert_eq!(after.roles, expected, "no grant lost to another");
}

async fn set_password_is_held_to_the_policy_and_ends_every_session(app: TestApp) {
    let admin = Admin::new(&app).await;
    let (user, login) = app.signed_in_user().await;
    let set = |password: &str| SetPasswordRequest { user_id: user.id.clone(), password: password.into() };
    for weak in ["short", "password123456789", &user.email] {
        let status = assert_code(
            admin.client.clone().set_password(admin.request(set(weak))).await,
            Code::InvalidArgument,
        );
        assert_eq!(bad_fields(&status), ["password"], "{weak:?}");
    }
    let new_password = "quartz-lantern-meadow-97-harbor";
    admin.client.clone().set_password(admin.request(set(new_password))).await.unwrap();
    assert!(inactive_soon(&app, &access_token(&login)).await);
    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    assert!(app.login(&user.email, new_password).await.is_ok());
    let unknown =
        SetPasswordRequest { user_id: uuid::Uuid::new_v4().to_string(), password: new_password.into() };
    assert_code(admin.client.clone().set_password(admin.request(unknown)).await, Code::NotFound);
}

async fn delete_user_erases_the_account_and_its_tokens_die_everywhere(app: TestApp) {
    let admin = Admin::new(&app).await;
    let (user, login) = app.signed_in_user().await;
    admin.set_roles(&user.id, &["billing.read"]).await.unwrap();
    let mut feed = app.watch_revocations(0).await;
    let session = {
        let request = ListUserSessionsRequest { user_id: user.id.clone() };
        let sessions = admin.client.clone().list_user_sessions(admin.request(request)).await.unwrap();
        sessions.into_inner().sessions[0].id.clone()
    };
    admin
        .client
        .clone()
        .delete_user(admin.request(DeleteUserRequest { user_id: user.id.clone() }))
        .await
        .unwrap();

    assert!(!app.is_active(&access_token(&login)).await, "refused at once by the deleting server");
    // Every service following the revocation feed hears of it.
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message: WatchRevocationsResponse = feed.message().await.unwrap().unwrap();
            if message.revoked.iter().any(|r| r.session_id == session) {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "the revocation feed names the erased user's session");
    assert_code(admin.get(&user.id).await, Code::NotFound);
    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    let refresh = RefreshTokenRequest { refresh_token: login.tokens.unwrap().refresh_token };
    assert_code(app.auth().refresh_token(refresh).await, Code::Unauthenticated);
    assert!(admin.all(ListUsersRequest::default()).await.iter().all(|u| u.id != user.id));
    assert!(
        admin.all(ListUsersRequest { role: "billing.read".into(), ..Default::default() }).await.is_empty()
    );
    // The email is free again, for a new account.
    let again = app.signup(&user.email, PASSWORD, "Someone New").await.expect("the email is free");
    assert_ne!(again.id, user.id);
    assert_code(
        admin.client.clone().delete_user(admin.request(DeleteUserRequest { user_id: user.id.clone() })).await,
        Code::NotFound,
    );
    // Nothing personal is left in the row kept for the revocation feed.
    let id: uuid::Uuid = user.id.parse().unwrap();
    assert!(app.store.find_user_by_id(id.into()).await.unwrap().is_none());
}

async fn an_admin_lists_and_ends_a_user_s_sessions(app: TestApp) {
    let admin = Admin::new(&app).await;
    let (user, laptop) = app.signed_in_user().await;
    let phone = app.login(&user.email, PASSWORD).await.unwrap();
    let list = || async {
        let request = ListUserSessionsRequest { user_id: user.id.clone() };
        admin.client.clone().list_user_sessions(admin.request(request)).await.unwrap().into_inner().sessions
    };
    let sessions = list().await;
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|s| !s.current && s.client_address == "127.0.0.1"));
    let phone_session = &sessions[0];
    let revoke = |session: &str| AdminServiceRevokeSessionRequest {
        user_id: user.id.clone(),
        session_id: session.into(),
    };
    admin.client.clone().revoke_session(admin.request(revoke(&phone_session.id))).await.unwrap();
    assert_eq!(list().await.len(), 1);
    let (phone_token, laptop_token) = (access_token(&phone), access_token(&laptop));
    let ended = if app.is_active(&phone_token).await { &laptop_token } else { &phone_token };
    assert!(!app.is_active(ended).await);
    assert_code(
        admin.client.clone().revoke_session(admin.request(revoke(&phone_session.id))).await,
        Code::NotFound,
    );
    let (other, _) = app.signed_in_user().await;
    let theirs =
        AdminServiceRevokeSessionRequest { user_id: other.id, session_id: list().await[0].id.clone() };
    assert_code(admin.client.clone().revoke_session(admin.request(theirs)).await, Code::NotFound);
}

async fn set_roles_reach_tokens_at_refresh_and_removal_ends_the_sessions(app: TestApp) {
    let admin = Admin::new(&app).await;
    let (user, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    let roles = |token: String| async {
        let request = ValidateTokenRequest { access_token: token };
        app.tokens().validate_token(request).await.unwrap().into_inner().claims.map(|c| c.roles)
    };
    let set = admin.set_roles(&user.id, &["support", "billing.read", "support"]).await.unwrap();
    assert_eq!(set.roles, ["billing.read", "support"]);
    assert_eq!(roles(tokens.access_token.clone()).await, Some(vec![]), "no change before a refresh");
    let refresh = |token: String| async {
        app.auth()
            .refresh_token(RefreshTokenRequest { refresh_token: token })
            .await
            .map(|r| r.into_inner().tokens.unwrap())
    };
    let refreshed = refresh(tokens.refresh_token).await.unwrap();
    assert_eq!(
        roles(refreshed.access_token.clone()).await,
        Some(vec!["billing.read".into(), "support".into()])
    );
    let request = bearer(identity::proto::GetCurrentUserRequest {}, &refreshed.access_token);
    let me = app.users().get_current_user(request).await.unwrap().into_inner().user.unwrap();
    assert_eq!(me.roles, ["billing.read", "support"]);

    // Adding keeps the session; removing ends it, so no token names the role any more.
    admin.set_roles(&user.id, &["billing.read", "support", "x"]).await.unwrap();
    assert!(app.is_active(&refreshed.access_token).await);
    admin.set_roles(&user.id, &["x"]).await.unwrap();
    assert!(!app.is_active(&refreshed.access_token).await);
    assert_code(refresh(refreshed.refresh_token).await, Code::Unauthenticated);
    let fresh = app.login(&user.email, PASSWORD).await.unwrap();
    assert_eq!(roles(access_token(&fresh)).await, Some(vec!["x".into()]));

    for bad in [
        vec!["Admin"],
        vec!["a b"],
        (0..65).map(|i| format!("r{i}")).collect::<Vec<_>>().iter().map(String::as_str).collect(),
    ] {
        let status = assert_code(admin.set_roles(&user.id, &bad).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["roles"]);
    }
}

async fn unknown_ids_are_not_found_and_malformed_ids_invalid(app: TestApp) {
    let admin = Admin::new(&app).await;
    let nobody = uuid::Uuid::new_v4().to_string();
    let mut client = admin.client.clone();
    assert_code(admin.set_roles(&nobody, &["x"]).await, Code::NotFound);
    assert_code(
        client.delete_user(admin.request(DeleteUserRequest { user_id: nobody.clone() })).await,
        Code::NotFound,
    );
    assert_code(
        client.list_user_sessions(admin.request(ListUserSessionsRequest { user_id: nobody.clone() })).await,
        Code::NotFound,
    );
    let ghost = User { id: nobody.clone(), full_name: "Ghost".into(), ..Default::default() };
    assert_code(admin.update(ghost, &["full_name"]).await, Code::NotFound);
    let revoke = AdminServiceRevokeSessionRequest { user_id: nobody.clone(), session_id: nobody.clone() };
    assert_code(client.revoke_session(admin.request(revoke)).await, Code::NotFound);
    for bad in ["", "42", "not-a-uuid", &"f".repeat(500)] {
        let status = assert_code(
            client.delete_user(admin.request(DeleteUserRequest { user_id: bad.into() })).await,
            Code::InvalidArgument,
        );
        assert_eq!(bad_fields(&status), ["user_id"], "{bad:?}");
    }
}
