//! Every admin write, and every write users make to their own accounts, is on WatchUserEvents
//! with its kind, written in the transaction of its change, naming who made it: the admin caller
//! as its audit event names it, `cli` for an operator's command, nobody for the owner.

use std::time::Duration;

use identity::{
    domain::{Email, Permission, Role},
    proto::{
        AdminServiceRevokeSessionRequest, ChangeEmailRequest, ChangePasswordRequest, DeleteAccountRequest,
        DeleteUserRequest, LoginResponse, RevokeSessionRequest, SessionRevokedReason, SetPasswordRequest,
        SetRolesRequest, UpdateUserRequest, User, UserEvent, VerifyEmailRequest, WatchUserEventsResponse,
        admin_service_client::AdminServiceClient, user_event::Kind,
    },
};
use prost_types::FieldMask;
use tonic::{Streaming, transport::Channel};

use crate::{
    events::{catch_up, kind_name, next_events, session_of},
    helpers::{PASSWORD, TestApp, bearer, eventually},
    on_both_backends,
};

on_both_backends!(
    every_admin_write_is_on_the_stream_with_its_kind_and_its_caller,
    removing_a_role_ends_the_sessions_for_that_reason_and_names_who_removed_it,
    the_owner_s_own_writes_are_on_the_stream_with_no_actor,
);

const NEW_PASSWORD: &str = "quartz-lantern-meadow-77-harbor";

