//! SSRF protection: a customer's endpoint URL must not reach hookstream's own network.
//!
//! Names are resolved here, not by the HTTP client's resolver: every address is checked
//! and only the addresses that pass are given to the connection, so what was checked is what
//! is connected to (no second lookup a DNS rebinding could change). Refused, unless the
//! tenant's `delivery.allow_networks` admits them: loopback, private (RFC 1918), link-local
//! (with the cloud metadata address 169.254.169.254), shared/CGNAT (100.64.0.0/10),
//! multicast, broadcast, unspecified, documentation and benchmarking ranges, IPv6 unique
//! local (fc00::/7), IPv6 link-local (fe80::/10), and the IPv4-mapped, IPv4-compatible and
//! NAT64 forms of all of these. A URL with an IP literal is checked the same way.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use thiserror::Error;

/// An address no delivery may connect to.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{ip} is a {class} address; the tenant's delivery.allow_networks does not admit it")]
pub struct Refused {
    pub ip: IpAddr,
    pub class: &'static str,
}

/// The special-purpose class of `ip`, if it is one deliveries must not reach.
pub fn class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return class_v4(v4);
            }
            let segments = v6.segments();
            match () {
                _ if v6.is_loopback() => Some("loopback"),
                _ if v6.is_unspecified() => Some("unspecified"),
                _ if v6.is_multicast() => Some("multicast"),
                _ if segments[0] & 0xfe00 == 0xfc00 => Some("private"),
                _ if segments[0] & 0xffc0 == 0xfe80 => Some("link_local"),
                _ if segments[0] == 0x2001 && segments[1] == 0x0db8 => Some("documentation"),
                _ => None,
            }
        }
    }
}

fn class_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, _, _] = ip.octets();
    match () {
        _ if ip.is_loopback() => Some("loopback"),
        _ if ip.is_private() => Some("private"),
        _ if ip.is_link_local() => Some("link_local"),
        _ if a == 100 && (64..128).contains(&b) => Some("cgnat"),
        _ if ip.is_multicast() => Some("multicast"),
        _ if ip.is_broadcast() => Some("broadcast"),
        _ if ip.is_unspecified() || a == 0 => Some("unspecified"),
        _ if ip.is_documentation() => Some("documentation"),
        _ if a == 198 && (b == 18 || b == 19) => Some("benchmarking"),
        _ if a >= 240 => Some("reserved"),
        _ => None,
    }
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) or
/// NAT64 (64:ff9b::a.b.c.d) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|x| *x == 0) && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
    (compatible || nat64).then_some(tail)
}

/// One tenant's rule: special addresses refused unless `allow` admits them.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        match class(ip) {
            Some(_) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(class) => Err(Refused { ip, class }),
            None => Ok(()),
        }
    }
}

/// The HTTP client's resolver: the system's lookup, then [`Guard::check`] on each address.
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        let lookup: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
            let started = std::time::Instant::now();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            crate::timing::record_lookup(started.elapsed());
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match guard.check(addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => {
                    Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        });
        lookup
    }
}

/// The [`Refused`] somewhere in an HTTP client error's chain.
pub fn refused_in(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_refused_in_every_form() {
        for (text, expected) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link_local"),
            ("100.64.0.1", "cgnat"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private"),
            ("fe80::1", "link_local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link_local"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2001:db8::1", "documentation"),
        ] {
            assert_eq!(class(ip(text)), Some(expected), "{text}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(class(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn an_allowlist_admits_only_its_networks() {
        let guard = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("8.8.8.8")), Ok(()));
        assert_eq!(
            guard.check(ip("10.0.0.1")),
            Err(Refused {
                ip: ip("10.0.0.1"),
                class: "private"
            })
        );
        assert!(Guard::default().check(ip("::ffff:127.0.0.1")).is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_special_addresses_only() {
        let resolver = GuardedResolver(Arc::new(Guard::default()));
        let error = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(refused_in(error.as_ref()).is_some(), "{error}");
        let allowed = GuardedResolver(Arc::new(Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])));
        let addrs: Vec<SocketAddr> = allowed
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
