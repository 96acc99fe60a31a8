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
    connections_past_the_listener_s_cap_are_closed_whatever_their_address,
    out_of_file_descriptors_the_accept_loop_backs_off_and_recovers,
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

async fn assert_serving(channel: &Channel) {
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
}

async fn excess_connections_from_one_address_are_closed_while_other_addresses_get_in(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_MAX_CONNECTIONS_PER_CLIENT", "2")]).await;
    let first = channel_from(&app, "127.0.0.2").await;
    let second = channel_from(&app, "127.0.0.2").await;
    assert_serving(&first).await;
    assert_serving(&second).await;

    let third = channel_from(&app, "127.0.0.2").await;
    let refused = health(&third).await;
    assert!(refused.is_err(), "a third connection from one address got in: {refused:?}");
    let raw = connect_from("127.0.0.2", app.addr).await;
    closed_by_server(raw).await;

    let elsewhere = channel_from(&app, "127.0.0.3").await;
    assert_serving(&elsewhere).await;
    // The two that got in keep working, and so does the server.
    assert_serving(&first).await;
    assert_healthy(&app.channel).await;

    // A slot given back can be taken again.
    drop((first, refused));
    let again = channel_from(&app, "127.0.0.2").await;
    let served =
        crate::helpers::eventually(Duration::from_secs(10), || async { health(&again).await.is_ok() }).await;
    assert!(served.is_some(), "a closed connection's slot was not given back");
}

async fn connections_past_the_listener_s_cap_are_closed_whatever_their_address(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_MAX_CONNECTIONS", "3")]).await;
    // The test's own channel holds the first place, two other addresses the rest.
    assert_healthy(&app.channel).await;
    let second = channel_from(&app, "127.0.0.2").await;
    let third = channel_from(&app, "127.0.0.3").await;
    assert_serving(&second).await;
    assert_serving(&third).await;

    let fourth = channel_from(&app, "127.0.0.4").await;
    let refused = health(&fourth).await;
    assert!(refused.is_err(), "a fourth connection got past a cap of 3: {refused:?}");
    closed_by_server(connect_from("127.0.0.5", app.addr).await).await;
    assert_serving(&third).await;

    // A place given back can be taken by anyone.
    drop(second);
    let served = crate::helpers::eventually(Duration::from_secs(10), || async {
        health(&channel_from(&app, "127.0.0.4").await).await.is_ok()
    })
    .await;
    assert!(served.is_some(), "a closed connection's place was not given back");
}

/// The real binary as a child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON log lines of `child`'s standard error, as they come.
fn log_lines(child: &mut Child) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let stderr = child.0.stderr.take().expect("stderr is piped");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line)
                && lines.send(event).is_err()
            {
                return;
            }
        }
    });
    received
}

/// The next log event whose message is `message` (the outer limit only turns a server that
/// never logs it into a failure instead of a hung test).
fn next_event(lines: &std::sync::mpsc::Receiver<serde_json::Value>, message: &str) -> serde_json::Value {
    loop {
        let event = lines.recv_timeout(Duration::from_secs(30)).expect("the server logged it");
        if event["message"] == message {
            return event;
        }
    }
}

/// The server as the issue found it spinning: a process out of file descriptors (64, filled
/// with silent connections), whose accept loop retried at once at full CPU.
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers(app: TestApp) {
    let command = std::process::Command::new("prlimit")
        .arg("--nofile=64")
        .arg(env!("CARGO_BIN_EXE_identity"))
        .env_clear()
        .env("IDENTITY_DATABASE_URL", &app.db.url)
        .env("IDENTITY_DATA_DIR", app.data_dir())
        .env("IDENTITY_LISTEN_ADDR", "127.0.0.1:0")
        .env("IDENTITY_BCRYPT_COST", "4")
        .env("IDENTITY_HANDSHAKE_TIMEOUT", "5m")
        .env("IDENTITY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the identity binary runs");
    let mut child = Child(command);
    let lines = log_lines(&mut child);
    let serving = next_event(&lines, "serving gRPC");
    let addr: std::net::SocketAddr = serving["addr"].as_str().unwrap().parse().unwrap();

    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Each failed accept waits twice as long as the one before, up to a second: no spinning.
    // An accept that succeeds in between starts again at 5 ms, and one can: on Postgres the
    // server's own sockets to the database come and go, and the backlog takes any descriptor
    // given back (seen under load: 5, 10, 5, 10, 20, ...). So the law is checked pair by pair,
    // and the run must still reach the one-second cap (eight doublings in a row) before long.
    let mut waits = Vec::new();
    while waits.last() != Some(&1000) {
        assert!(waits.len() < 60, "the backoff never reached its one-second cap: {waits:?}");
        waits.push(
            next_event(&lines, "cannot accept connections; backing off")["backoff_ms"].as_u64().unwrap(),
        );
    }
    assert_eq!(waits[0], 5, "the first failed accept waits 5 ms: {waits:?}");
    for pair in waits.windows(2) {
        let doubled = (pair[0] * 2).min(1000);
        assert!(pair[1] == doubled || pair[1] == 5, "a wait neither doubled nor started again: {waits:?}");
    }

    // Descriptors given back, the server accepts again.
    drop(silent);
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let served = crate::helpers::eventually(Duration::from_secs(30), || async {
        health(&channel).await.is_ok_and(|status| status == ServingStatus::Serving)
    })
    .await;
    assert!(served.is_some(), "the server did not accept again");
}

/// A TCP connection to `to` from the loopback address `source`.
async fn connect_from(source: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}
