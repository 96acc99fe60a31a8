//! UserService: the current user behind a bearer token, and what a bad or stale token gets.

use identity::proto::GetCurrentUserRequest;
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bearer, with_authorization},
    on_both_backends,
};

on_both_backends!(
    get_current_user_returns_the_caller,
    get_current_user_refuses_missing_malformed_and_inactive_bearers,
    a_deactivated_user_is_refused_even_with_a_live_token,
    a_restart_keeps_users_sessions_and_the_signing_key,
);

async fn get_current_user_returns_the_caller(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let current =
        app.users().get_current_user(bearer(GetCurrentUserRequest {}, &token)).await.unwrap().into_inner();
    assert_eq!(current.user.unwrap(), user);
    // The scheme is case-insensitive (RFC 7235).
    let lower = with_authorization(GetCurrentUserRequest {}, &format!("bearer {token}"));
    assert!(app.users().get_current_user(lower).await.is_ok());
}

async fn get_current_user_refuses_missing_malformed_and_inactive_bearers(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let status =
        assert_code(app.users().get_current_user(GetCurrentUserRequest {}).await, Code::Unauthenticated);
    assert!(status.message().contains("missing"), "{}", status.message());
    for value in [
        token.clone(),
        format!("Basic {token}"),
        "Bearer".into(),
        "Bearer ".into(),
        "Bearer not-a-token".into(),
    ] {
        let request = with_authorization(GetCurrentUserRequest {}, &value);
        let status = assert_code(app.users().get_current_user(request).await, Code::Unauthenticated);
        assert!(!status.message().contains(&token), "the token is not echoed");
    }
}

async fn a_deactivated_user_is_refused_even_with_a_live_token(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let email = identity::domain::Email::parse("email", &user.email).unwrap().normalized();
    let deactivate = identity::store::UserUpdate { active: Some(false), revoke_sessions: false };
    app.store.update_user(&email, deactivate, app.clock.now()).await.unwrap();
    assert_code(
        app.users().get_current_user(bearer(GetCurrentUserRequest {}, &token)).await,
        Code::Unauthenticated,
    );
}

async fn a_restart_keeps_users_sessions_and_the_signing_key(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let app = app.restart().await;
    assert!(app.is_active(&token).await, "tokens signed before the restart still verify");
    let again = app.login(&user.email, PASSWORD).await.unwrap();
    assert_eq!(again.user.unwrap().id, user.id);
}
