//! Envoy external authorization over real gRPC, with Envoy's own message types: what Envoy would
//! do with each answer (forward with which headers, or refuse with which status) is what is
//! checked.

use std::{collections::HashMap, time::Duration};

use envoy_types::pb::envoy::{
    config::core::v3::{HeaderMap, HeaderValue, header_value_option::HeaderAppendAction},
    service::auth::v3::{
        AttributeContext, CheckRequest, CheckResponse,
        attribute_context::{HttpRequest, Request},
        authorization_client::AuthorizationClient,
        check_response::HttpResponse,
    },
};
use identity::{
    clock::Clock,
    domain::{Email, Role},
    proto::LogoutRequest,
    service::AccountAdmin,
};

use crate::{
    helpers::{PASSWORD, TestApp},
    on_both_backends,
};

on_both_backends!(
    an_active_token_is_allowed_with_the_identity_headers_and_forged_copies_replaced,
    an_expired_token_is_denied_with_401,
    a_revoked_session_is_denied_at_once,
    garbage_and_missing_credentials_are_denied_with_a_bearer_challenge,
    raw_headers_are_read_and_a_value_that_is_not_text_is_denied,
    with_a_required_role_a_token_without_it_is_denied_with_403,
);

/// A CheckRequest as Envoy sends it for an HTTP request with `headers`.
fn check_request(headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> =
        headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders/42".into(),
                    host: "shop.example.com".into(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

async fn check(app: &TestApp, request: CheckRequest) -> CheckResponse {
    AuthorizationClient::new(app.channel.clone()).check(request).await.expect("Check answers").into_inner()
}

/// What Envoy forwards upstream after an OK answer: the incoming headers with the answer's
/// headers set (replacing, as `OVERWRITE_IF_EXISTS_OR_ADD` says), then `headers_to_remove` removed, in that
/// order (`ext_authz.cc`, `Filter::onComplete`).
fn upstream_headers(incoming: &[(&str, &str)], response: &CheckResponse) -> HashMap<String, String> {
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not an OK answer: {response:?}");
    };
    let mut headers: HashMap<String, String> =
        incoming.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    for option in &ok.headers {
        let header = option.header.as_ref().unwrap();
        assert_eq!(option.append_action(), HeaderAppendAction::OverwriteIfExistsOrAdd, "{option:?} replaces");
        headers.insert(header.key.clone(), header.value.clone());
    }
    for name in &ok.headers_to_remove {
        headers.remove(name);
    }
    headers
}

/// The HTTP status and `www-authenticate` Envoy sends the client after a denial.
fn denial(response: &CheckResponse) -> (i32, Option<String>) {
    assert_ne!(response.status.as_ref().map(|status| status.code), Some(0), "denied: {response:?}");
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("not a denial: {response:?}");
    };
    let challenge = denied
        .headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .find(|header| header.key == "www-authenticate")
        .map(|header| header.value.clone());
    (denied.status.as_ref().map_or(0, |status| status.code), challenge)
}

async fn an_active_token_is_allowed_with_the_identity_headers_and_forged_copies_replaced(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let claims = app.identity().validate(&token).unwrap().claims.clone();
    let authorization = format!("Bearer {token}");
    let incoming = [
        ("authorization", authorization.as_str()),
        ("x-identity-user-id", "00000000-0000-0000-0000-000000000000"),
        ("x-identity-email", "admin@example.com"),
        ("x-identity-session-id", "forged"),
        ("x-identity-email-verified", "true"),
        ("accept", "application/json"),
    ];
    let response = check(&app, check_request(&incoming)).await;
    assert_eq!(response.status.as_ref().map(|status| status.code), Some(0), "{response:?}");
    let upstream = upstream_headers(&incoming, &response);
    assert_eq!(upstream["x-identity-user-id"], user.id);
    assert_eq!(upstream["x-identity-session-id"], claims.sid.to_string());
    assert_eq!(upstream["x-identity-email"], user.email);
    assert_eq!(upstream["x-identity-email-verified"], "false", "a new account's email is not verified");
    assert_eq!(upstream["accept"], "application/json", "other headers pass untouched");

    // The scheme is matched without regard to case, as HTTP says.
    let lower = format!("bearer {token}");
    let response = check(&app, check_request(&[("authorization", &lower)])).await;
    assert_eq!(upstream_headers(&[], &response)["x-identity-user-id"], user.id);
}

