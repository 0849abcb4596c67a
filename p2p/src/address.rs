//! Where a peer is dialled: an IP socket address, or a host name and port that is looked up
//! again at every dial (so a host that moves — a container rescheduled with a new address, a
//! DNS change — is followed without restarting the node).
//!
//! A looked-up name yields the first address of the endpoint's own family (a QUIC endpoint
//! bound to IPv4 cannot send to IPv6), else the first address. A lookup that fails or takes
//! longer than [`RESOLVE_TIMEOUT`] counts as a failed dial: the peer's back-off applies.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

/// Longest wait for one host-name lookup.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest host name accepted (DNS's limit).
pub const MAX_HOST_LEN: usize = 253;

/// A peer's dial address: `IP:PORT` (`[IPv6]:PORT`) or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddress {
    /// A literal socket address.
    Socket(SocketAddr),
    /// A host name, looked up at each dial.
    Name {
        /// The host name (letters, digits, `-` and `.`).
        host: String,
        /// The UDP port.
        port: u16,
    },
}

impl From<SocketAddr> for PeerAddress {
    fn from(address: SocketAddr) -> Self {
        PeerAddress::Socket(address)
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddress::Socket(a) => write!(f, "{a}"),
            PeerAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for PeerAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(address) = s.parse::<SocketAddr>() {
            return Ok(PeerAddress::Socket(address));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}`: port `{port}` is not a number from 0 to 65535"))?;
        check_host(host).map_err(|e| format!("`{s}`: {e}"))?;
        Ok(PeerAddress::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// A DNS host name: 1 to [`MAX_HOST_LEN`] bytes of dot-separated labels of letters, digits
/// and inner dashes, each at most 63 bytes.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "the host is {} bytes, over {MAX_HOST_LEN}",
            host.len()
        ));
    }
    for label in host.trim_end_matches('.').split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "host `{host}` is neither an IP address nor a host name (label `{label}`)"
            ));
        }
    }
    Ok(())
}

impl PeerAddress {
    /// The address to dial from an endpoint bound to `local`: the literal one, or the name
    /// looked up now (same family as `local` preferred). `None` if the lookup fails, finds
    /// nothing or times out.
    pub async fn resolve(&self, local: Option<SocketAddr>) -> Option<SocketAddr> {
        let (host, port) = match self {
            PeerAddress::Socket(a) => return Some(*a),
            PeerAddress::Name { host, port } => (host.as_str(), *port),
        };
        let found: Vec<SocketAddr> = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host, port)),
        )
        .await
        {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(e)) => {
                tracing::warn!(%host, error = %e, "cannot look up a peer's host name");
                return None;
            }
            Err(_) => {
                tracing::warn!(%host, "looking up a peer's host name timed out");
                return None;
            }
        };
        let same_family = |a: &&SocketAddr| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4());
        found.iter().find(same_family).or(found.first()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_and_host_names_parse() {
        assert_eq!(
            "10.0.0.1:7000".parse::<PeerAddress>(),
            Ok(PeerAddress::Socket("10.0.0.1:7000".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:7000".parse::<PeerAddress>(),
            Ok(PeerAddress::Socket("[::1]:7000".parse().unwrap()))
        );
        assert_eq!(
            "Keel-0.Example.org:7000".parse::<PeerAddress>(),
            Ok(PeerAddress::Name {
                host: "keel-0.example.org".into(),
                port: 7000
            })
        );
        assert_eq!(
            "keel-0:7000".parse::<PeerAddress>().unwrap().to_string(),
            "keel-0:7000"
        );
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_part_at_fault() {
        for (bad, says) in [
            ("keel-0", "not HOST:PORT"),
            (":7000", "the host is empty"),
            ("keel-0:70000", "port `70000`"),
            ("keel-0:x", "port `x`"),
            ("keel 0:7000", "label `keel 0`"),
            ("-keel:7000", "label `-keel`"),
            ("a..b:7000", "label ``"),
            ("::1:7000", "label `::1`"),
        ] {
            let e = bad.parse::<PeerAddress>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("{}:1", "a.".repeat(130));
        assert!(
            long.parse::<PeerAddress>()
                .unwrap_err()
                .contains("over 253")
        );
    }

    #[tokio::test]
    async fn a_name_is_looked_up_in_the_endpoints_family() {
        let name: PeerAddress = "localhost:7000".parse().unwrap();
        let v4 = name
            .resolve(Some("127.0.0.1:1".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(v4, "127.0.0.1:7000".parse::<SocketAddr>().unwrap());
        let literal = PeerAddress::Socket("10.1.2.3:9".parse().unwrap());
        assert_eq!(
            literal.resolve(None).await,
            Some("10.1.2.3:9".parse().unwrap())
        );
        let unknown: PeerAddress = "no-such-host.invalid:7000".parse().unwrap();
        assert_eq!(unknown.resolve(None).await, None);
    }
}
