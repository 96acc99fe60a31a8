//! The second factor end to end: TOTP enrolment with the codes an authenticator app would show
//! (computed here by RFC 6238 from HMAC-SHA-1 directly, not by the server's crate), recovery
//! codes, the login challenge that no token-issuing RPC skips, step-up, and the admin's view.
//! The server's clock is moved forward a time step whenever a fresh code is needed, since each
//! step's code is accepted once.

use std::time::Duration;

use hmac::{Hmac, Mac};
use identity::proto::{
    BeginTotpEnrollmentRequest, BeginTotpEnrollmentResponse, CompleteLoginRequest,
    ConfirmTotpEnrollmentRequest, DisableTotpRequest, GetUserRequest, LoginResponse, MfaFactor,
    RefreshTokenRequest, RegenerateRecoveryCodesRequest, ResetMfaRequest, SecondFactor, StepUpRequest,
    Tokens, ValidateTokenRequest, admin_service_client::AdminServiceClient, get_user_request,
    second_factor::Factor, user_event::Kind,
};
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields, bearer},
    on_both_backends,
};

on_both_backends!(
    enrolment_shows_the_secret_once_and_confirming_it_returns_ten_recovery_codes,
    a_login_with_a_second_factor_returns_a_challenge_and_complete_login_the_tokens,
    a_code_is_accepted_once_and_a_challenge_completes_once,
    a_recovery_code_completes_a_login_once,
    a_challenge_dies_after_five_wrong_codes_or_five_minutes,
    wrong_codes_count_against_the_login_throttle,
    no_rpc_issues_tokens_without_the_second_step,
    step_up_renews_auth_time_and_the_session_keeps_it,
    regenerating_codes_and_disabling_need_the_password_and_a_second_factor,
    an_admin_sees_and_resets_a_second_factor_and_the_events_say_so,
    malformed_codes_are_invalid_arguments_naming_the_field,
    enabling_a_second_factor_ends_the_other_password_only_sessions,
);

/// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) at `unix_seconds`, from RFC 4226's HOTP.
fn totp(secret: &[u8], unix_seconds: i64) -> String {
    let counter = u64::try_from(unix_seconds).unwrap() / 30;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap();
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", binary % 1_000_000)
}

/// RFC 4648 base32 (no padding), as otpauth URIs carry secrets.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase()).expect("base32");
        value = (value << 5) | index as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}

/// The secret an authenticator app reads from an `otpauth://` URI.
fn secret_of(uri: &str) -> Vec<u8> {
    let query = uri.split_once('?').expect("a query").1;
    let secret = query.split('&').find_map(|pair| pair.strip_prefix("secret=")).expect("a secret");
    base32_decode(secret)
}

fn totp_factor(code: &str) -> Option<SecondFactor> {
    Some(SecondFactor { factor: Some(Factor::TotpCode(code.into())) })
}

fn recovery_factor(code: &str) -> Option<SecondFactor> {
    Some(SecondFactor { factor: Some(Factor::RecoveryCode(code.into())) })
}

/// A user with a confirmed TOTP second factor.
struct Enrolled {
    email: String,
    user_id: String,
    secret: Vec<u8>,
    recovery_codes: Vec<String>,
    /// The session that enrolled.
    tokens: Tokens,
}

impl Enrolled {
    /// The code the app shows in a time step no code was accepted for yet: the clock moves one
    /// step forward first.
    fn fresh_code(&self, app: &TestApp) -> String {
        app.clock.advance(Duration::from_secs(30));
        totp(&self.secret, app.clock.now().timestamp())
    }
}

async fn begin(app: &TestApp, access: &str) -> Result<BeginTotpEnrollmentResponse, tonic::Status> {
    Ok(app.users().begin_totp_enrollment(bearer(BeginTotpEnrollmentRequest {}, access)).await?.into_inner())
}

async fn confirm(app: &TestApp, access: &str, code: &str) -> Result<Vec<String>, tonic::Status> {
    let request = ConfirmTotpEnrollmentRequest { totp_code: code.into() };
    Ok(app.users().confirm_totp_enrollment(bearer(request, access)).await?.into_inner().recovery_codes)
}

