//! Network mechanisms: links, addresses, routes, bridge VLANs and traffic
//! shaping, made with rtnetlink from Rust (no `ip` or `tc` process
//! anywhere).
//!
//! - [`link`]: the message builders and [`Netlink`], a synchronous
//!   rtnetlink client bound to one network namespace (no async runtime:
//!   the per-container monitor uses it).
//! - [`tc`]: the traffic control messages (a token bucket qdisc, an
//!   ingress qdisc with a redirecting filter), whose options
//!   netlink-packet-route does not all have.
//! - [`Links`]: what the container plumbing asks of the kernel, so that
//!   the plumbing is driven by a recording double in unit tests and by
//!   [`Netlink`] for real.

pub mod default_network;
pub mod dnsmasq;
pub mod firewall;
pub mod guest;
pub mod link;
pub mod nft;
pub mod port_filter;
pub mod ports;
pub mod shaping;
pub mod tc;
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundLink {
    pub index: u32,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `dummy`…); `None` for a device
    /// without one (a physical NIC).
    pub kind: Option<String>,
    /// `IFLA_IFALIAS`, the free text `ip link set NAME alias TEXT` sets.
    pub alias: Option<String>,
    /// A bridge's VLAN settings.
    pub bridge: Option<BridgeSettings>,
}

/// What a bridge does with VLANs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeSettings {
    /// `vlan_filtering`: ports only pass the VLANs they are members of.
    pub vlan_filtering: bool,
    /// The VLAN a new port joins as its PVID, untagged (0: none).
    pub default_pvid: u16,
}

/// A bridge port's membership in one VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeVlan {
    pub vid: u16,
    /// Untagged frames arriving on the port belong to this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port without their tag.
    pub untagged: bool,
}

/// A token bucket (the `tbf` qdisc) on a link's egress, in bytes as the
/// kernel counts them (whole Ethernet frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Average rate, bytes per second.
    pub rate: u64,
    /// The bucket: how much may leave at once above the average.
    pub burst: u32,
    /// Highest rate, bytes per second, above `rate`; with its own bucket
    /// of `peak_burst` bytes (one frame: the rate holds packet by packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    pub peak_burst: u32,
    /// Bytes that may wait in the queue before packets are dropped.
    pub queue: u32,
}

/// An ifb device: what is redirected to it passes its egress qdisc and
/// goes on where it was going.
#[derive(Debug, Clone, Copy)]
pub struct Ifb<'a> {
    pub name: &'a str,
    /// `IFLA_IFALIAS`: whose it is, for whoever finds it.
    pub alias: &'a str,
}

/// A veth pair: one end here, the peer (with its name and MAC) in `netns`.
#[derive(Debug, Clone, Copy)]
pub struct Veth<'a> {
    pub name: &'a str,
    /// The MTU of both ends.
    pub mtu: Option<u32>,
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

/// The indexes of a veth pair just made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethIndexes {
    /// The end made in the caller's namespace.
    pub index: u32,
    /// The peer's, in its own namespace; `None` when the kernel's echo
    /// did not say it.
    pub peer: Option<u32>,
}

/// A macvlan on the device `lower` (an index here), made in `netns`.
#[derive(Debug, Clone, Copy)]
pub struct Macvlan<'a> {
    pub name: &'a str,
    pub lower: u32,
    /// At most the lower device's.
    pub mtu: Option<u32>,
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
    /// Its device group (a virtual network's port filter knows its ports
    /// by it).
    pub group: Option<u32>,
    pub up: Option<bool>,
    /// Move it to another network namespace.
    pub netns: Option<Netns<'a>>,
    /// `Some(false)`: no IPv6 link-local address is generated (nor the
    /// duplicate address detection, router solicitations and multicast
    /// listener reports that come with it) once it has a carrier; set
    /// before it has one.
    pub ipv6_link_local: Option<bool>,
}

/// The link operations the container plumbing uses, each in the network
/// namespace the implementation is bound to.
pub trait Links {
    /// The link named `name`, or `None`.
    fn find(&self, name: &str) -> Result<Option<FoundLink>, LinkError>;
    /// The index of the link named `name`, or `None`: what
    /// [`Links::find`] says without the rest, at a fraction of its cost.
    fn index_of(&self, name: &str) -> Result<Option<u32>, LinkError>;
    /// Returns the indexes of both ends when the kernel says them (it
    /// echoes the new link since Linux 6.3), else `None`.
    fn create_veth(&self, veth: &Veth<'_>) -> Result<Option<VethIndexes>, LinkError>;
    fn create_macvlan(&self, macvlan: &Macvlan<'_>) -> Result<(), LinkError>;
    /// An ifb device, up, with its alias; returns its index.
    fn create_ifb(&self, ifb: &Ifb<'_>) -> Result<u32, LinkError>;
    fn change(&self, index: u32, change: &LinkChange<'_>) -> Result<(), LinkError>;
    fn add_address(&self, index: u32, address: &IpAddress) -> Result<(), LinkError>;
    /// A route through the link `index`.
    fn add_route(&self, index: u32, route: &IpRoute) -> Result<(), LinkError>;
    fn delete(&self, index: u32) -> Result<(), LinkError>;
    /// Makes the bridge port `port` a member of `vlans` (or changes its
    /// membership's flags).
    fn add_bridge_vlans(&self, port: u32, vlans: &[BridgeVlan]) -> Result<(), LinkError>;
    /// Ends the bridge port's membership in VLAN `vid`.
    fn delete_bridge_vlan(&self, port: u32, vid: u16) -> Result<(), LinkError>;
    /// Shapes the egress of link `index` to `limit` (its root qdisc).
    fn limit_egress(&self, index: u32, limit: &RateLimit) -> Result<(), LinkError>;
    /// Replaces the shaping of link `index`'s egress with `limit`, or
    /// ends it (`None`: the link's default root qdisc comes back).
    fn reshape_egress(&self, index: u32, limit: Option<&RateLimit>) -> Result<(), LinkError>;
    /// Ends what [`Links::redirect_ingress`] made on link `index`.
    fn end_redirect(&self, index: u32) -> Result<(), LinkError>;
    /// Sends everything arriving on link `index` through the egress of
    /// link `to` first (an ingress qdisc and a match-all filter whose
    /// action redirects to `to`, an ifb device).
    fn redirect_ingress(&self, index: u32, to: u32) -> Result<(), LinkError>;
}

/// What a virtual network asks of the host beyond [`Links`].
pub trait HostLinks: Links {
    /// Makes a bridge, down; returns its index.
    fn create_bridge(&self, bridge: &BridgeLink<'_>) -> Result<u32, LinkError>;
    /// The unicast routes of the main table of one family.
    fn routes(&self, ipv6: bool) -> Result<Vec<HostRoute>, LinkError>;
}
