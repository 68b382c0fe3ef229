//! Peer addresses: what the transports can dial.

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// Checks that `address` is an address a peer can be reached at:
/// `host:port`, where `host` is an IPv4 address, an IPv6 address in
/// brackets (`[::1]:7001`), or a DNS name, and `port` is 1–65535.
///
/// # Contract
///
/// Both backends check every address they are given with this function —
/// [`FactoryConfig::local_address`](crate::FactoryConfig::local_address),
/// each peer's, and the one passed to
/// [`Admin::add_voter`](crate::Admin::add_voter) /
/// [`Admin::add_learner`](crate::Admin::add_learner) — before anything is
/// started or proposed, so a bad address is refused at once instead of
/// surfacing later as a peer nobody can reach. Names are not resolved
/// here: resolution is the transport's, at connect time.
///
/// # Errors
///
/// [`Error::InvalidConfig`], naming the address and what is wrong with it.
///
/// # Example
///
/// ```
/// use raftengine::{Error, check_address};
///
/// assert!(check_address("127.0.0.1:7001").is_ok());
/// assert!(check_address("[::1]:7001").is_ok());
/// assert!(check_address("node-1.raft.internal:7001").is_ok());
/// for bad in ["", "not-an-address", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:0"] {
///     assert!(matches!(check_address(bad), Err(Error::InvalidConfig(_))), "{bad}");
/// }
/// ```
pub fn check_address(address: &str) -> Result<()> {
    why_not_dialable(address)
        .map_err(|why| Error::InvalidConfig(format!("address {address:?} is not host:port: {why}")))
}

fn why_not_dialable(address: &str) -> std::result::Result<(), String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return if addr.port() == 0 {
            Err("port 0 cannot be dialed".into())
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("no port".into());
    };
    match port.parse::<u16>() {
        Ok(0) => return Err("port 0 cannot be dialed".into()),
        Ok(_) => {}
        Err(_) => return Err(format!("port {port:?} is not a number in 1-65535")),
    }
    check_dns_name(host)
}

/// A host name as RFC 1123 allows it: dot-separated labels of letters,
/// digits and inner hyphens, at most 63 bytes each and 253 in all. A name
/// whose last label is all digits would be a malformed IPv4 address.
fn check_dns_name(host: &str) -> std::result::Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 bytes".into());
    }
    if host.contains(':') || host.starts_with('[') {
        return Err("an IPv6 address that does not parse".into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!("{host:?} is neither an IP address nor a host name"));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{host:?} is not a valid IPv4 address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialable_addresses_pass_and_others_name_the_problem() {
        for good in [
            "127.0.0.1:1",
            "10.0.0.7:65535",
            "[::1]:7001",
            "[fe80::1]:80",
            "localhost:7001",
            "raft-0.raft.default.svc.cluster.local.:7001",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "no port"),
            ("garbage", "no port"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:99999", "1-65535"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:http", "not a number"),
            (":7001", "empty"),
            ("999.1.1.1:7001", "IPv4"),
            ("::1:7001", "IPv6"),
            ("a_b:7001", "neither"),
            ("-a:7001", "neither"),
            ("a..b:7001", "neither"),
        ] {
            match check_address(bad) {
                Err(Error::InvalidConfig(m)) => assert!(m.contains(why), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