async fn enrolled_user(app: &TestApp) -> Enrolled {
    let (user, login) = app.signed_in_user().await;
    let tokens = login.tokens.expect("no second factor yet: tokens");
    let started = begin(app, &tokens.access_token).await.unwrap();
    let secret = secret_of(&started.otpauth_uri);
    let code = totp(&secret, app.clock.now().timestamp());
    let recovery_codes = confirm(app, &tokens.access_token, &code).await.unwrap();
    Enrolled { email: user.email, user_id: user.id, secret, recovery_codes, tokens }
}

async fn complete(
    app: &TestApp,
    challenge: &str,
    factor: Option<SecondFactor>,
) -> Result<identity::proto::CompleteLoginResponse, tonic::Status> {
    let request = CompleteLoginRequest { challenge: challenge.into(), second_factor: factor };
    Ok(app.auth().complete_login(request).await?.into_inner())
}

/// Logs in with the right password and returns the challenge handle.
async fn challenge(app: &TestApp, email: &str) -> String {
    let login: LoginResponse = app.login(email, PASSWORD).await.expect("the right password is accepted");
    assert!(login.tokens.is_none() && login.user.is_none(), "no tokens before the second factor");
    login.mfa_challenge.expect("a challenge").challenge
}

async fn claims(app: &TestApp, access: &str) -> identity::proto::Claims {
    let request = ValidateTokenRequest { access_token: access.into() };
    let response = app.tokens().validate_token(request).await.unwrap().into_inner();
    assert!(response.active);
    response.claims.unwrap()
}

async fn enrolment_shows_the_secret_once_and_confirming_it_returns_ten_recovery_codes(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let access = login.tokens.unwrap().access_token;
    assert_code(confirm(&app, &access, "123456").await, Code::FailedPrecondition);

    let started = begin(&app, &access).await.unwrap();
    let prefix = format!("otpauth://totp/identity:{}?", user.email.replace('@', "%40"));
    assert!(started.otpauth_uri.starts_with(&prefix), "{}", started.otpauth_uri);
    assert!(started.otpauth_uri.contains("issuer=identity"), "{}", started.otpauth_uri);
    assert!(started.qr_code_png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG image");
    let secret = secret_of(&started.otpauth_uri);
    assert_eq!(secret.len(), 20, "a 160-bit secret");
    assert_eq!(base32_decode(&started.secret), secret);

    // Until confirmed, the password alone still logs in.
    assert!(app.login(&user.email, PASSWORD).await.unwrap().tokens.is_some());
    let now = app.clock.now().timestamp();
    let wrong = if totp(&secret, now) == "000000" { "000001" } else { "000000" };
    assert_code(confirm(&app, &access, wrong).await, Code::Unauthenticated);

    let codes = confirm(&app, &access, &totp(&secret, now)).await.unwrap();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.len() == 19 && c.matches('-').count() == 3), "{codes:?}");
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    assert_code(begin(&app, &access).await, Code::FailedPrecondition);
}

async fn a_login_with_a_second_factor_returns_a_challenge_and_complete_login_the_tokens(app: TestApp) {
    let user = enrolled_user(&app).await;
    let login = app.login(&user.email, PASSWORD).await.unwrap();
    let challenge = login.mfa_challenge.expect("a challenge");
    assert!(login.tokens.is_none() && login.user.is_none());
    assert_eq!(challenge.allowed_factors, vec![MfaFactor::Totp as i32, MfaFactor::RecoveryCode as i32]);
    let expires_in = challenge.expires_at.unwrap().seconds - app.clock.now().timestamp();
    assert!((299..=300).contains(&expires_in), "five minutes, not {expires_in} s");

    let code = user.fresh_code(&app);
    let started = app.clock.now().timestamp();
    let done = complete(&app, &challenge.challenge, totp_factor(&code)).await.unwrap();
    let finished = app.clock.now().timestamp();
    assert_eq!(done.user.unwrap().id, user.user_id);
    let tokens = done.tokens.unwrap();
    let claims = claims(&app, &tokens.access_token).await;
    assert_eq!(claims.amr, ["pwd", "otp"]);
    assert!((started..=finished).contains(&claims.auth_time.unwrap().seconds));
    // The password-only session that enrolled says so.
    let enrolling = self::claims(&app, &user.tokens.access_token).await;
    assert_eq!(enrolling.amr, ["pwd"]);
}

