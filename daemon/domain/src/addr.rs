//! IP address arithmetic shared by the domain and network documents:
//! families, prefix lengths, netmasks and subnets.
//!
//! Both families are handled as 128-bit numbers; an IPv4 address is its 32
//! bits in the low end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `ipv4` or `ipv6`, as the `family` attributes write it.
pub fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// The longest prefix of the address's family: 32 or 128.
pub fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `like`'s family whose number is `n` (truncated to the
/// family's width).
fn from_bits(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((n & u128::from(u32::MAX)) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The host part of `ip`'s family for a prefix of `prefix` bits: the bits a
/// network address has at zero.
fn host_mask(ip: IpAddr, prefix: u8) -> u128 {
    let width = u32::from(max_prefix(ip));
    let host_bits = width.saturating_sub(u32::from(prefix));
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// `ip` with its host bits (those after `prefix`) cleared.
/// The prefix libvirt gives an address written without one: 0 for the
/// unspecified address (a default route), the class of an IPv4 address
/// (A /8, B /16, C /24, else /32), /64 for IPv6.
pub fn natural_prefix(ip: IpAddr) -> u8 {
    if ip.is_unspecified() {
        return 0;
    }
    match ip {
        IpAddr::V4(v4) => match v4.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            192..=223 => 24,
            _ => 32,
        },
        IpAddr::V6(_) => 64,
    }
}

pub fn network_address(ip: IpAddr, prefix: u8) -> IpAddr {
    from_bits(ip, bits(ip) & !host_mask(ip, prefix))
}

/// Whether `ip` has no bits set after the first `prefix`, as the address
/// of a route must.
pub fn is_network_address(ip: IpAddr, prefix: u8) -> bool {
    bits(ip) & host_mask(ip, prefix) == 0
}

/// The prefix length of a contiguous IPv4 netmask (`255.255.255.0` is 24);
/// `None` when the ones do not all come first.
pub fn netmask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let n = u32::from(mask);
    let ones = n.leading_ones();
    (n.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// An address with the length of its prefix: the interface address of a
/// network's bridge, and with it the subnet it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub address: IpAddr,
    /// At most [`max_prefix`] of the address.
    pub prefix: u8,
}

impl Subnet {
    /// The subnet's own address (all host bits zero).
    pub fn network(&self) -> IpAddr {
        network_address(self.address, self.prefix)
    }

    /// The IPv4 broadcast address, for prefixes up to /30 (a /31 or /32 has
    /// none, and IPv6 has none at all).
    pub fn broadcast(&self) -> Option<IpAddr> {
        (self.address.is_ipv4() && self.prefix <= 30).then(|| {
            from_bits(
                self.address,
                bits(self.address) | host_mask(self.address, self.prefix),
            )
        })
    }

    /// Whether `ip` is in this subnet (same family, same network part).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.address.is_ipv4() && network_address(ip, self.prefix) == self.network()
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        self.address.is_ipv4() == other.address.is_ipv4()
            && network_address(self.address, shorter) == network_address(other.address, shorter)
    }

    /// Whether `ip` is the subnet's network or broadcast address, which no
    /// host may use. Subnets of /31 and /32 (/127, /128) have neither.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        let point_to_point = self.prefix + 1 >= max_prefix(self.address);
        !point_to_point && (ip == self.network() || Some(ip) == self.broadcast())
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The number of `ip` counted from zero, for ordering addresses of one
/// family.
pub fn ordinal(ip: IpAddr) -> u128 {
    bits(ip)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str, prefix: u8) -> Subnet {
        Subnet {
            address: ip(s),
            prefix,
        }
    }

    #[test]
    fn network_addresses_and_host_bits() {
        assert_eq!(network_address(ip("10.1.2.3"), 8), ip("10.0.0.0"));
        assert_eq!(network_address(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(network_address(ip("10.1.2.3"), 32), ip("10.1.2.3"));
        assert_eq!(network_address(ip("fd00::1:2"), 64), ip("fd00::"));
        assert_eq!(network_address(ip("fd00::1"), 0), ip("::"));
        assert!(is_network_address(ip("192.168.124.0"), 24));
        assert!(!is_network_address(ip("192.168.124.1"), 24));
        assert!(is_network_address(ip("0.0.0.0"), 0));
        assert!(!is_network_address(ip("10.0.0.0"), 0));
        assert!(is_network_address(ip("fd00::"), 8));
        assert!(is_network_address(ip("fd00::1"), 128));
    }

    #[test]
    fn netmasks_must_be_contiguous() {
        let p = |s: &str| netmask_prefix(s.parse().unwrap());
        assert_eq!(p("255.255.255.0"), Some(24));
        assert_eq!(p("255.255.255.255"), Some(32));
        assert_eq!(p("0.0.0.0"), Some(0));
        assert_eq!(p("255.255.254.0"), Some(23));
        assert_eq!(p("255.0.255.0"), None);
        assert_eq!(p("0.255.255.255"), None);
    }

    #[test]
    fn subnets() {
        let n = net("10.213.0.1", 24);
        assert_eq!(n.network(), ip("10.213.0.0"));
        assert_eq!(n.broadcast(), Some(ip("10.213.0.255")));
        assert_eq!(n.to_string(), "10.213.0.0/24");
        assert!(n.contains(ip("10.213.0.200")));
        assert!(!n.contains(ip("10.213.1.1")));
        assert!(!n.contains(ip("fd00::1")));
        assert!(n.is_reserved(ip("10.213.0.0")));
        assert!(n.is_reserved(ip("10.213.0.255")));
        assert!(!n.is_reserved(ip("10.213.0.1")));
        assert!(n.overlaps(&net("10.0.0.1", 8)));
        assert!(!n.overlaps(&net("10.214.0.1", 24)));
        assert!(!n.overlaps(&net("fd00::1", 8)));
        assert_eq!(net("10.0.0.1", 31).broadcast(), None);
        assert!(!net("10.0.0.0", 31).is_reserved(ip("10.0.0.0")));
        let v6 = net("fd00:213::1", 64);
        assert_eq!(v6.broadcast(), None);
        assert!(v6.contains(ip("fd00:213::ffff")));
        assert!(v6.is_reserved(ip("fd00:213::")));
        assert_eq!(ordinal(ip("0.0.1.2")), 258);
    }
}
