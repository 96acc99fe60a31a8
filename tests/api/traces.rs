//! Traces: with IDENTITY_OTLP_ENDPOINT pointing at a real OTLP receiver, a Login that carries a
//! W3C `traceparent` reaches the receiver as spans of the caller's trace: the RPC's server span
//! a child of the caller's span, the hash pool's wait and run and the database calls beneath it,
//! the resource naming the service, and no credential in any span.

use std::time::Duration;

use identity::proto::{LoginRequest, ValidateTokenRequest};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::{
    helpers::{PASSWORD, TestApp, eventually},
    on_both_backends,
    otlp::{OtlpReceiver, ReceivedSpan},
};

on_both_backends!(a_login_continues_the_callers_trace_and_its_spans_reach_the_collector);

/// The caller's trace and span ids, as in the W3C Trace Context specification's example.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN_ID: &str = "b7ad6b7169203331";
/// The batch processor exports every few seconds (`OTEL_BSP_SCHEDULE_DELAY`, 5 s by default).
const EXPORTED_WITHIN: Duration = Duration::from_secs(30);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The spans of `trace_id` received so far.
fn trace(receiver: &OtlpReceiver, trace_id: &str) -> Vec<ReceivedSpan> {
    receiver.spans().into_iter().filter(|span| hex(&span.span.trace_id) == trace_id).collect()
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.span.name == name).collect()
}

/// Whether `span` is beneath the span with id `ancestor` in `spans`.
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &[u8]) -> bool {
    let mut parent = span.span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|candidate| candidate.span.span_id == parent) {
            Some(next) => parent = next.span.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

async fn a_login_continues_the_callers_trace_and_its_spans_reach_the_collector(app: TestApp) {
    let receiver = OtlpReceiver::start().await;
    let app = app.restart_with(&[("IDENTITY_OTLP_ENDPOINT", &receiver.endpoint())]).await;
    let (user, _) = app.signed_in_user().await;

    let mut login =
        tonic::Request::new(LoginRequest { email: user.email.clone(), password: PASSWORD.into() });
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    login.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    login.metadata_mut().insert("tracestate", "shop=checkout".parse().unwrap());
    let tokens = app.auth().login(login).await.expect("login succeeds").into_inner().tokens.unwrap();
    // Without a traceparent, a request starts a trace of its own.
    let validate = ValidateTokenRequest { access_token: tokens.access_token.clone() };
    assert!(app.tokens().validate_token(validate).await.unwrap().into_inner().active);

    let complete = || async {
        let spans = trace(&receiver, TRACE_ID);
        let validated =
            receiver.spans().iter().any(|span| span.span.name == "identity.v1.TokenService/ValidateToken");
        ["identity.v1.AuthService/Login", "hash.wait", "hash.run"]
            .iter()
            .all(|name| !named(&spans, name).is_empty())
            && validated
    };
    assert!(eventually(EXPORTED_WITHIN, complete).await.is_some(), "exported: {:#?}", receiver.spans());
    let spans = trace(&receiver, TRACE_ID);
    let all = receiver.spans();
    let validated = named(&all, "identity.v1.TokenService/ValidateToken");
    assert_ne!(hex(&validated[0].span.trace_id), TRACE_ID);
    assert!(validated[0].span.parent_span_id.is_empty(), "{:#?}", validated[0]);

    // The RPC's span is a server span, child of the caller's span, in the caller's trace state.
    let rpc = named(&spans, "identity.v1.AuthService/Login");
    assert_eq!(rpc.len(), 1, "{spans:#?}");
    let rpc = rpc[0];
    assert_eq!(hex(&rpc.span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(rpc.span.kind(), SpanKind::Server);
    assert_eq!(rpc.span.trace_state, "shop=checkout");
    assert_eq!(rpc.attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(rpc.attribute("rpc.service").as_deref(), Some("identity.v1.AuthService"));
    assert_eq!(rpc.attribute("rpc.method").as_deref(), Some("Login"));
    assert_eq!(rpc.attribute("rpc.grpc.status_code").as_deref(), Some("0"));

    // The wait for a hashing thread and the bcrypt run are spans of their own beneath it, the
    // wait ending before the run starts; so is each database call.
    let (wait, run) = (named(&spans, "hash.wait"), named(&spans, "hash.run"));
    assert_eq!((wait.len(), run.len()), (1, 1), "{spans:#?}");
    assert!(descends_from(&spans, wait[0], &rpc.span.span_id), "{spans:#?}");
    assert!(descends_from(&spans, run[0], &rpc.span.span_id), "{spans:#?}");
    assert!(wait[0].span.end_time_unix_nano <= run[0].span.start_time_unix_nano);
    let database = if app.db.url.starts_with("postgres") { "postgresql" } else { "sqlite" };
    let calls: Vec<_> =
        spans.iter().filter(|span| span.attribute("db.system.name").as_deref() == Some(database)).collect();
    assert!(!calls.is_empty(), "no database span: {spans:#?}");
    for call in calls {
        assert_eq!(call.span.kind(), SpanKind::Client);
        assert!(descends_from(&spans, call, &rpc.span.span_id), "{call:#?}");
    }

    // The resource follows the OpenTelemetry conventions.
    assert_eq!(rpc.resource.get("service.name").map(String::as_str), Some("identity"));
    assert_eq!(rpc.resource.get("service.version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(rpc.resource.get("service.instance.id").map(String::len), Some(36));

    // No span anywhere holds the email, the password or a token.
    let secrets =
        [user.email.as_str(), PASSWORD, tokens.access_token.as_str(), tokens.refresh_token.as_str()];
    for span in receiver.spans() {
        for (key, value) in crate::otlp::attributes(&span.span.attributes) {
            for secret in secrets {
                assert!(!value.contains(secret), "{} holds a credential in {key}", span.span.name);
            }
        }
        assert!(span.span.events.is_empty(), "{} carries log events: {:?}", span.span.name, span.span.events);
    }
}