/// The next `n` events about `user_id`, as (kind, actor), with the events themselves.
async fn next_of(
    stream: &mut Streaming<WatchUserEventsResponse>,
    user_id: &str,
    n: usize,
) -> (Vec<(&'static str, String)>, Vec<UserEvent>) {
    let mut events = Vec::new();
    while events.len() < n {
        events.extend(next_events(stream, 1).await.into_iter().filter(|e| e.user_id == user_id));
    }
    (events.iter().map(|e| (kind_name(e), e.actor.clone())).collect(), events)
}

fn by(actor: &str, kinds: &[&'static str]) -> Vec<(&'static str, String)> {
    kinds.iter().map(|kind| (*kind, actor.to_owned())).collect()
}

fn revoked_reason(event: &UserEvent) -> SessionRevokedReason {
    let Some(Kind::SessionRevoked(revoked)) = &event.kind else { panic!("not a session_revoked: {event:?}") };
    revoked.reason()
}

fn access_token(login: &LoginResponse) -> String {
    login.tokens.as_ref().unwrap().access_token.clone()
}

struct Admin {
    client: AdminServiceClient<Channel>,
    credential: String,
}

impl Admin {
    async fn update(&self, user: &User, paths: &[&str]) {
        let mask = FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() };
        let request = UpdateUserRequest { user: Some(user.clone()), update_mask: Some(mask) };
        self.client.clone().update_user(bearer(request, &self.credential)).await.unwrap();
    }

    async fn set_roles(&self, user_id: &str, roles: &[&str]) {
        let request =
            SetRolesRequest { user_id: user_id.into(), roles: roles.iter().map(|r| (*r).into()).collect() };
        self.client.clone().set_roles(bearer(request, &self.credential)).await.unwrap();
    }
}

async fn every_admin_write_is_on_the_stream_with_its_kind_and_its_caller(app: TestApp) {
    let admin = Admin {
        client: AdminServiceClient::new(app.channel.clone()),
        credential: app.service_key("support-desk", &[Permission::Admin]).await,
    };
    let caller = "service_key:support-desk";
    let (user, _) = app.signed_in_user().await;
    let mut stream = app.watch_user_events(0).await;
    catch_up(&mut stream).await;

    // UpdateUser: the fields whose value changed, with their new values.
    let mut changed =
        User { full_name: "Ada Lovelace".into(), email: "ada.l@example.com".into(), ..user.clone() };
    admin.update(&changed, &["full_name", "email"]).await;
    let (kinds, events) = next_of(&mut stream, &user.id, 1).await;
    assert_eq!(kinds, by(caller, &["user_updated"]));
    let Some(Kind::UserUpdated(updated)) = &events[0].kind else { panic!("{events:?}") };
    assert_eq!(updated.full_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(updated.email.as_deref(), Some("ada.l@example.com"));

    // Deactivating ends the sessions first; an update that changes nothing writes nothing, so
    // the next event is the activation's.
    changed.is_active = false;
    admin.update(&changed, &["is_active"]).await;
    let (kinds, events) = next_of(&mut stream, &user.id, 2).await;
    assert_eq!(kinds, by(caller, &["session_revoked", "user_deactivated"]));
    assert_eq!(revoked_reason(&events[0]), SessionRevokedReason::AccountDeactivated);
    admin.update(&changed, &["full_name", "is_active"]).await;
    changed.is_active = true;
    admin.update(&changed, &["is_active"]).await;
    assert_eq!(next_of(&mut stream, &user.id, 1).await.0, by(caller, &["user_activated"]));

    // SetRoles: the whole new set; taking one away ends the sessions first.
    admin.set_roles(&user.id, &["support:tier-2", "billing.read"]).await;
    let (kinds, events) = next_of(&mut stream, &user.id, 1).await;
    assert_eq!(kinds, by(caller, &["roles_changed"]));
    let Some(Kind::RolesChanged(roles)) = &events[0].kind else { panic!("{events:?}") };
    assert_eq!(roles.roles, ["billing.read", "support:tier-2"]);
    let login = app.login(&changed.email, PASSWORD).await.unwrap();
    admin.set_roles(&user.id, &["billing.read"]).await;
    let (kinds, events) = next_of(&mut stream, &user.id, 2).await;
    assert_eq!(kinds, by(caller, &["session_revoked", "roles_changed"]));
    assert_eq!(revoked_reason(&events[0]), SessionRevokedReason::RolesChanged);
    let Some(Kind::SessionRevoked(revoked)) = &events[0].kind else { unreachable!() };
    assert_eq!(revoked.session_id, session_of(&access_token(&login)));
    let Some(Kind::RolesChanged(roles)) = &events[1].kind else { panic!("{events:?}") };
    assert_eq!(roles.roles, ["billing.read"]);

    // RevokeSession, SetPassword and DeleteUser.
    let login = app.login(&changed.email, PASSWORD).await.unwrap();
    let request = AdminServiceRevokeSessionRequest {
        user_id: user.id.clone(),
        session_id: session_of(&access_token(&login)),
    };
    admin.client.clone().revoke_session(bearer(request, &admin.credential)).await.unwrap();
    let (kinds, events) = next_of(&mut stream, &user.id, 1).await;
    assert_eq!(kinds, by(caller, &["session_revoked"]));
    assert_eq!(revoked_reason(&events[0]), SessionRevokedReason::Admin);
    app.login(&changed.email, PASSWORD).await.unwrap();
    let request = SetPasswordRequest { user_id: user.id.clone(), password: NEW_PASSWORD.into() };
    admin.client.clone().set_password(bearer(request, &admin.credential)).await.unwrap();
    assert_eq!(
        next_of(&mut stream, &user.id, 2).await.0,
        by(caller, &["session_revoked", "password_changed"])
    );
    let request = DeleteUserRequest { user_id: user.id.clone() };
    admin.client.clone().delete_user(bearer(request, &admin.credential)).await.unwrap();
    assert_eq!(next_of(&mut stream, &user.id, 1).await.0, by(caller, &["user_deleted"]));
}

async fn removing_a_role_ends_the_sessions_for_that_reason_and_names_who_removed_it(app: TestApp) {
    // Bootstrap: the operator's CLI makes a person an admin.
    let (operator, _) = app.signed_in_user().await;
    let cli = app.identity().admin();
    let email = |text: &str| Email::parse("email", text).unwrap();
    let role = |name: &str| Role::parse("role", name).unwrap();
    cli.grant_or_revoke(&email(&operator.email), role("identity.admin"), true).await.unwrap().unwrap();
    let person = Admin {
        client: AdminServiceClient::new(app.channel.clone()),
        credential: access_token(&app.login(&operator.email, PASSWORD).await.unwrap()),
    };
    let user = app.signup("role-holder@example.com", PASSWORD, "Role Holder").await.unwrap();
    let mut stream = app.watch_user_events(0).await;
    catch_up(&mut stream).await;

    // A person with the admin role is named by their user id.
    person.set_roles(&user.id, &["billing.read"]).await;
    let by_person = format!("user:{}", operator.id);
    assert_eq!(next_of(&mut stream, &user.id, 1).await.0, by(&by_person, &["roles_changed"]));

    // The operator takes the role away: the session holding it ends for that reason, at once.
    let token = access_token(&app.login(&user.email, PASSWORD).await.unwrap());
    assert!(app.is_active(&token).await);
    cli.grant_or_revoke(&email(&user.email), role("billing.read"), false).await.unwrap().unwrap();
    let (kinds, events) = next_of(&mut stream, &user.id, 2).await;
    assert_eq!(kinds, by("cli", &["session_revoked", "roles_changed"]));
    assert_eq!(revoked_reason(&events[0]), SessionRevokedReason::RolesChanged);
    let Some(Kind::SessionRevoked(revoked)) = &events[0].kind else { unreachable!() };
    assert_eq!(revoked.session_id, session_of(&token));
    let inactive = eventually(Duration::from_secs(5), || async { !app.is_active(&token).await }).await;
    assert!(inactive.is_some(), "the token naming the removed role stops validating");
    // Granting again ends nothing.
    cli.grant_or_revoke(&email(&user.email), role("billing.read"), true).await.unwrap().unwrap();
    assert_eq!(next_of(&mut stream, &user.id, 1).await.0, by("cli", &["roles_changed"]));
}

async fn the_owner_s_own_writes_are_on_the_stream_with_no_actor(app: TestApp) {
    let app = app
        .restart_with(&[
            ("IDENTITY_MAIL", "none"),
            ("IDENTITY_VERIFY_URL", "https://app.example.com/verify?token={token}"),
        ])
        .await;
    let mut stream = app.watch_user_events(0).await;
    catch_up(&mut stream).await;
    let link_token = |event: &UserEvent| {
        let Some(Kind::MessageRequested(message)) = &event.kind else { panic!("{event:?}") };
        message.link.strip_prefix("https://app.example.com/verify?token=").expect("a link").to_owned()
    };
    let verify = |token: String| {
        let mut auth = app.auth();
        async move { auth.verify_email(VerifyEmailRequest { token }).await.unwrap() }
    };

    // Signup, then VerifyEmail with the link its message carries.
    let (user, first) = app.signed_in_user().await;
    let (kinds, events) = next_of(&mut stream, &user.id, 2).await;
    assert_eq!(kinds, by("", &["user_created", "message_requested"]));
    verify(link_token(&events[1])).await;
    assert_eq!(next_of(&mut stream, &user.id, 1).await.0, by("", &["email_verified"]));

    // ChangeEmail: a link to the new address; following it moves the account there (and tells
    // the old address).
    let second = access_token(&app.login(&user.email, PASSWORD).await.unwrap());
    let change =
        ChangeEmailRequest { current_password: PASSWORD.into(), new_email: "moved@example.com".into() };
    app.users().change_email(bearer(change, &second)).await.unwrap();
    let (kinds, events) = next_of(&mut stream, &user.id, 1).await;
    assert_eq!(kinds, by("", &["message_requested"]));
    verify(link_token(&events[0])).await;
    let (kinds, events) = next_of(&mut stream, &user.id, 3).await;
    assert_eq!(kinds, by("", &["user_updated", "email_verified", "message_requested"]));
    let Some(Kind::UserUpdated(updated)) = &events[0].kind else { unreachable!() };
    assert_eq!(updated.email.as_deref(), Some("moved@example.com"));

    // ChangePassword ends the other sessions; RevokeSession ends one of one's own.
    let change =
        ChangePasswordRequest { current_password: PASSWORD.into(), new_password: NEW_PASSWORD.into() };
    app.users().change_password(bearer(change, &second)).await.unwrap();
    let (kinds, events) = next_of(&mut stream, &user.id, 2).await;
    assert_eq!(kinds, by("", &["password_changed", "session_revoked"]));
    assert_eq!(revoked_reason(&events[1]), SessionRevokedReason::PasswordChanged);
    let Some(Kind::SessionRevoked(revoked)) = &events[1].kind else { unreachable!() };
    assert_eq!(revoked.session_id, session_of(&access_token(&first)));
    let third = access_token(&app.login("moved@example.com", NEW_PASSWORD).await.unwrap());
    let request = RevokeSessionRequest { session_id: session_of(&third) };
    app.users().revoke_session(bearer(request, &second)).await.unwrap();
    let (kinds, events) = next_of(&mut stream, &user.id, 1).await;
    assert_eq!(kinds, by("", &["session_revoked"]));
    assert_eq!(revoked_reason(&events[0]), SessionRevokedReason::User);

    // DeleteAccount: the last sessions end, and the account's last event is its deletion.
    let request = DeleteAccountRequest { current_password: NEW_PASSWORD.into() };
    app.users().delete_account(bearer(request, &second)).await.unwrap();
    let (kinds, events) = next_of(&mut stream, &user.id, 2).await;
    assert_eq!(kinds, by("", &["session_revoked", "user_deleted"]));
    assert_eq!(revoked_reason(&events[0]), SessionRevokedReason::AccountDeleted);
}
