use std::time::Duration;

use identity::proto::LoginRequest;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code},
    on_both_backends,
    signup::futures_join_all,
};

on_both_backends!(
    five_failures_lock_the_email_even_for_the_right_password,
    unknown_emails_lock_out_exactly_like_registered_ones,
    a_successful_login_resets_the_count,
    concurrent_wrong_logins_get_at_most_the_limit_of_password_checks,
    a_burst_of_concurrent_right_logins_leaves_the_account_usable,
    refused_attempts_do_not_extend_the_count,
);

const WRONG: &str = "definitely-not-the-password";

async fn fail_times(app: &TestApp, email: &str, times: usize) {
    for _ in 0..times {
        assert_code(app.login(email, WRONG).await, Code::Unauthenticated);
    }
}

fn retry_after(status: &Status) -> Duration {
    status.get_error_details().retry_info().and_then(|info| info.retry_delay).expect("RetryInfo detail")
}

async fn five_failures_lock_the_email_even_for_the_right_password(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    fail_times(&app, &user.email, 5).await;
    let status = assert_code(app.login(&user.email, PASSWORD).await, Code::ResourceExhausted);
    assert_eq!(status.message(), "too many failed attempts, retry later");
    let wait = retry_after(&status);
    assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60 + 1), "{wait:?}");
    // Case does not help.
    assert_code(app.login(&user.email.to_uppercase(), PASSWORD).await, Code::ResourceExhausted);

    app.clock.advance(Duration::from_secs(15 * 60));
    assert!(app.login(&user.email, PASSWORD).await.is_ok(), "the window has passed");
}

async fn unknown_emails_lock_out_exactly_like_registered_ones(app: TestApp) {
    fail_times(&app, "ghost@example.com", 5).await;
    let status = assert_code(app.login("ghost@example.com", WRONG).await, Code::ResourceExhausted);
    assert_eq!(status.message(), "too many failed attempts, retry later");
    assert!(retry_after(&status) > Duration::from_secs(14 * 60));
}

async fn a_successful_login_resets_the_count(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    fail_times(&app, &user.email, 4).await;
    app.login(&user.email, PASSWORD).await.unwrap();
    fail_times(&app, &user.email, 4).await;
    assert!(app.login(&user.email, PASSWORD).await.is_ok());
}

async fn concurrent_wrong_logins_get_at_most_the_limit_of_password_checks(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let attempts = (0..30).map(|_| {
        let mut auth = app.auth();
        let request = LoginRequest { email: user.email.clone(), password: WRONG.into() };
        async move { auth.login(request).await.map(drop) }
    });
    let results = futures_join_all(attempts).await;
    let checked = results.iter().filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated)).count();
    let locked =
        results.iter().filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted)).count();
    assert_eq!(checked + locked, 30, "{results:?}");
    assert!(checked <= 5, "{checked} password checks got past a limit of 5");
    assert!(locked >= 25);
}

async fn a_burst_of_concurrent_right_logins_leaves_the_account_usable(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let attempts = (0..20).map(|_| {
        let mut auth = app.auth();
        let request = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
        async move { auth.login(request).await.map(drop) }
    });
    for result in futures_join_all(attempts).await {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
    }
    // Attempts refused while the burst was in flight checked no password and count for nothing.
    assert!(app.login(&user.email, PASSWORD).await.is_ok());
}

async fn refused_attempts_do_not_extend_the_count(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    fail_times(&app, &user.email, 5).await;
    for _ in 0..10 {
        assert_code(app.login(&user.email, PASSWORD).await, Code::ResourceExhausted);
    }
    app.clock.advance(Duration::from_secs(15 * 60));
    assert!(app.login(&user.email, PASSWORD).await.is_ok());
    // A fresh window: four more failures do not lock.
    fail_times(&app, &user.email, 4).await;
    assert!(app.login(&user.email, PASSWORD).await.is_ok());
}