async fn a_code_is_accepted_once_and_a_challenge_completes_once(app: TestApp) {
    let user = enrolled_user(&app).await;
    let first = challenge(&app, &user.email).await;
    let code = user.fresh_code(&app);
    complete(&app, &first, totp_factor(&code)).await.unwrap();
    // The same challenge again, even with a good code: refused.
    let next = user.fresh_code(&app);
    assert_code(complete(&app, &first, totp_factor(&next)).await, Code::Unauthenticated);
    // The code already used, on a new challenge, within its window: refused as a replay.
    let second = challenge(&app, &user.email).await;
    let replay = assert_code(complete(&app, &second, totp_factor(&code)).await, Code::Unauthenticated);
    assert!(replay.message().contains("used already"), "{}", replay.message());
    // A code of an earlier step than one accepted is refused too; a later one works.
    complete(&app, &second, totp_factor(&next)).await.unwrap();
}

async fn a_recovery_code_completes_a_login_once(app: TestApp) {
    let user = enrolled_user(&app).await;
    let code = &user.recovery_codes[3];
    let done = complete(&app, &challenge(&app, &user.email).await, recovery_factor(&code.to_uppercase()))
        .await
        .unwrap();
    assert_eq!(claims(&app, &done.tokens.unwrap().access_token).await.amr, ["pwd", "otp"]);
    let again = challenge(&app, &user.email).await;
    assert_code(complete(&app, &again, recovery_factor(code)).await, Code::Unauthenticated);
    complete(&app, &again, recovery_factor(&user.recovery_codes[4])).await.unwrap();
}

async fn a_challenge_dies_after_five_wrong_codes_or_five_minutes(app: TestApp) {
    // Generous throttle, so that the challenge's own limit is what stops the guesses.
    let app = app.restart_with(&[("IDENTITY_LOGIN_FREE_FAILURES", "100")]).await;
    let user = enrolled_user(&app).await;
    let handle = challenge(&app, &user.email).await;
    let right = user.fresh_code(&app);
    let wrong = if right == "111111" { "222222" } else { "111111" };
    for _ in 0..5 {
        assert_code(complete(&app, &handle, totp_factor(wrong)).await, Code::Unauthenticated);
    }
    let dead = assert_code(complete(&app, &handle, totp_factor(&right)).await, Code::Unauthenticated);
    assert!(dead.message().contains("log in again"), "{}", dead.message());

    let handle = challenge(&app, &user.email).await;
    app.clock.advance(Duration::from_secs(301));
    let late = totp(&user.secret, app.clock.now().timestamp());
    assert_code(complete(&app, &handle, totp_factor(&late)).await, Code::Unauthenticated);
}

async fn wrong_codes_count_against_the_login_throttle(app: TestApp) {
    // IDENTITY_LOGIN_FREE_FAILURES is 3: the login (a right password is not a success until the
    // second factor is) and two wrong codes use them up; the next attempt must wait, even with
    // the right code.
    let user = enrolled_user(&app).await;
    let handle = challenge(&app, &user.email).await;
    let right = user.fresh_code(&app);
    let wrong = if right == "111111" { "222222" } else { "111111" };
    for _ in 0..2 {
        assert_code(complete(&app, &handle, totp_factor(wrong)).await, Code::Unauthenticated);
    }
    assert_code(complete(&app, &handle, totp_factor(&right)).await, Code::ResourceExhausted);
    assert_code(app.login(&user.email, PASSWORD).await, Code::ResourceExhausted);
}

