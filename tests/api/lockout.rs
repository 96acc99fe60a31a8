//! Brute-force protection: each client slows down on each email, the email locks only after
//! many consecutive failures from everyone, and the owner still gets in during an attack.

use std::{net::IpAddr, time::Duration};

use identity::domain::MAX_CHECKED_PASSWORD_BYTES;

use identity::proto::{
    ChangePasswordRequest, GetCurrentUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer},
    on_both_backends,
    signup::futures_join_all,
};

on_both_backends!(
    a_client_waits_longer_after_each_failure_and_other_clients_do_not,
    a_success_clears_the_clients_delay,
    unknown_emails_are_throttled_exactly_like_registered_ones,
    the_email_locks_after_the_threshold_of_consecutive_failures_from_all_clients,
    concurrent_wrong_logins_from_one_client_get_at_most_the_free_failures_checked,
    concurrent_logins_with_the_right_password_from_one_client_all_succeed,
    an_over_long_password_is_refused_before_anything_is_counted,
    a_password_bcrypt_cannot_hold_costs_a_full_check_like_any_wrong_one,
    twenty_attackers_for_a_minute_get_no_more_than_the_budget_and_the_owner_still_logs_in,
    guessing_the_current_password_is_throttled_and_ends_the_session,
);

const WRONG: &str = "definitely-not-the-password";
/// The defaults: `IDENTITY_LOGIN_FREE_FAILURES`, `IDENTITY_LOGIN_DELAY`, `IDENTITY_LOGIN_MAX_DELAY`.
const FREE_FAILURES: u64 = 3;
const FIRST_DELAY: Duration = Duration::from_secs(60);
const MAX_DELAY: Duration = Duration::from_secs(3600);

fn source(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn auth_from(app: &TestApp, last: u8) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(app.channel_from(source(last)).await)
}

async fn login(auth: &mut AuthServiceClient<Channel>, email: &str, password: &str) -> Result<(), Status> {
    auth.login(LoginRequest { email: email.into(), password: password.into() }).await.map(drop)
}

async fn fail_times(auth: &mut AuthServiceClient<Channel>, email: &str, times: u64) {
    for _ in 0..times {
        assert_code(login(auth, email, WRONG).await, Code::Unauthenticated);
    }
}

fn retry_after(status: &Status) -> Duration {
    status.get_error_details().retry_info().and_then(|info| info.retry_delay).expect("RetryInfo detail")
}

fn assert_throttled(result: Result<(), Status>, about: Duration) {
    let status = assert_code(result, Code::ResourceExhausted);
    assert_eq!(status.message(), "too many failed attempts, retry later");
    let wait = retry_after(&status);
    assert!(
        wait + Duration::from_secs(2) > about && wait <= about + Duration::from_secs(1),
        "{wait:?} vs {about:?}"
    );
}

/// The most password checks `clients` addresses get on one email within `elapsed` of starting
/// (the README's formula): each gets the free failures at once, then one more each time its
/// doubling delay has passed.
fn budget(clients: u64, elapsed: Duration) -> u64 {
    let (mut waited, mut delay, mut extra) = (Duration::ZERO, FIRST_DELAY, 0);
    while waited + delay <= elapsed {
        waited += delay;
        extra += 1;
        delay = (delay * 2).min(MAX_DELAY);
    }
    clients * (FREE_FAILURES + extra)
}

async fn a_client_waits_longer_after_each_failure_and_other_clients_do_not(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let mut attacker = auth_from(&app, 2).await;
    fail_times(&mut attacker, &user.email, FREE_FAILURES).await;
    // Even the right password waits: the pair is refused before anything is checked.
    assert_throttled(login(&mut attacker, &user.email, PASSWORD).await, FIRST_DELAY);
    assert_throttled(login(&mut attacker, &user.email.to_uppercase(), WRONG).await, FIRST_DELAY);
    // The owner, elsewhere, is not slowed at all.
    let mut owner = auth_from(&app, 3).await;
    login(&mut owner, &user.email, PASSWORD).await.expect("the owner logs in");

    app.clock.advance(FIRST_DELAY);
    fail_times(&mut attacker, &user.email, 1).await;
    assert_throttled(login(&mut attacker, &user.email, WRONG).await, FIRST_DELAY * 2);
    app.clock.advance(FIRST_DELAY * 2);
    fail_times(&mut attacker, &user.email, 1).await;
    assert_throttled(login(&mut attacker, &user.email, WRONG).await, FIRST_DELAY * 4);
}

