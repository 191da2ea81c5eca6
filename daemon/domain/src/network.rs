//! The typed network definition: libvirt's `<network>` document, the
//! virtual networks an `<interface type='network'>` joins.
//!
//! A network is a host bridge with addresses of its own, optionally a DHCP
//! and DNS service on them and a way out (`<forward>`): NAT, routing, or
//! neither. What lxvirt accepts is a subset of libvirt's format, checked
//! a bit more strictly (docs/network-xml.md lists the differences).
//!
//! As for domains, optional elements are `Option`s and defaults are filled
//! in at parse time, so that a definition always formats the same way.

use std::net::{IpAddr, Ipv4Addr};

use uuid::Uuid;

use super::addr::Subnet;
use super::values::{MacAddr, NetworkName, keyword_enum};
use super::xml;
use super::{DomainError, format, parse};

/// Longest `<bridge delay=>`, seconds: the kernel's limit for a bridge
/// running STP.
pub const MAX_BRIDGE_DELAY: u32 = 30;

/// A complete network definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    pub name: NetworkName,
    /// Generated (version 4) when the document has none.
    pub uuid: Uuid,
    /// `<forward>`; `None`: an isolated network, whose guests reach each
    /// other and the host only.
    pub forward: Option<Forward>,
    /// `<bridge>`; written out with its defaults even when absent.
    pub bridge: Bridge,
    /// `<mac address=>`: the bridge's MAC address, unicast.
    pub mac: Option<MacAddr>,
    /// `<mtu size=>`, [`crate::MIN_MTU`]..=65535.
    pub mtu: Option<u16>,
    /// `<domain>`: the DNS domain of the network's hosts.
    pub domain: Option<NetworkDomain>,
    /// `<dns>`; written out only when it differs from the default.
    pub dns: Dns,
    /// `<ip>`, in document order: addresses of the bridge, subnets that do
    /// not overlap, at most one IPv4 and one IPv6 with DHCP.
    pub ips: Vec<NetworkIp>,
}

impl NetworkDef {
    /// The name as a string.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// How the network reaches the outside.
    pub fn forward_mode(&self) -> Option<ForwardMode> {
        self.forward.as_ref().map(|f| f.mode)
    }

    /// Parses and validates a network document.
    pub fn from_xml(text: &str) -> Result<NetworkDef, DomainError> {
        let root = xml::parse_str(text)?;
        parse::parse_network(&root)
    }

    /// Like [`NetworkDef::from_xml`], from bytes that must be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkDef, DomainError> {
        let root = xml::parse_bytes(bytes)?;
        parse::parse_network(&root)
    }

    /// Converts a parsed tree.
    pub fn from_element(root: &xml::Element) -> Result<NetworkDef, DomainError> {
        parse::parse_network(root)
    }

    /// The definition as canonical XML.
    pub fn to_xml(&self) -> String {
        format::format_network(self)
    }
}

keyword_enum! {
    /// `<forward mode=>`: how traffic leaves the network. libvirt's modes
    /// that hand guests a host device (`bridge`, `private`, `vepa`,
    /// `passthrough`, `hostdev`) are not network modes in lxvirt: an
    /// interface of type `bridge` or `direct` does that.
    pub enum ForwardMode {
        /// Masquerading behind the host's address (libvirt's default mode).
        Nat = "nat",
        /// Routing without address translation.
        Route = "route",
        /// Routing with no firewall rules added at all.
        Open = "open",
    }
}

/// `<forward>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub mode: ForwardMode,
    /// `dev=` (or the single `<interface dev=>`): the host device traffic
    /// leaves by; `None`: any. Never with [`ForwardMode::Open`].
    pub dev: Option<String>,
    /// `<nat>`; empty unless the mode is [`ForwardMode::Nat`].
    pub nat: Nat,
}

/// `<nat>`: what masquerading may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nat {
    /// `<address start= end=>`: the host addresses to masquerade as.
    pub addresses: Option<Ipv4Range>,
    /// `<port start= end=>`: the source ports to use.
    pub ports: Option<PortRange>,
}

impl Nat {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_none() && self.ports.is_none()
    }
}

/// An inclusive range of IPv4 addresses, `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// An inclusive range of ports, `1 <= start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// `<bridge name= stp= delay=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// A valid interface name; `None`: the daemon picks one when the
    /// network is defined (`lxvirtbrN`).
    pub name: Option<String>,
    /// Spanning tree; on by default.
    pub stp: bool,
    /// Forward delay, seconds, 0..=[`MAX_BRIDGE_DELAY`]; 0 by default.
    pub delay: u32,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge {
            name: None,
            stp: true,
            delay: 0,
        }
    }
}

/// `<domain name= localOnly=>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDomain {
    /// A DNS name such as `lxvirt.example.org`.
    pub name: String,
    /// Whether names under it are answered locally only, never forwarded.
    pub local_only: bool,
}

/// `<dns>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// `enable='no'` turns the network's DNS server off; it then has no
    /// forwarders or hosts.
    pub enable: bool,
    pub forwarders: Vec<DnsForwarder>,
    /// Unique by address.
    pub hosts: Vec<DnsHost>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            enable: true,
            forwarders: Vec::new(),
            hosts: Vec::new(),
        }
    }
}

impl Dns {
    /// Whether this is the default (enabled, nothing configured).
    pub fn is_default(&self) -> bool {
        *self == Dns::default()
    }
}

/// `<forwarder addr= domain=>`: at least one of the two. With both,
/// queries for `domain` go to `addr`; with `addr` alone, all queries do;
/// with `domain` alone, names under it are answered locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsForwarder {
    pub addr: Option<IpAddr>,
    pub domain: Option<String>,
}

/// `<host ip=>` with its `<hostname>`s (at least one, unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

/// `<ip address= prefix=|netmask= family=>`: an address of the bridge and
/// the subnet it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkIp {
    /// Neither the subnet's network nor its broadcast address.
    pub address: IpAddr,
    /// 1..=32 or 1..=128 by family (an IPv4 `netmask` is read as its
    /// prefix).
    pub prefix: u8,
    /// `<dhcp>`; `None` also for an empty one.
    pub dhcp: Option<Dhcp>,
}

impl NetworkIp {
    /// The bridge's address with its prefix.
    pub fn subnet(&self) -> Subnet {
        Subnet {
            address: self.address,
            prefix: self.prefix,
        }
    }
}

/// `<dhcp>`: ranges to lease from and fixed leases, all inside the
/// subnet, none on its network, broadcast or bridge address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dhcp {
    /// Disjoint.
    pub ranges: Vec<DhcpRange>,
    /// Unique by MAC address, name and address.
    pub hosts: Vec<DhcpHost>,
}

/// `<range start= end=>`, `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

/// `<host mac= name= ip=>`: a fixed lease. IPv4 hosts have a MAC address
/// or a name (or both); IPv6 hosts have a name and no MAC address (DHCPv6
/// does not identify clients by MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: Option<MacAddr>,
    /// A host name (DNS labels).
    pub name: Option<String>,
    pub ip: IpAddr,
}
