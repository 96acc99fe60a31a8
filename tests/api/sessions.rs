//! Sessions over their life: refresh-token rotation and reuse, logout, password changes,
//! rehashing, absolute expiry, purging, and signing-key rotation.

use std::time::Duration;

use identity::proto::{
    ChangePasswordRequest, GetCurrentUserRequest, LogoutRequest, RefreshTokenRequest, RefreshTokenResponse,
    Tokens,
};
use tonic::{Code, Status};

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer, eventually},
    on_both_backends,
    signup::futures_join_all,
};

on_both_backends!(
    refresh_issues_new_tokens_for_the_same_session,
    a_refresh_keeps_earlier_access_tokens_working,
    a_rotated_refresh_token_presented_again_revokes_the_whole_session,
    concurrent_refreshes_with_one_token_give_at_most_one_ok,
    refresh_rejects_unknown_and_empty_tokens,
    logout_ends_the_session_and_is_idempotent,
    logout_leaves_other_sessions_of_the_user_alone,
    change_password_ends_every_other_session_but_not_the_callers,
    change_password_refuses_a_wrong_current_password_and_a_weak_new_one,
    login_rehashes_a_password_stored_at_a_lower_cost,
    a_session_ends_at_its_absolute_expiry_however_often_it_is_refreshed,
    a_revocation_outlives_a_restart,
    old_sessions_are_purged_in_the_background,
    a_purge_larger_than_one_batch_deletes_every_old_session_and_keeps_live_ones,
    key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key,
);

async fn refresh(app: &TestApp, refresh_token: &str) -> Result<Tokens, Status> {
    let request = RefreshTokenRequest { refresh_token: refresh_token.into() };
    app.auth().refresh_token(request).await.map(|r| r.into_inner().tokens.expect("tokens"))
}

async fn logout(app: &TestApp, refresh_token: &str) -> Result<(), Status> {
    app.auth().logout(LogoutRequest { refresh_token: refresh_token.into() }).await.map(drop)
}

async fn session_of(app: &TestApp, access_token: &str) -> String {
    let request = identity::proto::ValidateTokenRequest { access_token: access_token.into() };
    let response = app.tokens().validate_token(request).await.unwrap().into_inner();
    response.claims.expect("an active token").session_id
}

async fn refresh_issues_new_tokens_for_the_same_session(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let first = login.tokens.unwrap();
    let second = refresh(&app, &first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.token_type, "Bearer");
    assert_eq!(session_of(&app, &second.access_token).await, session_of(&app, &first.access_token).await);
    // The new refresh token works in turn.
    let third = refresh(&app, &second.refresh_token).await.unwrap();
    assert!(app.is_active(&third.access_token).await);
}

async fn a_refresh_keeps_earlier_access_tokens_working(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let first = login.tokens.unwrap();
    refresh(&app, &first.refresh_token).await.unwrap();
    assert!(app.is_active(&first.access_token).await, "calls in flight keep working until exp");
}

async fn a_rotated_refresh_token_presented_again_revokes_the_whole_session(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let first = login.tokens.unwrap();
    let second = refresh(&app, &first.refresh_token).await.unwrap();

    let status = assert_code(refresh(&app, &first.refresh_token).await, Code::Unauthenticated);
    assert!(!status.message().contains(&first.refresh_token));
    assert_code(refresh(&app, &second.refresh_token).await, Code::Unauthenticated);
    assert!(!app.is_active(&first.access_token).await);
    assert!(!app.is_active(&second.access_token).await);
    let request = bearer(GetCurrentUserRequest {}, &second.access_token);
    assert_code(app.users().get_current_user(request).await, Code::Unauthenticated);
}

async fn concurrent_refreshes_with_one_token_give_at_most_one_ok(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().refresh_token;
    let calls = (0..10).map(|_| {
        let mut auth = app.auth();
        let request = RefreshTokenRequest { refresh_token: token.clone() };
        async move { auth.refresh_token(request).await.map(|r| r.into_inner()) }
    });
    let results: Vec<Result<RefreshTokenResponse, Status>> = futures_join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok <= 1, "{ok} concurrent refreshes succeeded");
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
}