async fn an_expired_token_is_denied_with_401(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let authorization = format!("Bearer {}", login.tokens.unwrap().access_token);
    let request = || check_request(&[("authorization", &authorization)]);
    assert_eq!(check(&app, request()).await.status.unwrap().code, 0);
    app.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(denial(&check(&app, request()).await), (401, Some("Bearer error=\"invalid_token\"".into())));
}

async fn a_revoked_session_is_denied_at_once(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    let authorization = format!("Bearer {}", tokens.access_token);
    let request = || check_request(&[("authorization", &authorization)]);
    assert_eq!(check(&app, request()).await.status.unwrap().code, 0);
    app.auth().logout(LogoutRequest { refresh_token: tokens.refresh_token }).await.unwrap();
    assert_eq!(denial(&check(&app, request()).await), (401, Some("Bearer error=\"invalid_token\"".into())));
}

async fn garbage_and_missing_credentials_are_denied_with_a_bearer_challenge(app: TestApp) {
    let (_, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let invalid = Some("Bearer error=\"invalid_token\"".to_owned());
    let long = format!("Bearer {}", "a".repeat(8000));
    let two = format!("Bearer {token},Bearer {token}");
    let basic = format!("Basic {token}");
    for value in ["Bearer not.a.token", "Bearer", "Bearer ", "garbage", &basic, &long, &two, "Bearer \u{e9}"]
    {
        let response = check(&app, check_request(&[("authorization", value)])).await;
        assert_eq!(denial(&response), (401, invalid.clone()), "authorization: {value:?}");
    }
    let bare = Some("Bearer".to_owned());
    for headers in [vec![], vec![("cookie", "session=1")], vec![("x-identity-user-id", "forged")]] {
        let response = check(&app, check_request(&headers)).await;
        assert_eq!(denial(&response), (401, bare.clone()), "headers {headers:?}");
    }
    // Not even an HTTP request: still an answer, never an error Envoy could fail open on.
    assert_eq!(denial(&check(&app, CheckRequest::default()).await), (401, bare));
}

/// Envoy with `encode_raw_headers` sends `header_map` (bytes, in `raw_value`) instead of `headers`.
async fn raw_headers_are_read_and_a_value_that_is_not_text_is_denied(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let authorization = format!("Bearer {}", login.tokens.unwrap().access_token);
    let raw = |value: &[u8]| {
        let mut request = check_request(&[]);
        let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
        let header = |key: &str, value: &[u8]| HeaderValue {
            key: key.into(),
            raw_value: value.to_vec(),
            ..HeaderValue::default()
        };
        http.header_map =
            Some(HeaderMap { headers: vec![header("accept", b"*/*"), header("authorization", value)] });
        request
    };
    let response = check(&app, raw(authorization.as_bytes())).await;
    assert_eq!(upstream_headers(&[], &response)["x-identity-user-id"], user.id);
    // A proto string it is not, but the service answers, so that Envoy never fails open on it.
    let response = check(&app, raw(b"Bearer \xff\xfe")).await;
    assert_eq!(denial(&response), (401, Some("Bearer error=\"invalid_token\"".into())));
}

async fn with_a_required_role_a_token_without_it_is_denied_with_403(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_EXT_AUTHZ_REQUIRED_ROLE", "orders.read")]).await;
    let (user, login) = app.signed_in_user().await;
    let authorization = format!("Bearer {}", login.tokens.unwrap().access_token);
    let insufficient = (403, Some("Bearer error=\"insufficient_scope\"".to_owned()));
    assert_eq!(denial(&check(&app, check_request(&[("authorization", &authorization)])).await), insufficient);

    // Another role is not the one required; the required one, in a token issued after it was
    // granted, lets the request through.
    let admin = AccountAdmin::new(app.store.clone(), Clock::system(), None);
    let email = Email::parse("email", &user.email).unwrap();
    for (role, allowed) in [("orders.write", false), ("orders.read", true)] {
        admin.grant_or_revoke(&email, Role::parse("role", role).unwrap(), true).await.unwrap().unwrap();
        let token = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap().access_token;
        let response = check(&app, check_request(&[("authorization", &format!("Bearer {token}"))])).await;
        if allowed {
            assert_eq!(upstream_headers(&[], &response)["x-identity-user-id"], user.id);
        } else {
            assert_eq!(denial(&response), insufficient, "with {role} only");
        }
    }
    // No token at all is still "who are you?", not "not allowed".
    assert_eq!(denial(&check(&app, check_request(&[])).await), (401, Some("Bearer".into())));
}
