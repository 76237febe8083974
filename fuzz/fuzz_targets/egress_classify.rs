//! `egress::classify`: IPv6 forms that carry an IPv4 address classify as
//! that address, and nothing special-purpose is ever called public.
//!
//! Input: [4 bytes IPv4] [16 bytes IPv6] [text...] (short input is zero-padded).
//! The text is also parsed the way a CONNECT host is (normalised, then as
//! an IP literal) and classified.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use airlock_fuzz::Input;
use airlock_proxy::egress::{classify, AddrClass};
use airlock_vault_client::normalize_host;
use libfuzzer_sys::fuzz_target;

fn v4_in(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

/// Ranges (IANA special-purpose registry and cloud metadata) that must never be `Public`.
fn v4_special(ip: Ipv4Addr) -> bool {
    const NETS: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([100, 64, 0, 0], 10),
        ([127, 0, 0, 0], 8),
        ([169, 254, 0, 0], 16),
        ([172, 16, 0, 0], 12),
        ([192, 0, 0, 0], 24),
        ([192, 0, 2, 0], 24),
        ([192, 168, 0, 0], 16),
        ([198, 18, 0, 0], 15),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([224, 0, 0, 0], 4),
        ([240, 0, 0, 0], 4),
        ([100, 100, 100, 200], 32),
    ];
    NETS.iter().any(|&(net, bits)| v4_in(ip, net, bits))
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn v6_special(ip: Ipv6Addr) -> bool {
    let nets: [(Ipv6Addr, u32); 8] = [
        (v6("::"), 128),
        (v6("::1"), 128),
        (v6("fc00::"), 7),
        (v6("fe80::"), 10),
        (v6("fec0::"), 10),
        (v6("ff00::"), 8),
        (v6("2001:db8::"), 32),
        (v6("fd00:ec2::254"), 128),
    ];
    nets.iter().any(|&(net, bits)| v6_in(ip, net, bits))
}

/// The IPv4 address an IPv6 address carries in its last 32 bits.
fn low32(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from(u128::from(ip) as u32)
}

fn with_prefix(prefix: Ipv6Addr, v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(prefix) | u128::from(u32::from(v4)))
}

fn check_v6(ip: Ipv6Addr) {
    let class = classify(IpAddr::V6(ip));
    assert_eq!(classify(IpAddr::V6(ip)), class, "not deterministic");
    if let Some(v4) = ip.to_ipv4_mapped() {
        assert_eq!(class, classify(IpAddr::V4(v4)), "mapped {ip} vs {v4}");
    }
    if v6_in(ip, v6("64:ff9b::"), 96) {
        let v4 = low32(ip);
        assert_eq!(class, classify(IpAddr::V4(v4)), "NAT64 {ip} vs {v4}");
    }
    if class == AddrClass::Public {
        assert!(
            !v6_special(ip),
            "{ip} is special-purpose but classified public"
        );
        // Forms that carry an IPv4 address are public only when it is.
        let seg = ip.segments();
        if v6_in(ip, v6("::"), 96) || v6_in(ip, v6("64:ff9b:1::"), 48) {
            assert_eq!(classify(IpAddr::V4(low32(ip))), AddrClass::Public, "{ip}");
        }
        if seg[0] == 0x2002 {
            let inner = Ipv4Addr::new(
                (seg[1] >> 8) as u8,
                seg[1] as u8,
                (seg[2] >> 8) as u8,
                seg[2] as u8,
            );
            assert_eq!(classify(IpAddr::V4(inner)), AddrClass::Public, "6to4 {ip}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut b4 = [0u8; 4];
    b4.iter_mut().for_each(|b| *b = input.byte());
    let mut b16 = [0u8; 16];
    b16.iter_mut().for_each(|b| *b = input.byte());
    let text = input.rest();

    let v4 = Ipv4Addr::from(b4);
    let c4 = classify(IpAddr::V4(v4));
    if c4 == AddrClass::Public {
        assert!(
            !v4_special(v4),
            "{v4} is special-purpose but classified public"
        );
    } else {
        assert_ne!(c4.as_str(), "", "every class has a name");
    }
    // Every IPv6 form of the IPv4 address, built and parsed from text.
    let forms = [
        (v4.to_ipv6_mapped(), "mapped"),
        (with_prefix(v6("64:ff9b::"), v4), "NAT64"),
    ];
    for (ip, what) in forms {
        assert_eq!(classify(IpAddr::V6(ip)), c4, "{what} {ip} vs {v4}");
    }
    for text in [format!("::ffff:{v4}"), format!("64:ff9b::{v4}")] {
        let ip: IpAddr = text.parse().unwrap();
        assert_eq!(classify(ip), c4, "{text} vs {v4}");
        // As a CONNECT host: `[::ffff:127.0.0.1]` is normalised and still caught.
        let host = normalize_host(&format!("[{text}]")).expect("bracketed IPv6 literal");
        let ip: IpAddr = host.parse().expect("normalised literal parses");
        assert_eq!(classify(ip), c4, "[{text}] normalised to {host}");
    }
    // The deprecated IPv4-compatible form and 6to4 are never more permissive.
    if c4 != AddrClass::Public {
        let compat = with_prefix(Ipv6Addr::UNSPECIFIED, v4);
        assert_ne!(classify(IpAddr::V6(compat)), AddrClass::Public, "{compat}");
        let [a, b, c, d] = v4.octets();
        let six_to_four = Ipv6Addr::new(
            0x2002,
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d]),
            b16[6].into(),
            0,
            0,
            0,
            b16[15].into(),
        );
        assert_ne!(
            classify(IpAddr::V6(six_to_four)),
            AddrClass::Public,
            "{six_to_four}"
        );
    }

    check_v6(Ipv6Addr::from(b16));

    if let Ok(text) = std::str::from_utf8(text) {
        if let Some(host) = normalize_host(text) {
            if let Ok(ip) = host.parse::<IpAddr>() {
                let class = classify(ip);
                if let IpAddr::V6(v6) = ip {
                    check_v6(v6);
                } else if class == AddrClass::Public {
                    assert!(!v4_special(host.parse().unwrap()), "{host}");
                }
            }
        }
    }
});
