//! The user's own sessions ("your devices") and account deletion, through UserService.

use identity::proto::{
    DeleteAccountRequest, GetCurrentUserRequest, ListSessionsRequest, RefreshTokenRequest,
    RevokeSessionRequest, Session,
};
use tonic::{Code, Request};

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer},
    on_both_backends,
};

on_both_backends!(
    list_sessions_shows_each_login_with_its_origin_and_marks_the_caller_s,
    a_user_ends_their_own_session_and_someone_else_s_is_not_found,
    delete_account_needs_the_password_and_erases_everything,
);

/// The access token of a new login of `email`, sent with `user-agent: agent`.
async fn login_from(app: &TestApp, email: &str, agent: &str) -> String {
    let login = identity::proto::LoginRequest { email: email.into(), password: PASSWORD.into() };
    let mut request = Request::new(login);
    request.metadata_mut().insert("user-agent", agent.parse().unwrap());
    app.auth().login(request).await.unwrap().into_inner().tokens.unwrap().access_token
}

async fn sessions_of(app: &TestApp, token: &str) -> Vec<Session> {
    app.users().list_sessions(bearer(ListSessionsRequest {}, token)).await.unwrap().into_inner().sessions
}

async fn list_sessions_shows_each_login_with_its_origin_and_marks_the_caller_s(app: TestApp) {
    let (user, laptop) = app.signed_in_user().await;
    let phone_token = login_from(&app, &user.email, "phone-app/2.1").await;

    let sessions = sessions_of(&app, &phone_token).await;
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1, "exactly the caller's session is current");
    assert!(current[0].user_agent.starts_with("phone-app/2.1"), "{}", current[0].user_agent);
    assert!(
        sessions
            .iter()
            .all(|s| s.client_address == "127.0.0.1" && s.created_at.is_some() && s.last_used_at.is_some())
    );
    assert_eq!(sessions[0].id, current[0].id, "most recently used first");

    // A refresh moves last_used_at.
    let laptop_tokens = laptop.tokens.unwrap();
    let before = sessions.iter().find(|s| !s.current).unwrap().last_used_at.unwrap();
    app.auth()
        .refresh_token(RefreshTokenRequest { refresh_token: laptop_tokens.refresh_token })
        .await
        .unwrap();
    let after = sessions_of(&app, &phone_token).await;
    let laptop_now = after.iter().find(|s| !s.current).unwrap().last_used_at.unwrap();
    assert!((laptop_now.seconds, laptop_now.nanos) > (before.seconds, before.nanos));
    assert_code(app.users().list_sessions(ListSessionsRequest {}).await, Code::Unauthenticated);

    // A stranger's user agent is kept to 256 bytes.
    let long = login_from(&app, &user.email, &"x".repeat(2000)).await;
    let recorded = sessions_of(&app, &long).await.into_iter().find(|s| s.current).unwrap();
    assert_eq!(recorded.user_agent.len(), 256);
}

async fn a_user_ends_their_own_session_and_someone_else_s_is_not_found(app: TestApp) {
    let (user, laptop) = app.signed_in_user().await;
    let phone = app.login(&user.email, PASSWORD).await.unwrap();
    let (laptop_token, phone_token) =
        (laptop.tokens.unwrap().access_token, phone.tokens.unwrap().access_token);
    let sessions = sessions_of(&app, &laptop_token).await;
    let phone_session = sessions.iter().find(|s| !s.current).unwrap().id.clone();

    let (_, stranger) = app.signed_in_user().await;
    let stranger_token = stranger.tokens.unwrap().access_token;
    let theirs = RevokeSessionRequest { session_id: phone_session.clone() };
    let status =
        assert_code(app.users().revoke_session(bearer(theirs, &stranger_token)).await, Code::NotFound);
    assert!(!status.message().contains("permission"));
    assert!(app.is_active(&phone_token).await, "someone else's call ended nothing");

    let mine = RevokeSessionRequest { session_id: phone_session.clone() };
    app.users().revoke_session(bearer(mine.clone(), &laptop_token)).await.unwrap();
    assert!(!app.is_active(&phone_token).await);
    assert!(app.is_active(&laptop_token).await);
    assert_code(app.users().revoke_session(bearer(mine, &laptop_token)).await, Code::NotFound);
    let unknown = RevokeSessionRequest { session_id: uuid::Uuid::new_v4().to_string() };
    assert_code(app.users().revoke_session(bearer(unknown, &laptop_token)).await, Code::NotFound);
    let bad = RevokeSessionRequest { session_id: "nope".into() };
    let status =
        assert_code(app.users().revoke_session(bearer(bad, &laptop_token)).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["session_id"]);
}

async fn delete_account_needs_the_password_and_erases_everything(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let other = app.login(&user.email, PASSWORD).await.unwrap();
    let token = login.tokens.unwrap().access_token;
    let wrong = DeleteAccountRequest { current_password: "not-the-password-at-all".into() };
    let status = assert_code(app.users().delete_account(bearer(wrong, &token)).await, Code::Unauthenticated);
    assert_eq!(status.message(), "the current password is incorrect");
    let empty = DeleteAccountRequest { current_password: String::new() };
    let status = assert_code(app.users().delete_account(bearer(empty, &token)).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["current_password"]);

    let right = DeleteAccountRequest { current_password: PASSWORD.into() };
    app.users().delete_account(bearer(right, &token)).await.unwrap();
    for token in [&token, &other.tokens.unwrap().access_token] {
        assert!(!app.is_active(token).await, "every session of the erased account ends");
    }
    assert_code(
        app.users().get_current_user(bearer(GetCurrentUserRequest {}, &token)).await,
        Code::Unauthenticated,
    );
    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    assert!(app.signup(&user.email, PASSWORD, "Back Again").await.is_ok(), "the email is free again");
}
