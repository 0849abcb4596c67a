//! Validator addresses: the one rule for what the chain accepts as an added validator's
//! address and what peers dial ([`check_address`]; `keel_p2p::PeerAddress` parses through it).
//!
//! Invariants: an accepted address is `IP:PORT` or `HOST:PORT` in a single spelling per target
//! (so equal targets are equal strings), of bounded length, and dialable from another host.

/// Longest validator address (`host:port`) in bytes.
pub const MAX_ADDRESS_LEN: usize = 256;
/// Longest host name in a validator address (DNS's limit).
pub const MAX_HOST_LEN: usize = 253;

/// Checks a validator address, the one rule for the chain and for the dialling peers:
/// `IP:PORT` (`[IPv6]:PORT`) or `HOST:PORT`, at most [`MAX_ADDRESS_LEN`] bytes, a port from 1
/// to 65535, and a host name of dot-separated labels (letters, digits, inner dashes; at most 63
/// bytes each, [`MAX_HOST_LEN`] in all) whose last label is not all digits nor `0x…` (those
/// are IP addresses to the system resolver). One spelling per target, so the chain's
/// "address already in use" check compares like with like: an IP address as Rust prints it
/// (no leading zeros, shortest IPv6), a lowercase host without a trailing dot, a port of plain
/// digits. Not dialable, so refused: port 0, unspecified and multicast IPs, IPv6 scope ids
/// (`%`, which name an interface of one host). Messages name the part at fault.
pub fn check_address(address: &str) -> std::result::Result<(), String> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "{} bytes, over the limit of {MAX_ADDRESS_LEN}",
            address.len()
        ));
    }
    if address.contains('%') {
        return Err(format!(
            "`{address}`: an IPv6 scope id (`%`) names an interface of one host only"
        ));
    }
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        let ip = socket.ip();
        return if socket.port() == 0 {
            Err(format!("`{address}`: port 0 cannot be dialled"))
        } else if ip.is_unspecified() || ip.is_multicast() {
            Err(format!("`{address}`: {ip} cannot be dialled"))
        } else if socket.to_string() != address {
            Err(format!("`{address}`: write it as `{socket}`"))
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("`{address}` is not HOST:PORT"));
    };
    let plain = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && !(port.len() > 1 && port.starts_with('0'));
    if !plain || !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Err(format!(
            "`{address}`: port `{port}` is not a number from 1 to 65535"
        ));
    }
    check_host(host).map_err(|e| format!("`{address}`: {e}"))
}

fn check_host(host: &str) -> std::result::Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "the host is {} bytes, over {MAX_HOST_LEN}",
            host.len()
        ));
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("host `{host}`: write host names in lowercase"));
    }
    if host.ends_with('.') {
        return Err(format!("host `{host}`: leave out the trailing dot"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.last().is_some_and(|l| {
        (!l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) || l.starts_with("0x")
    }) {
        return Err(format!("host `{host}` is not a valid IP address"));
    }
    for label in labels {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_dialable_target() {
        for good in [
            "keel-4.example.net:7000",
            "localhost:7000",
            "10.0.0.3:7000",
            "[::1]:7000",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("[::0001]:7000", "write it as `[::1]:7000`"),
            ("Keel-4:7000", "lowercase"),
            ("keel-4:07000", "port `07000`"),
            (":7000", "the host is empty"),
        ] {
            let e = check_address(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
