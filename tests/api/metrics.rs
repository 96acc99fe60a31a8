//! The Prometheus endpoint: scraped before and after a few calls, its counters must move, and
//! no caller can add series to it by inventing request paths.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp},
    malformed::call_raw,
    on_both_backends,
};

on_both_backends!(
    metrics_count_rpcs_logins_and_pool_activity,
    invented_paths_are_unimplemented_and_counted_under_one_label,
);

pub async fn scrape(app: &TestApp) -> String {
    let addr = app.metrics_addr.expect("metrics are on");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample whose name and labels start with `prefix`, or 0 if absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_count_rpcs_logins_and_pool_activity(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_METRICS_ADDR", "127.0.0.1:0")]).await;
    let before = scrape(&app).await;
    let (user, _) = app.signed_in_user().await;
    app.login(&user.email, "not-the-password-at-all").await.unwrap_err();
    let after = scrape(&app).await;

    let moved =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    let login = [("method", "/identity.v1.AuthService/Login"), ("code", "OK")];
    assert!(moved("identity_rpc_requests_total", &login) >= 1.0, "{after}");
    let failed = [("method", "/identity.v1.AuthService/Login"), ("code", "UNAUTHENTICATED")];
    assert!(moved("identity_rpc_requests_total", &failed) >= 1.0);
    assert!(
        moved("identity_rpc_duration_seconds_count", &[("method", "/identity.v1.AuthService/Signup")]) >= 1.0
    );
    assert!(moved("identity_logins_total", &[("outcome", "success")]) >= 1.0);
    assert!(moved("identity_logins_total", &[("outcome", "wrong_password")]) >= 1.0);
    assert!(moved("identity_db_acquire_seconds_count", &[]) >= 3.0);
    for gauge in ["identity_hash_pool_busy", "identity_hash_pool_queued", "identity_revoked_sessions"] {
        assert!(after.contains(&format!("# TYPE {gauge} gauge")), "{gauge} is missing");
    }
    assert!(!after.contains(PASSWORD));
}

async fn invented_paths_are_unimplemented_and_counted_under_one_label(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_METRICS_ADDR", "127.0.0.1:0")]).await;
    let before = scrape(&app).await;
    let invented = 300;
    for i in 0..invented {
        let path = match i % 3 {
            0 => format!("/grpc.health.v1.Health/Invented{i}"),
            1 => format!("/identity.v1.AuthService/Invented{i}"),
            _ => format!("/invented{i}.Service/Method"),
        };
        let status = call_raw(&app, &path, Vec::new()).await.expect_err("an invented method");
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
    let after = scrape(&app).await;
    assert!(!after.contains("Invented") && !after.contains("invented"), "a path became a label");
    let other = [("method", "other"), ("code", "UNIMPLEMENTED")];
    let counted = sample(&after, "identity_rpc_requests_total", &other)
        - sample(&before, "identity_rpc_requests_total", &other);
    assert!(counted >= f64::from(invented), "{counted} of {invented} counted as other");
    // Whatever else runs in this process, the label can only take the served methods' names
    // (fourteen of them) and `other`.
    let methods: std::collections::HashSet<&str> = after
        .lines()
        .filter(|line| line.starts_with("identity_rpc_requests_total{"))
        .filter_map(|line| line.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(methods.len() <= 15, "{methods:?}");
}
