//! Augur's destination policy for the outgoing requests its users steer: webhook deliveries,
//! the copies of output URLs into the file store (every redirect hop included). Model servers
//! the operator configures (Cog URLs, upstream API base URLs) are trusted and do not go
//! through it; neither does the CLI.
//!
//! - [`Policy`]: which addresses a request may reach. By default every public unicast address
//!   and nothing else: loopback, private (RFC 1918), link-local (the cloud metadata address
//!   169.254.169.254 among them), CGNAT, unspecified, multicast, broadcast, documentation and
//!   benchmarking ranges, IPv6 unique-local and link-local, and the IPv6 forms that embed a
//!   forbidden IPv4 address (IPv4-mapped, NAT64, 6to4) are refused ([`forbidden_range`]). The
//!   operator's allowlist ([`Policy::parse_allowlist`], `AUGUR_OUTBOUND_ALLOW`) opens CIDRs
//!   of their choice (an on-premise receiver) and wins over the default ranges.
//! - [`Policy::client_builder`]: a `reqwest` client builder whose DNS resolver drops the
//!   addresses the policy refuses, so the check is made on the addresses the connection is
//!   made to, after resolution, and a name that resolves to an internal address (DNS
//!   rebinding, `localhost`) does not pass. Hosts written as IP addresses skip resolvers, so
//!   [`Policy::check_url`] checks them before each request and [`Policy::redirects`] before
//!   each redirect hop. Proxy variables are ignored: a proxy would resolve the destination
//!   itself, out of the policy's sight.
//! - [`Failure`]: what a failed request may tell its user, coarsely ("refused: destination
//!   not allowed", "connect failed", "timed out"), so that the delivery log of a webhook is
//!   no port scanner: a refused destination reads the same whether a port is open or not,
//!   since no connection is attempted.

mod client;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use client::Failure;

/// Where outgoing requests steered by users may go: every public unicast address, plus the
/// operator's allowlist. Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow: Arc<[IpNet]>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("allow", &self.allowlist())
            .finish()
    }
}

/// A request refused by the [`Policy`]. Its text is the same whatever the address, so it can
/// be shown to the user who asked for the request; [`Refused::range`] says why, for the
/// operator's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("destination not allowed")]
pub struct Refused {
    range: &'static str,
}

impl Refused {
    /// The kind of address that was refused (`loopback`, `private`, ...).
    pub fn range(&self) -> &'static str {
        self.range
    }
}

/// An allowlist entry that is not a CIDR or an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{entry:?} is not a CIDR (an address and a prefix length, such as 10.1.0.0/16 or fd00::/8)"
)]
pub struct InvalidAllowlist {
    /// The entry as written.
    pub entry: String,
}

impl Policy {
    /// The default policy with `allow` opened as well.
    pub fn new(allow: impl IntoIterator<Item = IpNet>) -> Self {
        let mut allow: Vec<IpNet> = allow.into_iter().map(|n| n.trunc()).collect();
        allow.sort();
        allow.dedup();
        Self {
            allow: allow.into(),
        }
    }

    /// The default policy with the entries of a comma-separated list opened: CIDRs
    /// (`127.0.0.0/8,10.1.0.0/16,fd00::/8`) or single addresses. Blanks around entries and
    /// empty entries are ignored; an empty list opens nothing.
    ///
    /// # Errors
    ///
    /// The first entry that is neither a CIDR nor an address.
    pub fn parse_allowlist(list: &str) -> Result<Self, InvalidAllowlist> {
        Self::from_entries(list.split(','))
    }

    /// [`Policy::parse_allowlist`] over entries already split.
    ///
    /// # Errors
    ///
    /// The first entry that is neither a CIDR nor an address.
    pub fn from_entries<S: AsRef<str>>(
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, InvalidAllowlist> {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let net = IpNet::from_str(entry)
                .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                .map_err(|_| InvalidAllowlist {
                    entry: entry.chars().take(100).collect(),
                })?;
            nets.push(net);
        }
        Ok(Self::new(nets))
    }

    /// The operator's allowlist, as CIDRs (`127.0.0.0/8`).
    pub fn allowlist(&self) -> Vec<String> {
        self.allow.iter().map(ToString::to_string).collect()
    }

    /// Whether a request may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.check(ip).is_ok()
    }

    /// Whether a request may connect to `ip`, and if not, why.
    ///
    /// # Errors
    ///
    /// [`Refused`] when `ip` is in a [`forbidden_range`] and not on the allowlist.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        // `::ffff:127.0.0.1` is 127.0.0.1 on the wire: judged (and allowed) as that.
        let ip = ip.to_canonical();
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        if let Some(range) = forbidden_range(ip) {
            return Err(Refused { range });
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_ipv4(v6)
        {
            return self.check(IpAddr::V4(v4));
        }
        Ok(())
    }

    /// Checks a URL's host when it is an IP address (including the forms the URL standard
    /// reads as one, `http://0x7f000001/` and `http://2130706433/` among them). A host name
    /// passes here: the resolver of [`Policy::client_builder`] checks what it resolves to.
    ///
    /// # Errors
    ///
    /// [`Refused`] for an address the policy refuses, or a URL without a host.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refused { range: "no host" }),
        }
    }
}