async fn refresh_rejects_unknown_and_empty_tokens(app: TestApp) {
    assert_code(refresh(&app, "not-a-token-we-issued").await, Code::Unauthenticated);
    let status = assert_code(refresh(&app, "").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["refresh_token"]);
    let status = assert_code(refresh(&app, &"x".repeat(600)).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["refresh_token"]);
}

async fn logout_ends_the_session_and_is_idempotent(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    logout(&app, &tokens.refresh_token).await.unwrap();
    assert!(!app.is_active(&tokens.access_token).await);
    assert_code(refresh(&app, &tokens.refresh_token).await, Code::Unauthenticated);
    let request = bearer(GetCurrentUserRequest {}, &tokens.access_token);
    assert_code(app.users().get_current_user(request).await, Code::Unauthenticated);
    logout(&app, &tokens.refresh_token).await.expect("a second logout is OK");
    logout(&app, "never-issued").await.expect("an unknown token is OK (RFC 7009)");
    assert_code(logout(&app, "").await, Code::InvalidArgument);
}

async fn logout_leaves_other_sessions_of_the_user_alone(app: TestApp) {
    let (user, laptop) = app.signed_in_user().await;
    let phone = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap();
    let laptop = laptop.tokens.unwrap();
    logout(&app, &laptop.refresh_token).await.unwrap();
    assert!(!app.is_active(&laptop.access_token).await);
    assert!(app.is_active(&phone.access_token).await);
    assert!(refresh(&app, &phone.refresh_token).await.is_ok());
}

async fn change_password_ends_every_other_session_but_not_the_callers(app: TestApp) {
    let (user, caller) = app.signed_in_user().await;
    let caller = caller.tokens.unwrap();
    let other = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap();
    let new_password = "quartz-lantern-meadow-77";
    let request =
        ChangePasswordRequest { current_password: PASSWORD.into(), new_password: new_password.into() };
    app.users().change_password(bearer(request, &caller.access_token)).await.unwrap();

    assert!(!app.is_active(&other.access_token).await);
    assert_code(refresh(&app, &other.refresh_token).await, Code::Unauthenticated);
    assert!(app.is_active(&caller.access_token).await);
    assert!(refresh(&app, &caller.refresh_token).await.is_ok());
    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    assert!(app.login(&user.email, new_password).await.is_ok());
}

async fn change_password_refuses_a_wrong_current_password_and_a_weak_new_one(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let change = |current: &str, new: &str| {
        bearer(ChangePasswordRequest { current_password: current.into(), new_password: new.into() }, &token)
    };
    let status = assert_code(
        app.users().change_password(change("wrong-password-xyz", "quartz-lantern-meadow-77")).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("current password"), "{}", status.message());
    let status =
        assert_code(app.users().change_password(change(PASSWORD, "short")).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["new_password"]);
    let status =
        assert_code(app.users().change_password(change(PASSWORD, &user.email)).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["new_password"]);
    let unauthenticated = ChangePasswordRequest {
        current_password: PASSWORD.into(),
        new_password: "quartz-lantern-meadow-77".into(),
    };
    assert_code(app.users().change_password(unauthenticated).await, Code::Unauthenticated);
    // Nothing changed.
    assert!(app.login(&user.email, PASSWORD).await.is_ok());
    assert!(app.is_active(&token).await);
}

async fn login_rehashes_a_password_stored_at_a_lower_cost(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let stored_cost = |app: &TestApp| {
        let store = app.store.clone();
        let email = user.email.clone();
        async move {
            let email = identity::domain::Email::parse("email", &email).unwrap().normalized();
            store.find_user_by_email(&email).await.unwrap().unwrap().password_hash.cost()
        }
    };
    assert_eq!(stored_cost(&app).await, Some(4));
    let app = app.restart_with(&[("IDENTITY_BCRYPT_COST", "5")]).await;
    app.login(&user.email, PASSWORD).await.unwrap();
    assert_eq!(stored_cost(&app).await, Some(5));
    assert!(app.login(&user.email, PASSWORD).await.is_ok(), "the rehashed password still verifies");
}

