use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::{helpers::TestApp, on_both_backends};

on_both_backends!(
    reflection_lists_every_service,
    reflection_describes_the_identity_services_and_health,
    reflection_can_be_turned_off,
    health_reports_the_server_and_each_api_service_serving,
    shutdown_turns_every_health_entry_not_serving,
);

const EXPECTED_SERVICES: [&str; 8] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "identity.v1.AdminService",
    "identity.v1.AuthService",
    "identity.v1.EventService",
    "identity.v1.TokenService",
    "identity.v1.UserService",
];

async fn reflect(app: &TestApp, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap().message_response.unwrap()
}

async fn reflection_lists_every_service(app: TestApp) {
    let MessageResponse::ListServicesResponse(list) =
        reflect(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED_SERVICES);
}

async fn reflection_can_be_turned_off(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_REFLECTION", "false")]).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect_err("reflection is off");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let mut old = tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
        app.channel.clone(),
    );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let status = old.server_reflection_info(tokio_stream::iter([request])).await.expect_err("v1alpha is off");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(app.signed_in_user().await.1.tokens.is_some(), "the API is served without reflection");
}

async fn reflection_describes_the_identity_services_and_health(app: TestApp) {
    for symbol in [
        "identity.v1.AuthService",
        "identity.v1.TokenService",
        "identity.v1.UserService",
        "google.rpc.BadRequest",
        "grpc.health.v1.Health",
    ] {
        let response = reflect(&app, MessageRequest::FileContainingSymbol(symbol.into())).await;
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("no descriptor for {symbol}: {response:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    // v1alpha too, for older grpcurl builds.
    let mut client = tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
        app.channel.clone(),
    );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

async fn health_reports_the_server_and_each_api_service_serving(app: TestApp) {
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "identity.v1.AuthService", "identity.v1.TokenService", "identity.v1.UserService"] {
        let response =
            health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    assert!(identity::cli::healthcheck(app.addr, "").await.unwrap());
}

async fn shutdown_turns_every_health_entry_not_serving(mut app: TestApp) {
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest { service: "identity.v1.AuthService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let stopping = tokio::spawn(async move {
        app.stop().await;
    });
    let next = watch.message().await.unwrap().expect("an update before the stream ends");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // A watch is an RPC in flight: the server waits for it to end before it exits.
    drop(watch);
    stopping.await.unwrap();
}