async fn no_rpc_issues_tokens_without_the_second_step(app: TestApp) {
    let (app, smtp) = crate::recovery::with_smtp(app, &[]).await;
    let user = enrolled_user(&app).await;
    // Login: a challenge, never tokens (checked in `challenge`).
    let handle = challenge(&app, &user.email).await;
    // RefreshToken: no session exists before CompleteLogin, and the challenge is no refresh token.
    let refresh = app.auth().refresh_token(RefreshTokenRequest { refresh_token: handle.clone() }).await;
    assert_code(refresh, Code::Unauthenticated);
    // ResetPassword issues no tokens, and the second factor survives it.
    app.auth()
        .request_password_reset(identity::proto::RequestPasswordResetRequest { email: user.email.clone() })
        .await
        .unwrap();
    let received = smtp.wait_for_subject(crate::recovery::RESET, 1, Duration::from_secs(20)).await;
    let token = received[0].token().unwrap();
    let new_password = "quartz-lantern-meadow-77-harbor";
    let reset = identity::proto::ResetPasswordRequest { token, new_password: new_password.into() };
    app.auth().reset_password(reset).await.unwrap();
    let login = app.login(&user.email, new_password).await.unwrap();
    assert!(login.tokens.is_none() && login.mfa_challenge.is_some());
    // The enrolling session was ended by the reset; its refresh token issues nothing.
    let old = RefreshTokenRequest { refresh_token: user.tokens.refresh_token.clone() };
    assert_code(app.auth().refresh_token(old).await, Code::Unauthenticated);
    // A wrong password answers as for any account: nothing about a second factor.
    let wrong = assert_code(app.login(&user.email, "not-the-password-at-all").await, Code::Unauthenticated);
    assert_eq!(wrong.message(), "invalid email or password");
}

