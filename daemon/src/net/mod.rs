//! Network mechanisms: links, addresses and routes, made with rtnetlink
//! from Rust (no `ip` process anywhere).
//!
//! - [`link`]: the message builders and [`Netlink`], a synchronous
//!   rtnetlink client bound to one network namespace (no async runtime:
//!   the per-container monitor uses it).
//! - [`Links`]: what the container plumbing asks of the kernel, so that
//!   the plumbing is driven by a recording double in unit tests and by
//!   [`Netlink`] for real.

pub mod default_network;
pub mod dnsmasq;
pub mod firewall;
pub mod guest;
pub mod link;
pub mod port_filter;
pub mod ports;
pub mod virtual_network;

use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use serde::{Deserialize, Serialize};

pub use link::{LinkError, Netlink};

/// macvlan modes (`<interface type='direct'>`'s `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MacvlanMode {
    Private,
    Vepa,
    Bridge,
    Passthrough,
}

impl MacvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthrough => "passthrough",
        }
    }
}

/// A network namespace a link is created in or moved to.
#[derive(Debug, Clone, Copy)]
pub enum Netns<'a> {
    /// An open namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
    Fd(BorrowedFd<'a>),
    /// The namespace of a process, by its pid in the caller's PID namespace.
    Pid(u32),
}

/// An address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    pub address: IpAddr,
    pub prefix: u8,
    /// The other end of a point-to-point link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
}

/// A route through an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRoute {
    pub destination: IpAddr,
    pub prefix: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

impl std::fmt::Display for IpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.destination, self.prefix)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        Ok(())
    }
}

/// A link found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLink {
    pub index: u32,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `dummy`…); `None` for a device
    /// without one (a physical NIC).
    pub kind: Option<String>,
}

/// A veth pair: one end here, the peer (with its name and MAC) in `netns`.
#[derive(Debug, Clone, Copy)]
pub struct Veth<'a> {
    pub name: &'a str,
    /// Enslave this end to the bridge with this index.
    pub master: Option<u32>,
    /// Bring this end up.
    pub up: bool,
    /// The device group of this end (`IFLA_GROUP`), set as it is made,
    /// before it joins `master`: a virtual network's filter drops what
    /// its ports' group sends until it knows the port.
    pub group: Option<u32>,
    /// The peer's name. It cannot be brought up as it is made (the kernel
    /// refuses it with `ENOTCONN`: the pair is not linked yet).
    pub peer_name: &'a str,
    pub peer_mac: Option<[u8; 6]>,
    pub peer_netns: Option<Netns<'a>>,
}

/// A macvlan on the device `lower` (an index here), made in `netns`.
#[derive(Debug, Clone, Copy)]
pub struct Macvlan<'a> {
    pub name: &'a str,
    pub lower: u32,
    pub mode: MacvlanMode,
    pub mac: Option<[u8; 6]>,
    pub netns: Option<Netns<'a>>,
    /// Bring it up as it is made.
    pub up: bool,
}

/// A bridge, as a virtual network's `<bridge>` and `<mac>` ask.
#[derive(Debug, Clone, Copy)]
pub struct BridgeLink<'a> {
    pub name: &'a str,
    pub mac: Option<[u8; 6]>,
    pub stp: bool,
    /// Forward delay in seconds.
    pub forward_delay: u32,
    pub mtu: Option<u32>,
}

/// A route of the main table, as a dump reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRoute {
    pub destination: IpAddr,
    pub prefix: u8,
    /// The index of the link it goes through, when it names one.
    pub oif: Option<u32>,
}

/// Changes to one link; `None` leaves a property alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkChange<'a> {
    pub name: Option<&'a str>,
    pub mac: Option<[u8; 6]>,
    /// The index of a bridge to enslave it to.
    pub master: Option<u32>,
    pub up: Option<bool>,
    /// Move it to another network namespace.
    pub netns: Option<Netns<'a>>,
}

/// The link operations the container plumbing uses, each in the network
/// namespace the implementation is bound to.
pub trait Links {
    /// The link named `name`, or `None`.
    fn find(&self, name: &str) -> Result<Option<FoundLink>, LinkError>;
    /// Returns the index of the end made here when the kernel says it
    /// (it echoes the new link since Linux 6.3), else `None`.
    fn create_veth(&self, veth: &Veth<'_>) -> Result<Option<u32>, LinkError>;
    fn create_macvlan(&self, macvlan: &Macvlan<'_>) -> Result<(), LinkError>;
    fn change(&self, index: u32, change: &LinkChange<'_>) -> Result<(), LinkError>;
    fn add_address(&self, index: u32, address: &IpAddress) -> Result<(), LinkError>;
    /// A route through the link `index`.
    fn add_route(&self, index: u32, route: &IpRoute) -> Result<(), LinkError>;
    fn delete(&self, index: u32) -> Result<(), LinkError>;
}

/// What a virtual network asks of the host beyond [`Links`].
pub trait HostLinks: Links {
    /// Makes a bridge, down; returns its index.
    fn create_bridge(&self, bridge: &BridgeLink<'_>) -> Result<u32, LinkError>;
    /// The unicast routes of the main table of one family.
    fn routes(&self, ipv6: bool) -> Result<Vec<HostRoute>, LinkError>;
}
