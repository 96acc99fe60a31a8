//! Email verification and change of email, end to end over SMTP: signup's link verifies the
//! address once (and the claims say so), newer links supersede older ones and links expire,
//! concurrent use of one link succeeds once, a required verification refuses the right password
//! with an actionable FAILED_PRECONDITION, a change of email applies only once the new address
//! is verified (uniqueness checked again then) and the old address is told, and a hidden signup
//! for a taken email mails the owner instead.

use std::time::Duration;

use identity::proto::{
    ChangeEmailRequest, GetCurrentUserRequest, RefreshTokenRequest, SendVerificationEmailRequest,
    ValidateTokenRequest, VerifyEmailRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer},
    on_both_backends,
    recovery::with_smtp,
    smtp::{Received, SmtpServer},
};

on_both_backends!(
    signup_sends_a_link_that_verifies_the_email_once_and_the_claims_follow,
    a_newer_link_supersedes_the_older_and_links_expire,
    of_two_concurrent_verifications_with_one_link_exactly_one_succeeds,
    with_verification_required_the_right_password_gets_an_actionable_refusal_until_verified,
    a_new_email_takes_effect_only_once_verified_and_the_old_address_is_told,
    an_address_taken_before_the_change_is_verified_is_refused_then,
    a_hidden_signup_for_a_taken_email_mails_its_owner_within_the_allowance,
);

const WITHIN: Duration = Duration::from_secs(20);
const VERIFY: &str = "Confirm your email address";
const CHANGED: &str = "The email address of your account changed";
const EXISTS: &str = "You already have an account";

async fn verify(app: &TestApp, token: &str) -> Result<String, tonic::Status> {
    Ok(app.auth().verify_email(VerifyEmailRequest { token: token.into() }).await?.into_inner().email)
}

fn unusable(result: Result<String, tonic::Status>) {
    let status = assert_code(result, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["token"]);
    assert!(status.message().contains("invalid, expired or already used"), "{}", status.message());
}

