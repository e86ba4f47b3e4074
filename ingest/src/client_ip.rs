//! Who is calling: the client address that a source's `allow_ips` is checked against.
//!
//! The client is the TCP peer, unless the peer is one of `ingest.trusted_proxies`. Then it is
//! the right-most address of `X-Forwarded-For` (all such headers, in order) that is not itself
//! a trusted proxy: each proxy appends the address it received the request from, so
//! everything to the right of the first untrusted hop was written by our own proxies and
//! everything to its left by the caller, who can write anything. An entry that is not an
//! address ends the walk: the client is then the last trusted hop, never an address a caller
//! could have chosen. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as dual-stack sockets
//! report IPv4 peers) are compared as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks, parsed from CIDRs or bare addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// `203.0.113.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).
    pub fn parse(items: &[String]) -> Result<Self, String> {
        items
            .iter()
            .map(|item| {
                let item = item.trim();
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        format!("`{item}` is not an address or a network like 203.0.113.0/24")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request from `peer` carrying the `X-Forwarded-For` header values
/// `forwarded_for` (in the order received).
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    trusted: &Networks,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(|b| *b == b','))
        .map(|entry| {
            std::str::from_utf8(entry)
                .ok()
                .and_then(|text| parse_hop(text.trim()))
                .map(canonical)
        })
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(*ip) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly bracketed or with a port.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(items: &[&str]) -> Networks {
        Networks::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(peer: &str, xff: &[&str], trusted: &[&str]) -> IpAddr {
        client_address(ip(peer), xff.iter().map(|v| v.as_bytes()), &nets(trusted))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client("198.51.100.9", &["10.0.0.1"], &["127.0.0.1"]),
            ip("198.51.100.9")
        );
        assert_eq!(
            client("198.51.100.9", &["10.0.0.1"], &[]),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn behind_proxies_the_client_is_the_right_most_untrusted_hop() {
        let proxies = ["127.0.0.1", "10.0.0.0/8"];
        // caller → 10.0.0.2 (LB) → 127.0.0.1 (sidecar) → us; the caller spoofed 1.2.3.4.
        assert_eq!(
            client("127.0.0.1", &["1.2.3.4, 203.0.113.7", "10.0.0.2"], &proxies),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("127.0.0.1", &["203.0.113.7"], &proxies),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("127.0.0.1", &[], &proxies),
            ip("127.0.0.1"),
            "no header: the proxy itself"
        );
        assert_eq!(
            client("127.0.0.1", &["10.0.0.3, 10.0.0.2"], &proxies),
            ip("10.0.0.3"),
            "only proxies: the left-most"
        );
        assert_eq!(
            client("127.0.0.1", &["203.0.113.7, garbage, 10.0.0.2"], &proxies),
            ip("10.0.0.2"),
            "an entry that is not an address stops the walk at the last trusted hop"
        );
        assert_eq!(
            client(
                "127.0.0.1",
                &["[2001:db8::1]:443", "203.0.113.8:5000"],
                &proxies
            ),
            ip("203.0.113.8")
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_and_hops_compare_as_ipv4() {
        assert_eq!(
            client(
                "::ffff:127.0.0.1",
                &["::ffff:203.0.113.7"],
                &["127.0.0.0/8"]
            ),
            ip("203.0.113.7")
        );
        assert!(nets(&["203.0.113.0/24"]).contains(ip("::ffff:203.0.113.200")));
        assert!(!nets(&["203.0.113.0/24"]).contains(ip("2001:db8::1")));
        assert!(nets(&["2001:db8::/32", "192.0.2.1"]).contains(ip("2001:db8:ffff::1")));
    }

    #[test]
    fn networks_parse_cidrs_and_bare_addresses_and_refuse_the_rest() {
        assert!(Networks::parse(&["203.0.113.0/24".into(), "::1".into()]).is_ok());
        assert!(Networks::parse(&["203.0.113.0/33".into()]).is_err());
        assert!(Networks::parse(&["example.com".into()]).is_err());
        assert_eq!(
            nets(&["203.0.113.9/24"]),
            nets(&["203.0.113.0/24"]),
            "host bits dropped"
        );
    }

    proptest! {
        /// Whatever a caller puts in `X-Forwarded-For`, the client is never an address the
        /// caller wrote unless it is the right-most untrusted hop our own proxies recorded,
        /// and an untrusted peer is always its own client.
        #[test]
        fn a_caller_cannot_choose_its_address(
            spoofed in proptest::collection::vec(any::<[u8; 4]>(), 0..5),
            junk in proptest::collection::vec(any::<u8>(), 0..40),
            real in any::<[u8; 4]>(),
        ) {
            let trusted = nets(&["10.0.0.0/8"]);
            let real = IpAddr::from(real);
            prop_assume!(!trusted.contains(real));
            let mut header: Vec<u8> = spoofed
                .iter()
                .map(|a| IpAddr::from(*a).to_string())
                .collect::<Vec<_>>()
                .join(", ")
                .into_bytes();
            header.extend_from_slice(&junk);
            let forwarded = format!("{real}, 10.1.1.1");
            let got = client_address(
                ip("10.0.0.1"),
                [header.as_slice(), forwarded.as_bytes()],
                &trusted,
            );
            prop_assert_eq!(got, real);
            let direct = client_address(real, [header.as_slice()], &trusted);
            prop_assert_eq!(direct, real);
        }
    }
}
