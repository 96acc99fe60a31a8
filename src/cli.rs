//! The subcommands other than serving: `migrate`, `keygen` and `healthcheck`.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    config::Config,
    startup::{StartupError, connect_and_migrate},
    tokens::{KeyError, generate_key_pem},
};

pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    let store = connect_and_migrate(config).await?;
    store.close().await;
    Ok(())
}

/// Writes a new Ed25519 PKCS#8 PEM key to `path` (mode 0600, never over an existing file), or
/// to standard output.
pub fn keygen(path: Option<&Path>) -> Result<(), KeyError> {
    let pem = generate_key_pem()?;
    let Some(path) = path else {
        let mut out = std::io::stdout();
        return out
            .write_all(pem.as_bytes())
            .map_err(|source| KeyError::Write { path: "<stdout>".into(), source });
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .map_err(|source| KeyError::Write { path: path.to_owned(), source })
}

/// The address a local health check should dial: the listen address, with a wildcard IP
/// replaced by loopback.
pub fn local_target(listen_addr: SocketAddr) -> SocketAddr {
    if listen_addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen_addr.port())
    } else {
        listen_addr
    }
}

/// Asks grpc.health.v1 about `service` ("" for the whole server); Ok(true) only for SERVING.
pub async fn healthcheck(addr: SocketAddr, service: &str) -> Result<bool, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .map_err(|status| format!("health check failed: {}", status.message()))?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}
