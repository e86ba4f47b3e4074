//! The client address behind proxies: `ingest::client_ip` over any `X-Forwarded-For` bytes and
//! any CIDR-ish configuration text.
//!
//! * `Networks::parse` never panics; what it accepts contains each address it names.
//! * `client_address` never panics and returns either the peer or an address that appears in
//!   the headers; from a peer that is not a trusted proxy it is always the peer.

#![no_main]

use std::net::IpAddr;

use ingest::client_ip::{canonical, client_address, Networks};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;

fn run(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let items: Vec<String> = (0..u.int_in_range(0..=4)?)
        .map(|_| u.arbitrary::<String>())
        .collect::<ArbResult<_>>()?;
    let _ = Networks::parse(&items);
    let trusted = Networks::parse(&["10.0.0.0/8".into(), "::1".into(), "127.0.0.1".into()])
        .expect("valid");
    let peer: IpAddr = if u.arbitrary()? {
        IpAddr::from(u.arbitrary::<[u8; 4]>()?)
    } else {
        IpAddr::from(u.arbitrary::<[u8; 16]>()?)
    };
    let headers: Vec<Vec<u8>> = (0..u.int_in_range(0..=3)?)
        .map(|_| u.arbitrary::<Vec<u8>>())
        .collect::<ArbResult<_>>()?;
    let client = client_address(peer, headers.iter().map(Vec::as_slice), &trusted);
    if !trusted.contains(peer) {
        assert_eq!(client, canonical(peer));
    } else if client != canonical(peer) {
        let text: Vec<String> = headers
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect();
        let named = text.iter().any(|t| {
            t.split(',').any(|entry| {
                let entry = entry.trim();
                entry.parse::<IpAddr>().map(canonical) == Ok(client)
                    || entry.parse::<std::net::SocketAddr>().map(|s| canonical(s.ip())) == Ok(client)
                    || entry
                        .strip_prefix('[')
                        .and_then(|e| e.strip_suffix(']'))
                        .and_then(|e| e.parse::<IpAddr>().ok())
                        .map(canonical)
                        == Some(client)
            })
        });
        assert!(named, "{client} is neither the peer nor a forwarded hop");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
