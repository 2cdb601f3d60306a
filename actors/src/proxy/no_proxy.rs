//! `NO_PROXY`: the hosts reached directly whatever the proxies say, matched as Go's
//! `golang.org/x/net/http/httpproxy` matches them.
//!
//! The value is a comma-separated list; each entry, trimmed and lowercased, is one of:
//!
//! - `*`: every host;
//! - a CIDR range (`10.0.0.0/8`, `fd00::/8`): IP-address hosts inside it;
//! - an IP address, optionally with a port (`10.1.2.3`, `10.1.2.3:8443`,
//!   `[fd00::1]:8443`): that address (on that port);
//! - a domain, optionally with a port: `example.com` matches `example.com` and every
//!   name under it; `.example.com` and `*.example.com` only the names under it.
//!
//! Domain entries never match an IP-address host, and an IP entry never matches a name
//! (nothing is resolved to decide). Malformed entries are skipped, as Go skips them.

use std::net::IpAddr;

/// One parsed entry of `NO_PROXY`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`: nothing is proxied.
    All,
    /// An address, and the port it is limited to when the entry names one.
    Ip(IpAddr, Option<String>),
    /// A range of addresses: the network and its prefix length.
    Cidr(IpAddr, u8),
    /// A domain: `suffix` starts with `.`; `exact` also matches the domain itself
    /// (the entry had no leading `.` or `*.`); `port` limits it as for [`Entry::Ip`].
    Domain {
        /// `.example.com`.
        suffix: String,
        /// Whether `example.com` itself matches.
        exact: bool,
        /// The only port that matches, when the entry names one.
        port: Option<String>,
    },
}

/// The parsed `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// Its entries, in the order given.
    entries: Vec<Entry>,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value; `None` or empty is the empty list.
    pub fn parse(value: Option<&str>) -> NoProxy {
        let entries = value
            .unwrap_or("")
            .split(',')
            .filter_map(|raw| parse_entry(&raw.trim().to_ascii_lowercase()))
            .collect();
        NoProxy { entries }
    }

    /// Whether the list says `host` (a name, or an IP address with or without its
    /// brackets) on `port` is reached directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        let ip = host.parse::<IpAddr>().ok();
        let port = port.to_string();
        let port_ok = |limit: &Option<String>| limit.as_ref().is_none_or(|p| *p == port);
        self.entries.iter().any(|entry| match (entry, ip) {
            (Entry::All, _) => true,
            (Entry::Ip(address, limit), Some(ip)) => same_ip(*address, ip) && port_ok(limit),
            (Entry::Cidr(network, bits), Some(ip)) => in_network(ip, *network, *bits),
            (
                Entry::Domain {
                    suffix,
                    exact,
                    port: limit,
                },
                None,
            ) => {
                (host.ends_with(suffix.as_str()) || (*exact && host == &suffix[1..]))
                    && port_ok(limit)
            }
            _ => false,
        })
    }
}

/// One trimmed, lowercased entry; `None` for an empty or malformed one.
fn parse_entry(entry: &str) -> Option<Entry> {
    if entry.is_empty() {
        return None;
    }
    if entry == "*" {
        return Some(Entry::All);
    }
    if let Some((network, bits)) = entry.split_once('/') {
        if let (Ok(network), Ok(bits)) = (network.parse::<IpAddr>(), bits.parse::<u8>()) {
            let max = if network.is_ipv4() { 32 } else { 128 };
            if bits <= max {
                return Some(Entry::Cidr(network, bits));
            }
        }
    }
    let (host, port) = match split_host_port(entry) {
        Some(("", _)) => return None,
        Some((host, port)) => (host, Some(port.to_string())),
        None => (entry, None),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Entry::Ip(ip, port));
    }
    // `*.example.com` is `.example.com`.
    let host = host
        .strip_prefix('*')
        .filter(|rest| rest.starts_with('.'))
        .unwrap_or(host);
    if host.is_empty() || host == "." {
        return None;
    }
    let exact = !host.starts_with('.');
    let suffix = if exact {
        format!(".{host}")
    } else {
        host.to_string()
    };
    Some(Entry::Domain {
        suffix,
        exact,
        port,
    })
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port` (brackets dropped); `None`
/// without a port, or for a bare IPv6 address (more than one colon, no brackets).
fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return after.strip_prefix(':').map(|port| (host, port));
    }
    let (host, port) = text.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

/// Equal addresses, an IPv4 address also equal to its IPv4-mapped IPv6 form (as Go).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Whether `ip` is inside `network/bits` (both of the same family).
fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    match (ip.to_canonical(), network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(list: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(Some(list)).matches(host, port)
    }

    #[test]
    fn domains_match_themselves_and_their_subdomains_unless_dotted() {
        assert!(direct("example.com", "example.com", 443));
        assert!(direct("example.com", "api.example.com", 443));
        assert!(direct("Example.COM ", "API.example.com", 443));
        assert!(!direct("example.com", "badexample.com", 443));
        assert!(!direct(".example.com", "example.com", 443));
        assert!(direct(".example.com", "a.b.example.com", 443));
        assert!(!direct("*.example.com", "example.com", 443));
        assert!(direct("*.example.com", "api.example.com", 443));
        assert!(!direct("example.com", "example.org", 443));
    }

    #[test]
    fn ports_limit_an_entry_when_given() {
        assert!(direct("example.com:8443", "api.example.com", 8443));
        assert!(!direct("example.com:8443", "api.example.com", 443));
        assert!(direct("10.1.2.3:8443", "10.1.2.3", 8443));
        assert!(!direct("10.1.2.3:8443", "10.1.2.3", 443));
        assert!(direct("[fd00::1]:8443", "[fd00::1]", 8443));
        assert!(!direct("[fd00::1]:8443", "fd00::1", 443));
    }

    #[test]
    fn addresses_and_ranges_match_addresses_only() {
        assert!(direct("10.1.2.3", "10.1.2.3", 443));
        assert!(!direct("10.1.2.3", "10.1.2.4", 443));
        assert!(direct("10.0.0.0/8", "10.200.1.1", 443));
        assert!(!direct("10.0.0.0/8", "11.0.0.1", 443));
        assert!(direct("fd00::/8", "[fd12::1]", 443));
        assert!(direct("fd00::1", "fd00::1", 443));
        assert!(direct("0.0.0.0/0", "192.0.2.1", 443));
        // Nothing is resolved: a name never matches an address entry, nor the reverse.
        assert!(!direct("10.0.0.0/8", "ten.example", 443));
        assert!(!direct("example.com", "10.1.2.3", 443));
    }

    #[test]
    fn star_lists_and_malformed_entries() {
        assert!(direct("*", "anything.example", 1));
        assert!(direct("*", "10.9.9.9", 1));
        assert!(direct(" foo.test , , example.com", "x.example.com", 443));
        assert!(!direct("", "example.com", 443));
        assert!(!direct(":80, ., *.", "example.com", 80));
        assert!(!NoProxy::parse(None).matches("example.com", 443));
    }
}
