//! Login: tokens and user on success, one uniform answer for every failed credential, input
//! parsed at the edge, and only a digest of the refresh token stored.

use identity::store::UserUpdate;
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields},
    on_both_backends,
};

on_both_backends!(
    login_returns_tokens_and_the_user,
    login_matches_the_email_case_insensitively,
    login_failures_all_read_invalid_email_or_password,
    login_requires_both_fields,
    login_with_a_malformed_email_names_the_email_field,
    login_stores_only_a_digest_of_the_refresh_token,
);

async fn login_returns_tokens_and_the_user(app: TestApp) {
    let user = app.signup("frank@example.com", PASSWORD, "Frank").await.unwrap();
    let login = app.login("frank@example.com", PASSWORD).await.unwrap();
    assert_eq!(login.user.unwrap().id, user.id);
    let tokens = login.tokens.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert!((30 * 86400 - 1..=30 * 86400).contains(&tokens.refresh_expires_in));
    assert_eq!(tokens.access_token.split('.').count(), 3);
    assert!(tokens.refresh_token.len() >= 43, "256 bits in base64url");
    assert!(app.is_active(&tokens.access_token).await);
}

async fn login_matches_the_email_case_insensitively(app: TestApp) {
    app.signup("Grace.Hopper@Example.com", PASSWORD, "Grace").await.unwrap();
    for email in ["grace.hopper@example.com", "GRACE.HOPPER@EXAMPLE.COM", " Grace.Hopper@Example.com "] {
        let login = app.login(email, PASSWORD).await.unwrap();
        assert_eq!(login.user.unwrap().email, "Grace.Hopper@Example.com");
    }
}

async fn login_failures_all_read_invalid_email_or_password(app: TestApp) {
    app.signup("heidi@example.com", PASSWORD, "Heidi").await.unwrap();
    app.signup("ivan@example.com", PASSWORD, "Ivan").await.unwrap();
    let ivan = identity::domain::Email::parse("email", "ivan@example.com").unwrap().normalized();
    let deactivate = UserUpdate { active: Some(false), revoke_sessions: false };
    assert!(app.store.update_user(&ivan, deactivate, app.clock.now()).await.unwrap().is_some());

    let unknown = assert_code(app.login("nobody@example.com", PASSWORD).await, Code::Unauthenticated);
    let wrong =
        assert_code(app.login("heidi@example.com", "wrong-password-entirely").await, Code::Unauthenticated);
    let deactivated = assert_code(app.login("ivan@example.com", PASSWORD).await, Code::Unauthenticated);
    for status in [&unknown, &wrong, &deactivated] {
        assert_eq!(status.message(), "invalid email or password");
    }
    // A password longer than any that is read depends on the input alone, like a malformed
    // email, so naming its field reveals nothing (and nothing is counted). One longer than
    // bcrypt holds is checked (an imported hash may be of it), and fails like any other.
    let too_long = "x".repeat(identity::domain::MAX_CHECKED_PASSWORD_BYTES + 1);
    let too_long = assert_code(app.login("heidi@example.com", &too_long).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&too_long), ["password"]);
    let long = assert_code(app.login("heidi@example.com", &"x".repeat(100)).await, Code::Unauthenticated);
    assert_eq!(long.message(), "invalid email or password");
}

async fn login_requires_both_fields(app: TestApp) {
    let status = assert_code(app.login("", "").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["email", "password"]);
    let status = assert_code(app.login("a@example.com", "pass\0word").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["password"]);
}

async fn login_with_a_malformed_email_names_the_email_field(app: TestApp) {
    // Parsed at the edge like signup's: the answer depends on the input alone, so it tells
    // nothing about which accounts exist, and no lockout row is written for it.
    for email in ["not-an-email", "Alice <alice@example.com>", "a@b@example.com"] {
        let status = assert_code(app.login(email, PASSWORD).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["email"], "{email}");
    }
}

async fn login_stores_only_a_digest_of_the_refresh_token(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let refresh = login.tokens.unwrap().refresh_token;
    let digests = app.store.stored_refresh_token_digests(user.id.parse().unwrap()).await.unwrap();
    use sha2::Digest;
    assert_eq!(digests, vec![sha2::Sha256::digest(refresh.as_bytes()).to_vec()]);
}
