//! How the gRPC server meets the network: TLS from files, accepted connections (bounded and
//! timed by `connections`), tonic's health and reflection services held to our request rules,
//! and the server-wide limits (request size, per-RPC timeout,
//! HTTP/2 keepalive pings, concurrent streams). Which services run lives in `startup`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::pb::{HealthCheckRequest, health_server::HealthServer};
use tonic_reflection::{
    pb::{v1, v1alpha},
    server::v1::ServerReflectionServer,
    server::v1alpha::ServerReflectionServer as ServerReflectionServerV1Alpha,
};
use tower::layer::util::{Identity, Stack};

use crate::{
    config::TlsFiles,
    connections::{ConnectionLimits, Handshake, Incoming},
    rpc::{RpcLogLayer, StrictRequests, proto},
    telemetry::RpcTracing,
};

/// Largest request a client may send: the biggest legitimate one (a signup) is well under 2 kB.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Upper bound on any one RPC, on top of the client's own `grpc-timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("TLS: cannot read {path}: {source}")]
pub struct TlsFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Reads the TLS files: a certificate chain and key to serve with and, for mutual TLS, the CA
/// whose client certificates are let in.
pub fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsFileError> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|source| TlsFileError { path: path.to_owned(), source });
    let identity = tonic::transport::Identity::from_pem(read(&files.cert_file)?, read(&files.key_file)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca_file {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// Accepted connections within `limits` (handshake deadline, caps in total and per client, a
/// back-off on accept errors), with Nagle's algorithm off and TCP keepalive on: see
/// [`crate::connections`]. `name` labels the listener's metrics.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    handshake: Handshake,
    name: &'static str,
) -> Incoming {
    Incoming::new(listener, limits, handshake, name)
}

/// The API server's builder: TLS when configured, the per-RPC timeout, HTTP/2 keepalive pings,
/// a cap on concurrent streams per connection, and the RPC log layer (tracing each RPC with
/// `tracing`, when traces are exported).
pub fn api_server(
    tls: Option<ServerTlsConfig>,
    tracing: Option<RpcTracing>,
) -> Result<Server<Stack<RpcLogLayer, Identity>>, tonic::transport::Error> {
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    Ok(server
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(256))
        .layer(RpcLogLayer::new(tracing)))
}

/// tonic's health service with our request size limit and decoding rules.
pub fn strict_health<T: tonic_health::pb::health_server::Health>(
    health: HealthServer<T>,
) -> StrictRequests<HealthServer<T>, HealthCheckRequest> {
    StrictRequests::new(health.max_decoding_message_size(MAX_REQUEST_BYTES))
}

/// Both versions of reflection (see [`reflection`]) with our request size limit and decoding
/// rules, or neither when turned off.
#[allow(clippy::type_complexity)]
pub fn strict_reflection(
    enabled: bool,
) -> Result<
    (
        Option<
            StrictRequests<
                ServerReflectionServer<impl v1::server_reflection_server::ServerReflection>,
                v1::ServerReflectionRequest,
            >,
        >,
        Option<
            StrictRequests<
                ServerReflectionServerV1Alpha<impl v1alpha::server_reflection_server::ServerReflection>,
                v1alpha::ServerReflectionRequest,
            >,
        >,
    ),
    tonic_reflection::server::Error,
> {
    if !enabled {
        return Ok((None, None));
    }
    let v1 = reflection().build_v1()?.max_decoding_message_size(MAX_REQUEST_BYTES);
    let v1alpha = reflection().build_v1alpha()?.max_decoding_message_size(MAX_REQUEST_BYTES);
    Ok((Some(StrictRequests::new(v1)), Some(StrictRequests::new(v1alpha))))
}

/// Reflection over every service this server runs, both reflection versions included, so that
/// `grpcurl list` shows them all whichever version it speaks.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.BadRequest and RetryInfo, so that grpcurl can print error details.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
}
