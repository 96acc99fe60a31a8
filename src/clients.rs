//! Who is calling, as far as sharing work goes: the key the hash pool is fair between. A
//! forwarded address is a hint from outside, so it is believed only from configured proxies.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    time::Instant,
};

use sha2::{Digest, Sha256};

/// The client a request is charged to. IPv6 addresses are taken as their /64, the block one
/// subscriber is usually given, so an attacker cannot become a million clients by varying the
/// low bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    /// SHA-256 of the leaf certificate a mutual-TLS client presented.
    Certificate([u8; 32]),
    /// No peer address at all (an in-process transport): every such caller is one client.
    Unknown,
}

impl ClientKey {
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self::V6Prefix(prefix)
            }
        }
    }

    pub fn from_certificate(der: &[u8]) -> Self {
        Self::Certificate(Sha256::digest(der).into())
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(octets) => IpAddr::from(*octets).fmt(f),
            Self::V6Prefix(prefix) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(prefix);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
            Self::Certificate(digest) => {
                write!(f, "cert:")?;
                digest[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The client behind a request and the moment it stops waiting (from its `grpc-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    pub client: ClientKey,
    pub deadline: Option<Instant>,
}

impl Requester {
    /// An in-process caller with no deadline (the CLI, benchmarks, unit tests).
    pub fn local() -> Self {
        Self { client: ClientKey::Unknown, deadline: None }
    }
}

/// `IDENTITY_TRUSTED_PROXIES`: the peers whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr =
            address.parse().map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // Both sides left-aligned in 128 bits, so one mask serves IPv4 and IPv6.
        let (network, ip) = match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                (u128::from(network.to_bits()) << 96, u128::from(ip.to_bits()) << 96)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => (network.to_bits(), ip.to_bits()),
            _ => return false,
        };
        let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
        network & mask == ip & mask
    }
}

/// More forwarded hops than any real chain of proxies has; the rest of a longer header is not read.
const MAX_FORWARDED_HOPS: usize = 16;

impl TrustedProxies {
    /// A comma-separated list of IP addresses and CIDR blocks; empty trusts no one.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client a request is charged to: the forwarded client address when the direct peer is
    /// a trusted proxy, else the mutual-TLS certificate, else the peer address.
    ///
    /// `x-forwarded-for` is read from the right, skipping trusted proxies: the first address
    /// that is not one was added by a proxy we trust, so it is the client as that proxy saw it.
    /// Whatever is left of it was written by the client and proves nothing.
    pub fn client_key(
        &self,
        peer: Option<IpAddr>,
        certificate: Option<&[u8]>,
        forwarded_for: Option<&str>,
    ) -> ClientKey {
        if let (Some(peer), Some(forwarded)) = (peer, forwarded_for)
            && self.trusts(peer)
            && let Some(client) = self.forwarded_client(forwarded)
        {
            return ClientKey::from_ip(client);
        }
        match (certificate, peer) {
            (Some(der), _) => ClientKey::from_certificate(der),
            (None, Some(peer)) => ClientKey::from_ip(peer),
            (None, None) => ClientKey::Unknown,
        }
    }

    /// The address of the client behind a request, as far as it can be known: the forwarded
    /// client when the direct peer is a trusted proxy, else the peer. What a session records.
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        match (peer, forwarded_for) {
            (Some(peer), Some(forwarded)) if self.trusts(peer) => {
                self.forwarded_client(forwarded).or(Some(peer)).map(|ip| ip.to_canonical())
            }
            (peer, _) => peer.map(|ip| ip.to_canonical()),
        }
    }

    fn forwarded_client(&self, header: &str) -> Option<IpAddr> {
        let mut nearest = None;
        for hop in header.rsplit(',').take(MAX_FORWARDED_HOPS) {
            let ip = parse_hop(hop.trim())?;
            if !self.trusts(ip) {
                return Some(ip);
            }
            nearest = Some(ip);
        }
        // Every hop is a proxy of ours: the farthest one is the best we know.
        nearest
    }
}

/// One `x-forwarded-for` entry: an address, maybe with a port (`1.2.3.4:5678`, `[::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip())
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for cidr in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}/{}", cidr.network, cidr.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn proxies_parse_as_addresses_and_cidr_blocks() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,").unwrap();
        assert!(proxies.trusts(ip("10.200.3.4")));
        assert!(proxies.trusts(ip("192.168.1.7")));
        assert!(!proxies.trusts(ip("192.168.1.8")));
        assert!(proxies.trusts(ip("fd12::1")));
        assert!(!proxies.trusts(ip("fe80::1")));
        assert!(proxies.trusts(ip("::ffff:10.1.2.3")), "IPv4-mapped addresses are IPv4");
        assert_eq!(proxies.to_string(), "10.0.0.0/8,192.168.1.7/32,fd00::/8");
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("0.0.0.0/0").unwrap().trusts(ip("8.8.8.8")));
    }

    #[test]
    fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let key = |peer: &str, header: &str| proxies.client_key(Some(ip(peer)), None, Some(header));
        assert_eq!(key("10.0.0.5", "203.0.113.9"), ClientKey::from_ip(ip("203.0.113.9")));
        assert_eq!(key("198.51.100.1", "203.0.113.9"), ClientKey::from_ip(ip("198.51.100.1")));
        // The client wrote the leftmost entry itself; the proxy appended what it saw.
        assert_eq!(key("10.0.0.5", "1.1.1.1, 203.0.113.9, 10.0.0.9"), ClientKey::from_ip(ip("203.0.113.9")));
        assert_eq!(key("10.0.0.5", "203.0.113.9:4711"), ClientKey::from_ip(ip("203.0.113.9")));
        assert_eq!(key("10.0.0.5", "garbage"), ClientKey::from_ip(ip("10.0.0.5")));
        assert_eq!(key("10.0.0.5", "10.0.0.7"), ClientKey::from_ip(ip("10.0.0.7")));
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_key(Some(ip("127.0.0.1")), None, Some("203.0.113.9")),
            ClientKey::from_ip(ip("127.0.0.1"))
        );
    }

    #[test]
    fn a_certificate_names_the_client_unless_a_trusted_proxy_forwards_one() {
        let proxies = TrustedProxies::parse("10.0.0.1").unwrap();
        let cert = ClientKey::from_certificate(b"leaf");
        assert_eq!(proxies.client_key(Some(ip("192.0.2.1")), Some(b"leaf"), None), cert);
        assert_eq!(proxies.client_key(Some(ip("192.0.2.1")), Some(b"leaf"), Some("203.0.113.9")), cert);
        assert_eq!(
            proxies.client_key(Some(ip("10.0.0.1")), Some(b"leaf"), Some("203.0.113.9")),
            ClientKey::from_ip(ip("203.0.113.9"))
        );
        assert_eq!(proxies.client_key(None, None, None), ClientKey::Unknown);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_block() {
        assert_eq!(ClientKey::from_ip(ip("2001:db8:1:2::1")), ClientKey::from_ip(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(ClientKey::from_ip(ip("2001:db8:1:2::1")), ClientKey::from_ip(ip("2001:db8:1:3::1")));
        assert_eq!(ClientKey::from_ip(ip("::ffff:192.0.2.1")), ClientKey::from_ip(ip("192.0.2.1")));
        assert_eq!(ClientKey::from_ip(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
    }
}