async fn a_success_clears_the_clients_delay(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let mut auth = auth_from(&app, 2).await;
    fail_times(&mut auth, &user.email, FREE_FAILURES).await;
    app.clock.advance(FIRST_DELAY);
    login(&mut auth, &user.email, PASSWORD).await.expect("the wait has passed");
    fail_times(&mut auth, &user.email, FREE_FAILURES).await;
    assert_throttled(login(&mut auth, &user.email, PASSWORD).await, FIRST_DELAY);
}

async fn unknown_emails_are_throttled_exactly_like_registered_ones(app: TestApp) {
    let mut auth = auth_from(&app, 2).await;
    fail_times(&mut auth, "ghost@example.com", FREE_FAILURES).await;
    assert_throttled(login(&mut auth, "ghost@example.com", WRONG).await, FIRST_DELAY);
}

async fn the_email_locks_after_the_threshold_of_consecutive_failures_from_all_clients(app: TestApp) {
    let app =
        app.restart_with(&[("IDENTITY_LOCKOUT_THRESHOLD", "5"), ("IDENTITY_LOCKOUT_DURATION", "10m")]).await;
    let (user, _) = app.signed_in_user().await;
    for last in 2..7 {
        fail_times(&mut auth_from(&app, last).await, &user.email, 1).await;
    }
    // A sixth address, with the right password: the email itself is locked now.
    let mut owner = auth_from(&app, 20).await;
    assert_throttled(login(&mut owner, &user.email, PASSWORD).await, Duration::from_secs(600));
    // The refused attempt cost that client nothing.
    app.clock.advance(Duration::from_secs(600));
    login(&mut owner, &user.email, PASSWORD).await.expect("the lock has passed");
    // The success ended the run: four more failures do not lock.
    for last in 2..6 {
        fail_times(&mut auth_from(&app, last + 10).await, &user.email, 1).await;
    }
    login(&mut owner, &user.email, PASSWORD).await.expect("below the threshold");
}

async fn concurrent_wrong_logins_from_one_client_get_at_most_the_free_failures_checked(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let channel = app.channel_from(source(2)).await;
    let attempts = (0..30).map(|_| {
        let mut auth = AuthServiceClient::new(channel.clone());
        let request = LoginRequest { email: user.email.clone(), password: WRONG.into() };
        async move { auth.login(request).await.map(drop) }
    });
    let results = futures_join_all(attempts).await;
    let checked = results.iter().filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated)).count();
    let refused =
        results.iter().filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted)).count();
    assert_eq!(checked + refused, 30, "{results:?}");
    assert!(
        checked as u64 <= FREE_FAILURES,
        "{checked} password checks got past {FREE_FAILURES} free failures"
    );
    let email = user.email.to_lowercase();
    assert_eq!(app.store.throttled_failures(&email).await.unwrap(), checked as i64);
}

/// The retry storm's cause: every attempt counts as a failure until its check ends, so the
/// fourth in flight on one (email, client) used to be refused at once. It now waits for the
/// checks ahead of it; their successes clear the pair, and every login gets in.
async fn concurrent_logins_with_the_right_password_from_one_client_all_succeed(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let channel = app.channel_from(source(2)).await;
    let attempts = (0..4 * FREE_FAILURES).map(|_| {
        let mut auth = AuthServiceClient::new(channel.clone());
        let request = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
        async move { auth.login(request).await.map(drop) }
    });
    let results = futures_join_all(attempts).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let email = user.email.to_lowercase();
    assert_eq!(app.store.throttled_failures(&email).await.unwrap(), 0, "nothing is left counted");
}

async fn an_over_long_password_is_refused_before_anything_is_counted(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let mut auth = auth_from(&app, 2).await;
    let rows_before = app.store.lockout_rows().await.unwrap();
    for length in [MAX_CHECKED_PASSWORD_BYTES + 1, 5000] {
        let status =
            assert_code(login(&mut auth, &user.email, &"x".repeat(length)).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["password"]);
    }
    assert_eq!(app.store.lockout_rows().await.unwrap(), rows_before, "nothing was counted");
    login(&mut auth, &user.email, PASSWORD).await.expect("the account is untouched");
}

