//! Connections as a stranger can open them: silent ones are closed after the handshake timeout,
//! and one address cannot hold more than its share, while everyone else still gets in.

use std::{net::IpAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{helpers::TestApp, on_both_backends};

on_both_backends!(
    a_silent_connection_is_closed_after_the_handshake_timeout,
    a_connection_that_stalls_inside_the_preface_is_closed_too,
    excess_connections_from_one_address_are_closed_while_other_addresses_get_in,
);

/// Reads until the server closes the connection (end of stream, or a reset). The outer limit
/// only turns a server that never closes into a failure instead of a hung test.
pub async fn closed_by_server(mut stream: TcpStream) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the server kept a connection open that it should have closed");
}

/// The server still answers health checks over its test channel.
pub async fn assert_healthy(channel: &Channel) {
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: "identity.v1.AuthService".into() })
        .await
        .expect("the server still answers");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
}

async fn a_silent_connection_is_closed_after_the_handshake_timeout(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_HANDSHAKE_TIMEOUT", "200ms")]).await;
    let silent = TcpStream::connect(app.addr).await.unwrap();
    closed_by_server(silent).await;
    assert_healthy(&app.channel).await;
}

async fn a_connection_that_stalls_inside_the_preface_is_closed_too(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_HANDSHAKE_TIMEOUT", "200ms")]).await;
    let mut stalling = TcpStream::connect(app.addr).await.unwrap();
    stalling.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    closed_by_server(stalling).await;
    assert_healthy(&app.channel).await;
}

/// A gRPC channel whose connection comes from `source` (any 127/8 address is loopback).
async fn channel_from(app: &TestApp, source: &str) -> Channel {
    Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .local_address(Some(source.parse::<IpAddr>().unwrap()))
        .connect_lazy()
}

async fn health(channel: &Channel) -> Result<ServingStatus, tonic::Status> {
    let request = HealthCheckRequest { service: String::new() };
    Ok(HealthClient::new(channel.clone()).check(request).await?.into_inner().status())
}

async fn excess_connections_from_one_address_are_closed_while_other_addresses_get_in(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_MAX_CONNECTIONS_PER_CLIENT", "2")]).await;
    let first = channel_from(&app, "127.0.0.2").await;
    let second = channel_from(&app, "127.0.0.2").await;
    assert_eq!(health(&first).await.unwrap(), ServingStatus::Serving);
    assert_eq!(health(&second).await.unwrap(), ServingStatus::Serving);

    let third = channel_from(&app, "127.0.0.2").await;
    let refused = health(&third).await;
    assert!(refused.is_err(), "a third connection from one address got in: {refused:?}");
    let raw = connect_from("127.0.0.2", app.addr).await;
    closed_by_server(raw).await;

    let elsewhere = channel_from(&app, "127.0.0.3").await;
    assert_eq!(health(&elsewhere).await.unwrap(), ServingStatus::Serving);
    // The two that got in keep working, and so does the server.
    assert_eq!(health(&first).await.unwrap(), ServingStatus::Serving);
    assert_healthy(&app.channel).await;

    // A slot given back can be taken again.
    drop((first, refused));
    let again = channel_from(&app, "127.0.0.2").await;
    let served =
        crate::helpers::eventually(Duration::from_secs(10), || async { health(&again).await.is_ok() }).await;
    assert!(served.is_some(), "a closed connection's slot was not given back");
}

/// A TCP connection to `to` from the loopback address `source`.
async fn connect_from(source: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}