/// The special-purpose range `ip` is in, if it is one a user's request must not reach
/// without the operator's say-so (the IANA special-purpose registries' ranges that are not
/// globally reachable, plus multicast and broadcast). IPv4-mapped IPv6 addresses are judged
/// as their IPv4 address; other IPv6 forms that embed one (NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are refused by [`Policy::check`] when the embedded address is.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => FORBIDDEN_V4
            .iter()
            .find(|(net, _)| net.contains(&v4))
            .map(|(_, name)| *name),
        IpAddr::V6(v6) => FORBIDDEN_V6
            .iter()
            .find(|(net, _)| net.contains(&v6))
            .map(|(_, name)| *name),
    }
}

/// The IPv4 address a NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address leads to.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if NAT64.contains(&ip) {
        Some(pair(s[6], s[7]))
    } else if SIX_TO_FOUR.contains(&ip) {
        Some(pair(s[1], s[2]))
    } else {
        None
    }
}

const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// IPv4 ranges refused by default (RFC 6890 and the IANA IPv4 special-purpose registry).
const FORBIDDEN_V4: [(Ipv4Net, &str); 15] = [
    (v4(0, 0, 0, 0, 8), "this network"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared address space (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved or broadcast"),
];

/// IPv6 ranges refused by default (the IANA IPv6 special-purpose registry).
const FORBIDDEN_V6: [(Ipv6Net, &str); 15] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    // IPv4-compatible addresses (deprecated), `::a.b.c.d`.
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "IPv4-compatible"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    // Teredo tunnels to an (obfuscated) IPv4 address.
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo"),
    (v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), "ORCHID"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), "segment routing"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique local"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = Policy::default();
        for s in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            let refused = policy.check(ip(s));
            assert!(refused.is_err(), "{s} was allowed");
            assert_eq!(refused.unwrap_err().to_string(), "destination not allowed");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = Policy::default();
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(policy.permits(ip(s)), "{s} was refused");
        }
    }

    #[test]
    fn refusals_name_the_range_for_the_operator() {
        let policy = Policy::default();
        assert_eq!(
            policy.check(ip("127.0.0.1")).unwrap_err().range(),
            "loopback"
        );
        assert_eq!(
            policy.check(ip("169.254.169.254")).unwrap_err().range(),
            "link-local"
        );
        assert_eq!(
            policy.check(ip("fd00::1")).unwrap_err().range(),
            "unique local"
        );
        assert_eq!(
            policy.check(ip("64:ff9b::a00:1")).unwrap_err().range(),
            "private"
        );
    }

    #[test]
    fn the_allowlist_opens_its_ranges_and_nothing_else() {
        let policy =
            Policy::parse_allowlist(" 127.0.0.0/8, 10.1.0.0/16,,::1/128, 192.168.7.7 ").unwrap();
        assert_eq!(
            policy.allowlist(),
            ["10.1.0.0/16", "127.0.0.0/8", "192.168.7.7/32", "::1/128"]
        );
        for s in [
            "127.0.0.1",
            "127.0.0.2",
            "10.1.200.3",
            "::1",
            "::ffff:127.0.0.1",
            "192.168.7.7",
        ] {
            assert!(policy.permits(ip(s)), "{s} was refused");
        }
        for s in ["10.2.0.1", "192.168.7.8", "169.254.169.254", "fe80::1"] {
            assert!(!policy.permits(ip(s)), "{s} was allowed");
        }
        // An allowed IPv4 address is reachable through NAT64 too (it is the same host).
        assert!(policy.permits(ip("64:ff9b::7f00:1")));
        // Host bits are dropped: 10.1.2.3/16 is 10.1.0.0/16.
        assert_eq!(
            Policy::parse_allowlist("10.1.2.3/16").unwrap().allowlist(),
            ["10.1.0.0/16"]
        );
        assert_eq!(Policy::parse_allowlist("").unwrap(), Policy::default());
    }

    #[test]
    fn malformed_allowlist_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "127.0.0.0/8,banana",
            "10.0.0/8",
            "::1/129",
            "localhost",
            "10.0.0.0/",
        ] {
            let err = Policy::parse_allowlist(bad).unwrap_err();
            assert!(bad.contains(&err.entry), "{bad}: {err}");
            assert!(err.to_string().contains("is not a CIDR"), "{err}");
        }
    }

    #[test]
    fn url_hosts_written_as_addresses_are_checked_in_every_spelling() {
        let policy = Policy::default();
        for url in [
            "http://127.0.0.1:9/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]:8080/x",
            "http://[::ffff:7f00:1]/",
            "https://169.254.169.254/latest/meta-data/",
            "http://0/",
        ] {
            let parsed = url::Url::parse(url).unwrap();
            assert!(policy.check_url(&parsed).is_err(), "{url} passed");
        }
        for url in [
            "https://example.com/hook",
            "http://8.8.8.8/",
            "http://localhost/",
        ] {
            // Names pass here; the resolver checks what they resolve to.
            assert!(
                policy.check_url(&url::Url::parse(url).unwrap()).is_ok(),
                "{url}"
            );
        }
    }
}