async fn current_user(app: &TestApp, access: &str) -> identity::proto::User {
    app.users()
        .get_current_user(bearer(GetCurrentUserRequest {}, access))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

async fn claims(app: &TestApp, access: &str) -> identity::proto::Claims {
    let request = ValidateTokenRequest { access_token: access.into() };
    app.tokens().validate_token(request).await.unwrap().into_inner().claims.expect("an active token")
}

/// The verification messages to `email`, once at least `count` have arrived (or in time).
async fn links_to(smtp: &SmtpServer, email: &str, count: usize) -> Vec<Received> {
    smtp.wait_for_matching(count, WITHIN, |m| m.header("Subject") == Some(VERIFY) && m.recipients == [email])
        .await
}

async fn signup_with_smtp(app: TestApp, env: &[(&str, &str)]) -> (TestApp, SmtpServer, String, String) {
    let (app, smtp) = with_smtp(app, env).await;
    let (user, login) = app.signed_in_user().await;
    (app, smtp, user.email, login.tokens.unwrap().access_token)
}

async fn signup_sends_a_link_that_verifies_the_email_once_and_the_claims_follow(app: TestApp) {
    let (app, smtp, email, access) = signup_with_smtp(app, &[]).await;
    let received = links_to(&smtp, &email, 1).await;
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.header("To"), Some(email.as_str()));
    assert!(message.data.contains("text/plain") && message.data.contains("text/html"));
    assert!(message.data.contains("Hello Test User,"));
    assert!(message.link().unwrap().starts_with("https://app.example.com/verify?token="));
    let token = message.token().unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");

    let before = current_user(&app, &access).await;
    assert!(!before.email_verified && before.email_verified_at.is_none());
    assert!(!claims(&app, &access).await.email_verified);

    assert_eq!(verify(&app, &token).await.unwrap(), email);
    let after = current_user(&app, &access).await;
    assert!(after.email_verified && after.email_verified_at.is_some(), "{after:?}");
    unusable(verify(&app, &token).await);
    unusable(verify(&app, "made-up").await);
    let status = assert_code(verify(&app, "").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["token"]);

    // Tokens issued from now on say so: at login and at refresh.
    let login = app.login(&email, PASSWORD).await.unwrap();
    assert!(login.user.unwrap().email_verified);
    let tokens = login.tokens.unwrap();
    assert!(claims(&app, &tokens.access_token).await.email_verified);
    let refreshed = app
        .auth()
        .refresh_token(RefreshTokenRequest { refresh_token: tokens.refresh_token })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert!(claims(&app, &refreshed.access_token).await.email_verified);

    // Nothing left to verify.
    let status = assert_code(
        app.users().send_verification_email(bearer(SendVerificationEmailRequest {}, &access)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("already verified"));
}

async fn a_newer_link_supersedes_the_older_and_links_expire(app: TestApp) {
    let (app, smtp, email, access) = signup_with_smtp(app, &[("IDENTITY_MAIL_MAX_PER_HOUR", "3")]).await;
    let first = links_to(&smtp, &email, 1).await[0].token().unwrap();
    let send = || async {
        app.users().send_verification_email(bearer(SendVerificationEmailRequest {}, &access)).await
    };
    send().await.unwrap();
    let second = links_to(&smtp, &email, 2).await;
    let second = second.iter().map(|m| m.token().unwrap()).find(|t| *t != first).unwrap();
    unusable(verify(&app, &first).await);

    // The allowance: signup's message and two more this hour; beyond, OK and nothing sent.
    send().await.unwrap();
    send().await.unwrap();
    send().await.unwrap();
    let queued =
        app.store.mail_rows().await.unwrap().into_iter().filter(|r| r.kind == "verify_email").count();
    assert_eq!(queued, 3);

    // Past IDENTITY_VERIFY_TOKEN_TTL (24 h) every link is dead.
    let third = links_to(&smtp, &email, 3).await;
    app.clock.advance(Duration::from_secs(24 * 3600 + 60));
    for message in &third {
        unusable(verify(&app, &message.token().unwrap()).await);
    }
    unusable(verify(&app, &second).await);
    // A day later the allowance is back, and a new link works.
    let fresh = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap().access_token;
    app.users().send_verification_email(bearer(SendVerificationEmailRequest {}, &fresh)).await.unwrap();
    let all = links_to(&smtp, &email, 4).await;
    assert_eq!(verify(&app, &all[3].token().unwrap()).await.unwrap(), email);
}

async fn of_two_concurrent_verifications_with_one_link_exactly_one_succeeds(app: TestApp) {
    let (app, smtp, email, _) = signup_with_smtp(app, &[]).await;
    let token = links_to(&smtp, &email, 1).await[0].token().unwrap();
    let (a, b) = tokio::join!(verify(&app, &token), verify(&app, &token));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let failed = if a.is_ok() { b } else { a };
    unusable(failed);
}

async fn with_verification_required_the_right_password_gets_an_actionable_refusal_until_verified(
    app: TestApp,
) {
    let (app, smtp) = with_smtp(app, &[("IDENTITY_REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let email = format!("unverified-{}@example.com", uuid::Uuid::new_v4().simple());
    app.signup(&email, PASSWORD, "Test User").await.unwrap();
    assert_eq!(links_to(&smtp, &email, 1).await.len(), 1);

    let status = assert_code(app.login(&email, PASSWORD).await, Code::FailedPrecondition);
    assert!(status.message().contains("not verified"), "{}", status.message());
    let info = status.get_error_details().error_info().cloned().expect("an ErrorInfo detail");
    assert_eq!(info.reason, "EMAIL_NOT_VERIFIED");
    // The refusal sent a new link (the user has no session to ask for one with).
    let links = links_to(&smtp, &email, 2).await;
    assert_eq!(links.len(), 2);
    // A wrong password, or an unknown email, still gets the uniform answer.
    let wrong = assert_code(app.login(&email, "not-the-password-at-all-9").await, Code::Unauthenticated);
    assert_eq!(wrong.message(), "invalid email or password");
    assert_code(app.login("nobody-here@example.com", PASSWORD).await, Code::Unauthenticated);

    verify(&app, &links[1].token().unwrap()).await.unwrap();
    let user = app.login(&email, PASSWORD).await.expect("verified: logs in").user.unwrap();
    assert!(user.email_verified);
}

async fn change_email(
    app: &TestApp,
    access: &str,
    password: &str,
    new_email: &str,
) -> Result<(), tonic::Status> {
    let request = ChangeEmailRequest { current_password: password.into(), new_email: new_email.into() };
    app.users().change_email(bearer(request, access)).await.map(drop)
}

async fn a_new_email_takes_effect_only_once_verified_and_the_old_address_is_told(app: TestApp) {
    let (app, smtp, old, access) = signup_with_smtp(app, &[]).await;
    let new = format!("moved-{}@example.com", uuid::Uuid::new_v4().simple());

    // The current password is required; a malformed address names its field.
    assert_code(change_email(&app, &access, "not-the-password-at-all-9", &new).await, Code::Unauthenticated);
    let status =
        assert_code(change_email(&app, &access, PASSWORD, "not an email").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["new_email"]);
    let status =
        assert_code(change_email(&app, &access, PASSWORD, &old.to_uppercase()).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["new_email"]);

    change_email(&app, &access, PASSWORD, &new).await.unwrap();
    let link = links_to(&smtp, &new, 1).await;
    assert_eq!(link.len(), 1, "the new address gets the link");
    assert!(link[0].link().unwrap().starts_with("https://app.example.com/verify?token="));
    // Nothing changed yet.
    assert_eq!(current_user(&app, &access).await.email, old);
    assert_code(app.login(&new, PASSWORD).await, Code::Unauthenticated);

    assert_eq!(verify(&app, &link[0].token().unwrap()).await.unwrap(), new);
    let user = current_user(&app, &access).await;
    assert_eq!(user.email, new);
    assert!(user.email_verified);
    let notice = smtp.wait_for_subject(CHANGED, 1, WITHIN).await;
    assert_eq!(notice.len(), 1);
    assert_eq!(notice[0].recipients, std::slice::from_ref(&old));
    assert!(notice[0].data.contains("text/plain") && notice[0].data.contains("text/html"));
    assert!(notice[0].data.contains("Hello Test User,"));

    // The new address logs in, the old one no longer does; the session carried on, and its
    // tokens carry the new email from the next refresh.
    assert_code(app.login(&old, PASSWORD).await, Code::Unauthenticated);
    let tokens = app.login(&new, PASSWORD).await.unwrap().tokens.unwrap();
    assert_eq!(claims(&app, &tokens.access_token).await.email, new);
    assert_eq!(claims(&app, &access).await.email, old, "issued before the change");
    unusable(verify(&app, &link[0].token().unwrap()).await);
}

async fn an_address_taken_before_the_change_is_verified_is_refused_then(app: TestApp) {
    let (app, smtp, old, access) = signup_with_smtp(app, &[]).await;
    // Taken already: refused at once (Signup reveals accounts by default, so this may too).
    let (other, _) = app.signed_in_user().await;
    assert_code(change_email(&app, &access, PASSWORD, &other.email).await, Code::AlreadyExists);

    let run = uuid::Uuid::new_v4().simple().to_string();
    let wanted = format!("alice-{run}@example.com");
    change_email(&app, &access, PASSWORD, &wanted).await.unwrap();
    let token = links_to(&smtp, &wanted, 1).await[0].token().unwrap();
    // Meanwhile someone signs up with a look-alike (a Cyrillic а): the database refuses the move.
    app.signup(&format!("\u{430}lice-{run}@example.com"), PASSWORD, "Look Alike").await.unwrap();
    assert_code(verify(&app, &token).await, Code::AlreadyExists);
    let user = current_user(&app, &access).await;
    assert_eq!(user.email, old, "nothing changed");
    assert!(smtp.received().iter().all(|m| m.header("Subject") != Some(CHANGED)));
}

async fn a_hidden_signup_for_a_taken_email_mails_its_owner_within_the_allowance(app: TestApp) {
    let (app, smtp) =
        with_smtp(app, &[("IDENTITY_SIGNUP_REVEALS_ACCOUNTS", "false"), ("IDENTITY_MAIL_MAX_PER_HOUR", "2")])
            .await;
    let email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
    app.signup(&email, PASSWORD, "First Owner").await.unwrap();
    for _ in 0..3 {
        let again = app.signup(&email.to_uppercase(), "saffron-glacier-77-lantern", "Someone").await;
        assert!(again.is_ok(), "the same answer as a new account: {again:?}");
    }
    // Queued before each answer: two within the allowance, the third sent nothing.
    let notices =
        app.store.mail_rows().await.unwrap().into_iter().filter(|r| r.kind == "account_exists").count();
    assert_eq!(notices, 2);
    let received = smtp.wait_for_subject(EXISTS, 2, WITHIN).await;
    assert_eq!(received.len(), 2);
    for message in &received {
        assert_eq!(message.recipients, std::slice::from_ref(&email), "to the owner's address as stored");
        assert!(message.data.contains("text/plain") && message.data.contains("text/html"));
        assert!(message.data.contains("Hello First Owner,"));
        assert!(message.link().is_none(), "no link: nothing to do unless it was the owner");
    }
    // The owner's one verification message, and no second account's.
    assert_eq!(links_to(&smtp, &email, 1).await.len(), 1);
    let verify_rows =
        app.store.mail_rows().await.unwrap().into_iter().filter(|r| r.kind == "verify_email").count();
    assert_eq!(verify_rows, 1);
}