async fn a_session_ends_at_its_absolute_expiry_however_often_it_is_refreshed(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_REFRESH_TOKEN_TTL", "1h")]).await;
    let (_, login) = app.signed_in_user().await;
    let mut tokens = login.tokens.unwrap();
    assert_eq!(tokens.refresh_expires_in, 3600);
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(19 * 60));
        tokens = refresh(&app, &tokens.refresh_token).await.unwrap();
    }
    // 57 minutes in: the refresh did not extend the session, and the access token is cut to it.
    assert!((179..=180).contains(&tokens.refresh_expires_in), "{}", tokens.refresh_expires_in);
    assert!(tokens.expires_in <= tokens.refresh_expires_in);
    app.clock.advance(Duration::from_secs(181));
    assert_code(refresh(&app, &tokens.refresh_token).await, Code::Unauthenticated);
    assert!(!app.is_active(&tokens.access_token).await);
}

async fn a_revocation_outlives_a_restart(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    logout(&app, &tokens.refresh_token).await.unwrap();
    let app = app.restart().await;
    assert!(!app.is_active(&tokens.access_token).await);
}

async fn old_sessions_are_purged_in_the_background(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_SESSION_PURGE_INTERVAL", "100ms")]).await;
    let (user, login) = app.signed_in_user().await;
    let ended = login.tokens.unwrap();
    logout(&app, &ended.refresh_token).await.unwrap();
    let live = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap();
    app.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let refresh_live = refresh(&app, &live.refresh_token).await;
    assert!(refresh_live.is_ok(), "a 30-day session is not purged after two days");
    let user_id: identity::domain::UserId = user.id.parse().unwrap();
    let purged =
        eventually(Duration::from_secs(10), || async { session_count(&app, user_id).await == 1 }).await;
    assert!(purged.is_some(), "the revoked session was not purged");
}

async fn a_purge_larger_than_one_batch_deletes_every_old_session_and_keeps_live_ones(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_SESSION_PURGE_INTERVAL", "100ms")]).await;
    let (user, login) = app.signed_in_user().await;
    let live = login.tokens.unwrap();
    let live = refresh(&app, &live.refresh_token).await.unwrap();
    let user_id: identity::domain::UserId = user.id.parse().unwrap();
    let old = 2 * identity::store::PURGE_BATCH + 17;
    let long_ago = app.clock.now() - chrono::TimeDelta::days(3);
    assert_eq!(app.store.insert_expired_sessions(user_id, old, long_ago).await.unwrap(), u64::from(old));

    let purged =
        eventually(Duration::from_secs(30), || async { session_count(&app, user_id).await == 1 }).await;
    assert!(purged.is_some(), "{} sessions left", session_count(&app, user_id).await);
    assert!(app.is_active(&live.access_token).await);
    assert!(refresh(&app, &live.refresh_token).await.is_ok(), "the live session survives the purge");
}

async fn session_count(app: &TestApp, user_id: identity::domain::UserId) -> i64 {
    app.store.session_count(user_id).await.unwrap()
}

async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let old_token = login.tokens.unwrap().access_token;
    let old_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();
    let old_key = app.data_dir().join("signing_key.pem");
    let new_key = app.data_dir().join("next_key.pem");
    identity::cli::keygen(Some(&new_key), identity_contract::SigningAlgorithm::EdDSA).unwrap();

    // Step 1 of the runbook: sign with the new key, keep verifying with the old one.
    let app = app
        .restart_with(&[
            ("IDENTITY_SIGNING_KEY_FILE", new_key.to_str().unwrap()),
            ("IDENTITY_VERIFY_KEY_FILES", old_key.to_str().unwrap()),
        ])
        .await;
    assert!(app.is_active(&old_token).await, "rotation logs nobody out");
    let new_token = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap().access_token;
    let new_kid = jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks = app.tokens().get_jwks(identity::proto::GetJwksRequest {}).await.unwrap().into_inner().keys;
    let kids: Vec<_> = jwks.iter().map(|k| k.kid.clone()).collect();
    assert_eq!(kids, [new_kid.clone(), old_kid.clone()]);

    // Step 2, once every old token has expired: drop the old key.
    let app = app.restart_with(&[("IDENTITY_VERIFY_KEY_FILES", "")]).await;
    assert!(!app.is_active(&old_token).await);
    assert!(app.is_active(&new_token).await);
}