async fn step_up_renews_auth_time_and_the_session_keeps_it(app: TestApp) {
    let user = enrolled_user(&app).await;
    // The enrolling session was authenticated with the password only.
    let access = &user.tokens.access_token;
    let before = claims(&app, access).await;
    assert_eq!(before.amr, ["pwd"]);
    let login_time = before.auth_time.unwrap().seconds;

    let code = user.fresh_code(&app);
    let request = bearer(StepUpRequest { second_factor: totp_factor(&code) }, access);
    let started = app.clock.now().timestamp();
    let stepped = app.users().step_up(request).await.unwrap().into_inner();
    let finished = app.clock.now().timestamp();
    assert!(stepped.expires_in > 0);
    let after = claims(&app, &stepped.access_token).await;
    assert_eq!(after.amr, ["pwd", "otp"]);
    assert!((started..=finished).contains(&after.auth_time.unwrap().seconds));
    assert!(after.auth_time.unwrap().seconds > login_time);
    assert_eq!(after.session_id, before.session_id);

    // The session's later tokens keep the step-up.
    app.clock.advance(Duration::from_secs(60));
    let refreshed = app
        .auth()
        .refresh_token(RefreshTokenRequest { refresh_token: user.tokens.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let refreshed = claims(&app, &refreshed.access_token).await;
    assert_eq!(refreshed.amr, ["pwd", "otp"]);
    assert_eq!(refreshed.auth_time, after.auth_time);

    // A wrong code is refused; a user without a second factor cannot step up.
    let request = bearer(StepUpRequest { second_factor: totp_factor(&code) }, access);
    assert_code(app.users().step_up(request).await, Code::Unauthenticated);
    let (_, plain) = app.signed_in_user().await;
    let request =
        bearer(StepUpRequest { second_factor: totp_factor("123456") }, &plain.tokens.unwrap().access_token);
    assert_code(app.users().step_up(request).await, Code::FailedPrecondition);
}

async fn regenerating_codes_and_disabling_need_the_password_and_a_second_factor(app: TestApp) {
    let user = enrolled_user(&app).await;
    let access = &user.tokens.access_token;
    let regenerate = |password: &str, factor| {
        bearer(
            RegenerateRecoveryCodesRequest { current_password: password.into(), second_factor: factor },
            access,
        )
    };
    let wrong_password = app
        .users()
        .regenerate_recovery_codes(regenerate("wrong-password-here", totp_factor(&user.fresh_code(&app))))
        .await;
    assert_code(wrong_password, Code::Unauthenticated);
    let codes = app
        .users()
        .regenerate_recovery_codes(regenerate(PASSWORD, totp_factor(&user.fresh_code(&app))))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    assert_eq!(codes.len(), 10);
    // The old codes stopped working; a new one works.
    let handle = challenge(&app, &user.email).await;
    assert_code(
        complete(&app, &handle, recovery_factor(&user.recovery_codes[0])).await,
        Code::Unauthenticated,
    );
    complete(&app, &handle, recovery_factor(&codes[0])).await.unwrap();

    let disable = |factor| {
        bearer(DisableTotpRequest { current_password: PASSWORD.into(), second_factor: factor }, access)
    };
    assert_code(app.users().disable_totp(disable(None)).await, Code::InvalidArgument);
    app.users().disable_totp(disable(recovery_factor(&codes[1]))).await.unwrap();
    assert!(app.login(&user.email, PASSWORD).await.unwrap().tokens.is_some(), "the password alone again");
}

async fn an_admin_sees_and_resets_a_second_factor_and_the_events_say_so(app: TestApp) {
    let user = enrolled_user(&app).await;
    let key_name = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let key = app.service_key(&key_name, &[identity::domain::Permission::Admin]).await;
    let mut admin = AdminServiceClient::new(app.channel.clone());
    let get =
        || bearer(GetUserRequest { user: Some(get_user_request::User::UserId(user.user_id.clone())) }, &key);
    assert!(admin.get_user(get()).await.unwrap().into_inner().mfa_enabled);

    let reset =
        admin.reset_mfa(bearer(ResetMfaRequest { user_id: user.user_id.clone() }, &key)).await.unwrap();
    assert!(reset.into_inner().removed);
    assert!(!admin.get_user(get()).await.unwrap().into_inner().mfa_enabled);
    assert!(app.login(&user.email, PASSWORD).await.unwrap().tokens.is_some());
    let unknown = bearer(ResetMfaRequest { user_id: uuid::Uuid::new_v4().to_string() }, &key);
    assert_code(admin.reset_mfa(unknown).await, Code::NotFound);

    let mut stream = app.watch_user_events(0).await;
    let mut kinds = Vec::new();
    loop {
        let message =
            tokio::time::timeout(Duration::from_secs(15), stream.message()).await.unwrap().unwrap().unwrap();
        kinds.extend(
            message
                .events
                .into_iter()
                .filter(|e| e.user_id == user.user_id)
                .filter_map(|e| e.kind.map(|kind| (kind, e.actor)))
                .filter(|(k, _)| matches!(k, Kind::MfaEnabled(_) | Kind::MfaDisabled(_))),
        );
        if message.caught_up {
            break;
        }
    }
    // Enabled by the owner (no actor), removed by the operator's service key, named as such.
    let service_key_actor = format!("service_key:{key_name}");
    assert!(
        matches!(kinds.as_slice(),
            [(Kind::MfaEnabled(_), owner), (Kind::MfaDisabled(_), operator)]
                if owner.is_empty() && *operator == service_key_actor),
        "{kinds:?}"
    );
}

async fn malformed_codes_are_invalid_arguments_naming_the_field(app: TestApp) {
    let user = enrolled_user(&app).await;
    let handle = challenge(&app, &user.email).await;
    let status = assert_code(complete(&app, &handle, totp_factor("12345")).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["second_factor.totp_code"]);
    let status = assert_code(complete(&app, &handle, recovery_factor("nope")).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["second_factor.recovery_code"]);
    let status = assert_code(complete(&app, "", None).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["challenge", "second_factor"]);
    let status = assert_code(confirm(&app, &user.tokens.access_token, "abc").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["totp_code"]);
    // None of these cost the challenge anything: it still completes.
    complete(&app, &handle, totp_factor(&user.fresh_code(&app))).await.unwrap();
}

async fn enabling_a_second_factor_ends_the_other_password_only_sessions(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let enrolling = login.tokens.unwrap();
    // A session someone else may hold, opened with the password alone.
    let other = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap();
    let started = begin(&app, &enrolling.access_token).await.unwrap();
    let secret = secret_of(&started.otpauth_uri);
    confirm(&app, &enrolling.access_token, &totp(&secret, app.clock.now().timestamp())).await.unwrap();

    let validate = |access: &str| ValidateTokenRequest { access_token: access.into() };
    let other_now = app.tokens().validate_token(validate(&other.access_token)).await.unwrap().into_inner();
    assert!(!other_now.active, "the other session's access token is revoked");
    let refresh = RefreshTokenRequest { refresh_token: other.refresh_token.clone() };
    assert_code(app.auth().refresh_token(refresh).await, Code::Unauthenticated);

    // The session that enrolled goes on, and still says it was opened with the password alone.
    assert_eq!(claims(&app, &enrolling.access_token).await.amr, ["pwd"]);
    let refresh = RefreshTokenRequest { refresh_token: enrolling.refresh_token.clone() };
    let renewed = app.auth().refresh_token(refresh).await.unwrap().into_inner().tokens.unwrap();
    assert_eq!(claims(&app, &renewed.access_token).await.amr, ["pwd"]);
}
