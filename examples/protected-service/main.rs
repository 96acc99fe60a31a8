//! protected-service: a tonic server whose one method, `/example.v1.WhoAmI/Get`, answers the
//! caller's user id, behind `IdentityAuthLayer`: tokens are verified locally against the keys
//! of the identity server at `IDENTITY_URL` and the revocations it pushes.
//!
//!     cargo run -p identity-client --example protected-service
//!
//! Environment: `IDENTITY_URL` (default `http://127.0.0.1:50051`), `LISTEN_ADDR` (default
//! `127.0.0.1:50052`), `REVOCATION_POLICY` (`fail-open`, the default, or `fail-closed`),
//! `SERVICE_KEY_FILE` (a key from `identity service-key create protected-service --permission
//! watch_revocations --out FILE`: WatchRevocations needs one unless this service's client
//! certificate is allow-listed), `RUST_LOG` (default `info`).

mod whoami;

use std::{error::Error, net::SocketAddr};

use identity_client::{AuthConfig, IdentityAuth, RevocationPolicy, ServiceKey};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let identity_url = env_or("IDENTITY_URL", "http://127.0.0.1:50051");
    let listen_addr: SocketAddr = env_or("LISTEN_ADDR", "127.0.0.1:50052").parse()?;
    let revocation_policy = match env_or("REVOCATION_POLICY", "fail-open").as_str() {
        "fail-open" => RevocationPolicy::default(),
        "fail-closed" => RevocationPolicy::FailClosed,
        other => {
            return Err(format!("REVOCATION_POLICY: expected fail-open or fail-closed, got {other:?}").into());
        }
    };

    let service_key = match std::env::var("SERVICE_KEY_FILE").ok().filter(|path| !path.is_empty()) {
        Some(path) => {
            Some(ServiceKey::from_file(&path).map_err(|e| format!("SERVICE_KEY_FILE {path}: {e}"))?)
        }
        None => {
            tracing::warn!("SERVICE_KEY_FILE is not set: the revocation stream will be refused");
            None
        }
    };
    let config = AuthConfig { revocation_policy, service_key, ..AuthConfig::default() };
    let auth = IdentityAuth::connect_to(&identity_url, config).await?;
    let listener = TcpListener::bind(listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, identity = %identity_url, "serving example.v1.WhoAmI");
    whoami::serve(listener, auth, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|value| !value.is_empty()).unwrap_or_else(|| default.to_owned())
}
