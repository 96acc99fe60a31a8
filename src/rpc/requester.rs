//! The [`Requester`] behind a request: the client it is charged to in the hash pool (peer
//! address, mutual-TLS certificate, or the forwarded address when a trusted proxy sent it) and
//! the moment its `grpc-timeout` runs out.

use std::time::{Duration, Instant};

use tonic::{Request, metadata::MetadataMap};

use crate::{
    clients::{Requester, TrustedProxies},
    domain::SessionOrigin,
};

pub fn requester<T>(request: &Request<T>, proxies: &TrustedProxies) -> Requester {
    let peer = request.remote_addr().map(|addr| addr.ip());
    let certificates = request.peer_certs();
    let certificate = certificates.as_ref().and_then(|chain| chain.first()).map(|leaf| leaf.as_ref());
    let forwarded = forwarded_for(request, proxies);
    Requester {
        client: proxies.client_key(peer, certificate, forwarded.as_deref()),
        deadline: deadline(request.metadata()),
    }
}

/// The `x-forwarded-for` lines joined, read only when someone could be trusted with them (one
/// value per proxy that appended a line).
fn forwarded_for<T>(request: &Request<T>, proxies: &TrustedProxies) -> Option<String> {
    (!proxies.is_empty())
        .then(|| {
            let values: Vec<&str> = request
                .metadata()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .collect();
            values.join(",")
        })
        .filter(|joined| !joined.is_empty())
}

/// Longest user agent a session records; the rest is cut off.
const MAX_USER_AGENT_BYTES: usize = 256;

/// Where a login comes from, as its session records it: the client's address (see
/// [`TrustedProxies::client_address`]) and its `user-agent`, printable and at most 256 bytes.
pub fn session_origin<T>(request: &Request<T>, proxies: &TrustedProxies) -> SessionOrigin {
    let peer = request.remote_addr().map(|addr| addr.ip());
    let address = proxies.client_address(peer, forwarded_for(request, proxies).as_deref());
    let user_agent = request
        .metadata()
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .map(|agent| {
            let mut kept = String::new();
            for c in agent.trim().chars().filter(|c| !c.is_control()) {
                if kept.len() + c.len_utf8() > MAX_USER_AGENT_BYTES {
                    break;
                }
                kept.push(c);
            }
            kept
        })
        .filter(|agent| !agent.is_empty());
    SessionOrigin { address: address.map(|ip| ip.to_string()), user_agent }
}

/// When the client stops waiting, from `grpc-timeout` (1 to 8 digits and a unit, per the gRPC
/// HTTP/2 protocol); `None` when it sent none or nonsense.
fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> Option<Duration> {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        deadline(&metadata).map(|at| at.saturating_duration_since(Instant::now()))
    }

    #[test]
    fn grpc_timeout_gives_the_deadline_and_nonsense_gives_none() {
        let near = |d: Option<Duration>, want: Duration| {
            d.is_some_and(|d| d <= want && d + Duration::from_secs(1) > want)
        };
        assert!(near(with_timeout("5S"), Duration::from_secs(5)));
        assert!(near(with_timeout("1500m"), Duration::from_millis(1500)));
        assert!(near(with_timeout("2M"), Duration::from_secs(120)));
        assert!(with_timeout("100").is_none());
        assert!(with_timeout("S").is_none());
        assert!(with_timeout("123456789S").is_none());
        assert!(with_timeout("-5S").is_none());
        assert!(with_timeout("5s").is_none());
        assert!(deadline(&MetadataMap::new()).is_none());
    }
}