/// Longer than bcrypt holds but within what is read (an imported hash may be of such a
/// password): checked at the full cost of any wrong password, and counted like one.
async fn a_password_bcrypt_cannot_hold_costs_a_full_check_like_any_wrong_one(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let mut auth = auth_from(&app, 2).await;
    let one_verify = 1u64 << 4;
    for length in [72, 100, 1000] {
        let (_, work_before) = app.identity().hash_pool_stats();
        assert_code(login(&mut auth, &user.email, &"x".repeat(length)).await, Code::Unauthenticated);
        let (_, work_after) = app.identity().hash_pool_stats();
        assert_eq!(work_after - work_before, one_verify, "{length} bytes");
    }
    let email = user.email.to_lowercase();
    assert_eq!(app.store.throttled_failures(&email).await.unwrap(), 3);
}

/// The target: 20 addresses guess at full speed for a minute (the injected clock moves
/// a second per round), and the owner then logs in from another address on the first try.
async fn twenty_attackers_for_a_minute_get_no_more_than_the_budget_and_the_owner_still_logs_in(app: TestApp) {
    const ATTACKERS: u8 = 20;
    let (user, _) = app.signed_in_user().await;
    let mut attackers = Vec::new();
    for last in 0..ATTACKERS {
        attackers.push(app.channel_from(source(2 + last)).await);
    }
    let minute = Duration::from_secs(60);
    let mut sent = 0;
    for second in 0..=minute.as_secs() {
        // Every attacker sends a burst each second, without waiting for RetryInfo.
        let round = attackers.iter().flat_map(|channel| {
            let email = user.email.clone();
            (0..3).map(move |_| {
                let mut auth = AuthServiceClient::new(channel.clone());
                let email = email.clone();
                async move { login(&mut auth, &email, WRONG).await }
            })
        });
        for result in futures_join_all(round.collect::<Vec<_>>()).await {
            sent += 1;
            let status = result.expect_err("a wrong password never logs in");
            assert!(matches!(status.code(), Code::Unauthenticated | Code::ResourceExhausted), "{status:?}");
        }
        if second < minute.as_secs() {
            app.clock.advance(Duration::from_secs(1));
        }
    }
    let email = user.email.to_lowercase();
    let guesses = app.store.throttled_failures(&email).await.unwrap() as u64;
    let consecutive = app.store.consecutive_login_failures(&email).await.unwrap() as u64;
    let allowed = budget(u64::from(ATTACKERS), minute);
    eprintln!("{sent} attempts; {guesses} password checks; budget {allowed}");
    assert_eq!(guesses, consecutive, "both counters saw the same checks");
    assert!(guesses <= allowed, "{guesses} guesses > budget {allowed}");
    assert!(guesses >= u64::from(ATTACKERS) * FREE_FAILURES, "the attack did run: {guesses}");

    let mut owner = auth_from(&app, 200).await;
    login(&mut owner, &user.email, PASSWORD).await.expect("the owner logs in on the first try");
}

async fn guessing_the_current_password_is_throttled_and_ends_the_session(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let access = login.tokens.expect("tokens").access_token;
    let mut users = app.users();
    let change = |current: &str| {
        bearer(
            ChangePasswordRequest {
                current_password: current.into(),
                new_password: "saffron-glacier-77-lantern".into(),
            },
            &access,
        )
    };
    for _ in 0..FREE_FAILURES {
        let status = assert_code(users.change_password(change(WRONG)).await, Code::Unauthenticated);
        assert_eq!(status.message(), "the current password is incorrect");
    }
    assert_throttled(users.change_password(change(PASSWORD)).await.map(drop), FIRST_DELAY);
    app.clock.advance(FIRST_DELAY);
    assert_code(users.change_password(change(WRONG)).await, Code::Unauthenticated);
    app.clock.advance(FIRST_DELAY * 2);
    // The fifth wrong guess (PASSWORD_CHANGE_FAILURES_END_SESSION) ends the session.
    let status = assert_code(users.change_password(change(WRONG)).await, Code::Unauthenticated);
    assert_eq!(status.message(), "the current password is incorrect; the session has ended");
    assert!(!app.is_active(&access).await, "the session is revoked");
    assert_code(
        users.get_current_user(bearer(GetCurrentUserRequest {}, &access)).await,
        Code::Unauthenticated,
    );
}

#[test]
fn the_budget_formula_counts_the_doubling_delays() {
    assert_eq!(budget(1, Duration::from_secs(59)), 3);
    assert_eq!(budget(1, Duration::from_secs(60)), 4);
    assert_eq!(budget(20, Duration::from_secs(60)), 80);
    assert_eq!(budget(1, Duration::from_secs(180)), 5);
}
