//! Where a peer is dialled: an IP socket address, or a host name and port that is looked up
//! again at every dial (so a host that moves — a container rescheduled with a new address, a
//! DNS change — is followed without restarting the node).
//!
//! A looked-up name yields the first address of the endpoint's own family (a QUIC endpoint
//! bound to IPv4 cannot send to IPv6). A lookup that fails, finds no such address or takes
//! longer than [`RESOLVE_TIMEOUT`] counts as a failed dial: the peer's back-off applies. Each
//! peer has at most one lookup running (see [`Resolver`]).

use parking_lot::Mutex;
use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

/// Longest wait for one host-name lookup.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Parses what [`keel_types::address::check_address`] accepts (the chain's rule).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        keel_types::address::check_address(s)?;
        if let Ok(address) = s.parse::<SocketAddr>() {
            return Ok(PeerAddress::Socket(address));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
        Ok(PeerAddress::Name {
            host: host.into(),
            port: port.parse().map_err(|_| format!("`{s}`: port `{port}`"))?,
        })
    }
}

/// Looks one peer's address up for its dials, at most one lookup at a time: the system
/// resolver (`getaddrinfo`, on a blocking thread) cannot be cancelled, so a lookup that
/// outlives [`RESOLVE_TIMEOUT`] is kept and the next dial waits on it again instead of starting
/// another. One peer thus holds at most one blocking thread, however slow its name server.
pub(crate) struct Resolver {
    address: PeerAddress,
    pending: Mutex<Option<Lookup>>,
}

type Lookup = tokio::task::JoinHandle<std::io::Result<Vec<SocketAddr>>>;

impl Resolver {
    pub(crate) fn new(address: PeerAddress) -> Self {
        Resolver {
            address,
            pending: Mutex::new(None),
        }
    }

    /// The address to dial from an endpoint bound to `local`: the literal one, or the name
    /// looked up now, in `local`'s family. `None` (logged) if the lookup fails, finds no
    /// address of that family, or is still running after [`RESOLVE_TIMEOUT`].
    pub(crate) async fn resolve(&self, local: Option<SocketAddr>) -> Option<SocketAddr> {
        let (host, port) = match &self.address {
            PeerAddress::Socket(a) => return Some(*a),
            PeerAddress::Name { host, port } => (host.clone(), *port),
        };
        let mut lookup = self.pending.lock().take().unwrap_or_else(|| {
            let name = host.clone();
            tokio::task::spawn_blocking(move || {
                std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
                    .map(Iterator::collect)
            })
        });
        let found = match tokio::time::timeout(RESOLVE_TIMEOUT, &mut lookup).await {
            Ok(Ok(Ok(found))) => found,
            Ok(Ok(Err(e))) => {
                tracing::warn!(%host, error = %e, "cannot look up a peer's host name");
                return None;
            }
            Ok(Err(e)) => {
                tracing::warn!(%host, error = %e, "a peer's host-name lookup failed");
                return None;
            }
            Err(_) => {
                tracing::warn!(%host, "looking up a peer's host name takes over {RESOLVE_TIMEOUT:?}; the next dial waits for it again");
                *self.pending.lock() = Some(lookup);
                return None;
            }
        };
        let picked = pick(&found, local);
        if picked.is_none() {
            tracing::warn!(%host, ?found, ?local, "a peer's host name has no address this endpoint can reach (IPv4 and IPv6 do not mix)");
        }
        picked
    }
}

/// The first of `found` this endpoint can send to: one of the family of `local` (an endpoint
/// bound to an IPv4 address cannot send to IPv6, nor one bound to a specific IPv6 address to
/// IPv4); any first one when `local` is unknown or the IPv6 wildcard (dual-stack: IPv4 is
/// reached as IPv4-mapped IPv6).
pub(crate) fn pick(found: &[SocketAddr], local: Option<SocketAddr>) -> Option<SocketAddr> {
    let any = local.is_none_or(|l| l.is_ipv6() && l.ip().is_unspecified());
    found
        .iter()
        .find(|a| any || local.is_some_and(|l| l.is_ipv4() == a.is_ipv4()))
        .copied()
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
            "keel-0.example.org:7000".parse::<PeerAddress>(),
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
            ("keel-0:0", "port `0`"),
            ("10.0.0.300:7000", "not a valid IP address"),
            ("Keel-0:7000", "lowercase"),
        ] {
            let e = bad.parse::<PeerAddress>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long_host = format!("{}:1", "a.".repeat(127));
        assert!(
            long_host
                .parse::<PeerAddress>()
                .unwrap_err()
                .contains("over 253")
        );
        let too_long = format!("{}:1", "a.".repeat(130));
        assert!(
            too_long
                .parse::<PeerAddress>()
                .unwrap_err()
                .contains("over the limit of 256")
        );
    }

    #[test]
    fn the_address_picked_is_of_the_endpoints_family_whatever_the_order() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        let local_v4 = Some("0.0.0.0:1".parse().unwrap());
        let local_v6 = Some("[::1]:1".parse().unwrap());
        let dual_stack = Some("[::]:1".parse().unwrap());
        for found in [[v4, v6], [v6, v4]] {
            assert_eq!(pick(&found, local_v4), Some(v4));
            assert_eq!(pick(&found, local_v6), Some(v6));
            assert_eq!(pick(&found, dual_stack), Some(found[0]));
            assert_eq!(pick(&found, None), Some(found[0]));
        }
        assert_eq!(pick(&[v6], local_v4), None);
        assert_eq!(pick(&[v4], local_v6), None);
        assert_eq!(pick(&[], None), None);
    }

    #[tokio::test]
    async fn a_name_is_looked_up_and_an_unknown_one_is_none() {
        let name = Resolver::new("localhost:7000".parse().unwrap());
        let local = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(
            name.resolve(local).await,
            Some("127.0.0.1:7000".parse().unwrap())
        );
        let literal = Resolver::new(PeerAddress::Socket("10.1.2.3:9".parse().unwrap()));
        assert_eq!(
            literal.resolve(None).await,
            Some("10.1.2.3:9".parse().unwrap())
        );
        let unknown = Resolver::new("no-such-host.invalid:7000".parse().unwrap());
        assert_eq!(unknown.resolve(None).await, None);
    }
}
