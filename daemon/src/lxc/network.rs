//! The container's network devices, made by the monitor between init's
//! clone and its release, and undone when the container ends.
//!
//! The monitor does it all itself, single-threaded and with rtnetlink
//! (no `ip`, no `tc`): host root has `CAP_NET_ADMIN` over every network
//! namespace, the container's (owned by its user namespace) included, and
//! a netlink socket opened inside that namespace (the monitor joins it
//! for the `socket` call only) configures it from outside.
//!
//! ```text
//! host namespace (monitor)                  container namespace
//! <hostdev type='net'> NAME ── moved in ───► NAME (down, as the move leaves
//!                                             it; up with addresses, routes)
//! bridge/ethernet: veth HOST_END ◄─ pair ──► GUEST_NAME (made here: MAC, MTU)
//!   MTU; up unless <link state='down'>       up unless down; addresses, routes
//!   'bridge': on the bridge, in its VLANs
//!   'ethernet': <source> addresses, routes
//!   <bandwidth>: tbf on its egress (inbound);
//!   its ingress redirected to an ifb
//!   lxvqXXXXXXXX with tbf (outbound)
//! direct: on host device DEV ─ macvlan ────► GUEST_NAME (made here: MAC, MTU,
//!                                             up unless down); addresses, routes
//! ```
//!
//! The container ends of veths and macvlans are created in the
//! container's namespace directly under their final names, so nothing
//! needs renaming and no temporary name can clash on the host.
//!
//! When the container ends (or its start fails half way), [`unplumb`]
//! moves every `<hostdev type='net'>` back to the host under its host
//! name (a virtual device would otherwise die with the namespace; the
//! kernel flushes its addresses and routes as it leaves), deletes the
//! host ends of the veths (their peers, addresses, routes and qdiscs go
//! with them) and then the ifb devices, before the monitor lets go of the
//! namespace. If the monitor itself is killed, the namespace dies with the
//! container's last process and takes the veth pairs and macvlans along;
//! a virtual `<hostdev>` device dies with it (a physical one returns to
//! the host by itself); an ifb device stays on the host, and the
//! interface's next start replaces it (its name is the interface's own,
//! its alias names the domain).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::spec::{ContainerSpec, InterfaceKind, InterfaceSpec};
pub use crate::net::shaping::Direction;
use crate::net::shaping::{self, BandwidthSpec, ShapeError, ShapeStep};
use crate::net::{
    BridgeSettings, BridgeVlan, FoundLink, IpAddress, IpRoute, LinkChange, LinkError, Links,
    Macvlan, MacvlanMode, Netlink, Netns, Veth, VethIndexes,
};
use crate::sys::Errno;
use crate::sys::linux;

/// Which device a [`NetworkError`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "device")]
pub enum Device {
    /// The container's network namespace as a whole.
    Namespace,
    /// An `<interface>`, by its position (from 0), type and source.
    Interface {
        index: usize,
        #[serde(rename = "type")]
        type_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// A `<hostdev type='net'>`.
    Hostdev { name: String },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Namespace => f.write_str("the container's network namespace"),
            Device::Interface {
                index,
                type_name,
                source,
            } => {
                write!(f, "<interface type='{type_name}'> #{}", index + 1)?;
                match source {
                    Some(source) => write!(f, " ({source})"),
                    None => Ok(()),
                }
            }
            Device::Hostdev { name } => write!(f, "<hostdev type='net'> '{name}'"),
        }
    }
}

impl Device {
    fn of(interface: &InterfaceSpec) -> Device {
        let source = match &interface.kind {
            InterfaceKind::Bridge { bridge, .. } => Some(format!("bridge '{bridge}'")),
            InterfaceKind::Ethernet { host_name, .. } => Some(format!("host end '{host_name}'")),
            InterfaceKind::Direct { dev, mode } => {
                Some(format!("device '{dev}', mode '{}'", mode.as_str()))
            }
        };
        Device::Interface {
            index: interface.index,
            type_name: interface.kind.type_str().to_owned(),
            source,
        }
    }
}

/// What the monitor was doing when a [`NetworkError`] happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum NetStep {
    OpenNamespace,
    FindBridge {
        bridge: String,
    },
    NotABridge {
        bridge: String,
        kind: Option<String>,
    },
    FindDevice {
        dev: String,
    },
    CreateVeth {
        host_name: String,
    },
    CreateMacvlan {
        dev: String,
        mode: MacvlanMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
    },
    FindInside {
        name: String,
    },
    SetUp {
        name: String,
    },
    HostUp {
        host_name: String,
    },
    /// Keeping a link without IPv6 link-local address.
    QuietIpv6 {
        name: String,
        side: Side,
    },
    AddAddress {
        name: String,
        address: IpAddress,
        #[serde(default)]
        side: Side,
    },
    AddRoute {
        name: String,
        route: IpRoute,
        #[serde(default)]
        side: Side,
    },
    VlanFilteringOff {
        bridge: String,
    },
    BridgeVlans {
        bridge: String,
        host_name: String,
    },
    Shape {
        name: String,
        direction: Direction,
    },
    CreateIfb {
        name: String,
    },
    IfbNameTaken {
        name: String,
    },
    Redirect {
        host_name: String,
        ifb: String,
    },
    FindHostdev {
        name: String,
    },
    MoveIn {
        name: String,
    },
    MoveBack {
        name: String,
    },
    DeleteHostEnd {
        host_name: String,
    },
    DeleteIfb {
        name: String,
    },
    /// Finding a running interface's host end, to change it.
    FindHostEnd {
        host_name: String,
    },
    /// Ending one direction's shaping on a running interface.
    EndShaping {
        name: String,
        direction: Direction,
    },
}

/// Why a container's network could not be set up (or undone). Crosses
/// from the monitor to the daemon as JSON; the daemon names the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{device}: {}{}", self.problem(), self.kernel_says())]
pub struct NetworkError {
    pub device: Device,
    #[serde(flatten)]
    pub step: Box<NetStep>,
    /// The errno of the failed request; `None` for a refusal of the
    /// monitor's own (a device that does not exist, is not a bridge).
    #[serde(default, with = "errno_option")]
    #[source]
    pub errno: Option<Errno>,
    /// The kernel's extended error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

mod errno_option {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::sys::Errno;

    pub fn serialize<S: Serializer>(errno: &Option<Errno>, s: S) -> Result<S::Ok, S::Error> {
        match errno {
            Some(errno) => s.serialize_some(&(*errno as i32)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Errno>, D::Error> {
        Ok(Option::<i32>::deserialize(d)?.map(Errno::from_raw))
    }
}

impl NetworkError {
    fn new(device: &Device, step: NetStep, error: Option<LinkError>) -> NetworkError {
        let (errno, detail) = match error {
            Some(e) => (Some(e.errno), e.message),
            None => (None, None),
        };
        NetworkError {
            device: device.clone(),
            step: Box::new(step),
            errno,
            detail,
        }
    }

    /// A shaping step of `device` that failed.
    fn shaping(device: &Device, error: ShapeError) -> NetworkError {
        NetworkError::new(device, NetStep::from(error.step), error.kernel)
    }

    fn kernel_says(&self) -> String {
        match &self.detail {
            Some(detail) => format!(" (the kernel says: {detail})"),
            None => String::new(),
        }
    }

    /// What went wrong, and the fix where there is one.
    fn problem(&self) -> String {
        let errno = self.errno;
        match &*self.step {
            NetStep::OpenNamespace => "cannot open the container's network namespace".into(),
            NetStep::FindBridge { bridge } if errno.is_none() => {
                format!("bridge '{bridge}' does not exist; create it or change <source bridge>")
            }
            NetStep::FindBridge { bridge } => format!("cannot look up bridge '{bridge}'"),
            NetStep::NotABridge { bridge, kind } => format!(
                "'{bridge}' is not a bridge (it is {}); name a Linux bridge in <source bridge>",
                match kind {
                    Some(kind) => format!("a {kind} device"),
                    None => "a physical device".into(),
                }
            ),
            NetStep::FindDevice { dev } if errno.is_none() => {
                format!("host device '{dev}' does not exist; change <source dev>")
            }
            NetStep::FindDevice { dev } => format!("cannot look up host device '{dev}'"),
            NetStep::CreateVeth { host_name } if errno == Some(Errno::EEXIST) => format!(
                "host interface '{host_name}' exists already; change <target dev> or remove that interface"
            ),
            NetStep::CreateVeth { host_name } => {
                format!("cannot create the veth pair with host end '{host_name}'")
            }
            NetStep::CreateMacvlan {
                dev,
                mtu: Some(mtu),
                ..
            } if errno == Some(Errno::EINVAL) => format!(
                "cannot create a macvlan with MTU {mtu} on host device '{dev}': a macvlan's MTU may not exceed its device's; lower <mtu size> or raise the MTU of '{dev}'"
            ),
            NetStep::CreateMacvlan { dev, mode, .. } => format!(
                "cannot create a macvlan in mode '{}' on host device '{dev}'{}",
                mode.as_str(),
                if *mode == MacvlanMode::Passthrough {
                    "; passthrough needs the device to itself (no other macvlan on it)"
                } else {
                    ""
                }
            ),
            NetStep::FindInside { name } => {
                format!("'{name}' is missing inside the container after its creation")
            }
            NetStep::SetUp { name } => format!("cannot bring '{name}' up inside the container"),
            NetStep::HostUp { host_name } => format!("cannot bring the host end '{host_name}' up"),
            NetStep::QuietIpv6 { name, side } => format!(
                "cannot turn IPv6 address generation off on {} '{name}'",
                match side {
                    Side::Inside => "the container's",
                    Side::Host => "the host end",
                }
            ),
            NetStep::AddAddress {
                name,
                address,
                side,
            } if errno == Some(Errno::EEXIST) => format!(
                "address {}/{} is given twice on '{name}'; remove the duplicate {}",
                address.address,
                address.prefix,
                side.ip_element()
            ),
            NetStep::AddAddress {
                name,
                address,
                side,
            } => format!(
                "cannot add address {}/{} to '{name}'; check {}",
                address.address,
                address.prefix,
                side.ip_element()
            ),
            NetStep::AddRoute { name, route, side } if errno == Some(Errno::ENETUNREACH) => {
                format!(
                    "cannot add the route {route} on '{name}': the gateway is not in a subnet of the interface; add {} in the gateway's subnet or change <route gateway>",
                    match side {
                        Side::Inside => "an <ip>",
                        Side::Host => "an <ip> under <source>",
                    }
                )
            }
            NetStep::AddRoute {
                name,
                route,
                side: Side::Inside,
            } if errno == Some(Errno::EEXIST) => format!(
                "the route {route} on '{name}' is given twice (or another <interface> has it); remove the duplicate <route>"
            ),
            NetStep::AddRoute {
                name,
                route,
                side: Side::Host,
            } if errno == Some(Errno::EEXIST) => format!(
                "the host has a route to {} already, so it cannot go through '{name}'; remove the duplicate <route> under <source>, or the host's own route",
                route.destination
            ),
            NetStep::AddRoute { name, route, side } => {
                format!(
                    "cannot add the route {route} on '{name}'; check {}",
                    side.route_element()
                )
            }
            NetStep::VlanFilteringOff { bridge } => format!(
                "bridge '{bridge}' does not filter VLANs, so <vlan> cannot be applied; turn filtering on (ip link set {bridge} type bridge vlan_filtering 1) or remove <vlan>"
            ),
            NetStep::BridgeVlans { bridge, host_name } => format!(
                "cannot make port '{host_name}' of bridge '{bridge}' a member of its VLANs; check <vlan>"
            ),
            NetStep::FindHostdev { name } if errno.is_none() => format!(
                "host interface '{name}' does not exist; change <source><interface> of the <hostdev>"
            ),
            NetStep::FindHostdev { name } => format!("cannot look up host interface '{name}'"),
            NetStep::MoveIn { name } => format!(
                "cannot move host interface '{name}' into the container (bridges, loopback and some other devices cannot change network namespaces)"
            ),
            NetStep::MoveBack { name } if errno == Some(Errno::ENODEV) => format!(
                "'{name}' is gone from the container (deleted inside?); it cannot go back to the host"
            ),
            NetStep::MoveBack { name } if errno == Some(Errno::EEXIST) => format!(
                "the name '{name}' is taken on the host: the interface came back under the name it had inside"
            ),
            NetStep::MoveBack { name } => {
                format!("cannot move '{name}' back to the host's network namespace")
            }
            NetStep::DeleteHostEnd { host_name } => {
                format!("cannot delete the veth host end '{host_name}'")
            }
            // Shaping's own words, for a veth's host end as for a tap.
            NetStep::Shape { name, direction } => ShapeStep::Shape {
                name: name.clone(),
                direction: *direction,
            }
            .problem(errno),
            NetStep::CreateIfb { name } => {
                ShapeStep::CreateIfb { name: name.clone() }.problem(errno)
            }
            NetStep::IfbNameTaken { name } => {
                ShapeStep::IfbNameTaken { name: name.clone() }.problem(errno)
            }
            NetStep::Redirect { host_name, ifb } => ShapeStep::Redirect {
                host_name: host_name.clone(),
                ifb: ifb.clone(),
            }
            .problem(errno),
            NetStep::DeleteIfb { name } => {
                ShapeStep::DeleteIfb { name: name.clone() }.problem(errno)
            }
            NetStep::FindHostEnd { host_name } => ShapeStep::FindHostEnd {
                host_name: host_name.clone(),
            }
            .problem(errno),
            NetStep::EndShaping { name, direction } => ShapeStep::EndShaping {
                name: name.clone(),
                direction: *direction,
            }
            .problem(errno),
        }
    }
}

impl From<ShapeStep> for NetStep {
    fn from(step: ShapeStep) -> NetStep {
        match step {
            ShapeStep::Shape { name, direction } => NetStep::Shape { name, direction },
            ShapeStep::CreateIfb { name } => NetStep::CreateIfb { name },
            ShapeStep::IfbNameTaken { name } => NetStep::IfbNameTaken { name },
            ShapeStep::Redirect { host_name, ifb } => NetStep::Redirect { host_name, ifb },
            ShapeStep::DeleteIfb { name } => NetStep::DeleteIfb { name },
            ShapeStep::FindHostEnd { host_name } => NetStep::FindHostEnd { host_name },
            ShapeStep::EndShaping { name, direction } => NetStep::EndShaping { name, direction },
        }
    }
}

/// A host interface moved into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Moved {
    /// Its name on the host, which it gets back.
    name: String,
    /// Its index inside, once known.
    inside: Option<u32>,
}

/// What was made for a container, to undo when it ends.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plumbed {
    /// Host ends of veth pairs: their index on the host, name and device.
    host_ends: Vec<(u32, String, Device)>,
    /// ifb devices of outbound shaping, likewise.
    ifbs: Vec<(u32, String, Device)>,
    moved: Vec<Moved>,
}

/// Makes the container's devices: `host` works in the monitor's network
/// namespace, `inside` in the container's (`container`); `host_ns` is the
/// monitor's own, where moved devices go back. On failure, what was made
/// is undone and the first error returned.
pub fn plumb(
    spec: &ContainerSpec,
    host: &impl Links,
    inside: &impl Links,
    container: Netns<'_>,
    host_ns: Netns<'_>,
) -> Result<Plumbed, NetworkError> {
    let mut plumbed = Plumbed::default();
    match plumb_into(&mut plumbed, spec, host, inside, container) {
        Ok(()) => Ok(plumbed),
        Err(error) => {
            let _ = unplumb(plumbed, host, inside, host_ns);
            Err(error)
        }
    }
}

fn plumb_into(
    plumbed: &mut Plumbed,
    spec: &ContainerSpec,
    host: &impl Links,
    inside: &impl Links,
    container: Netns<'_>,
) -> Result<(), NetworkError> {
    for moved in &spec.host_interfaces {
        let name = &moved.name;
        let device = Device::Hostdev { name: name.clone() };
        let step = || NetStep::FindHostdev { name: name.clone() };
        let found = host
            .find(name)
            .map_err(|e| NetworkError::new(&device, step(), Some(e)))?
            .ok_or_else(|| NetworkError::new(&device, step(), None))?;
        let move_in = LinkChange {
            netns: Some(container),
            ..LinkChange::default()
        };
        host.change(found.index, &move_in).map_err(|e| {
            NetworkError::new(&device, NetStep::MoveIn { name: name.clone() }, Some(e))
        })?;
        plumbed.moved.push(Moved {
            name: name.clone(),
            inside: None,
        });
        let index = find_inside(inside, &device, name)?;
        if let Some(moved) = plumbed.moved.last_mut() {
            moved.inside = Some(index);
        }
        // The move leaves it down; its routes need it up.
        if !moved.addresses.is_empty() || !moved.routes.is_empty() {
            set_up(inside, &device, name, index)?;
            add_addresses(inside, &device, Side::Inside, name, index, &moved.addresses)?;
            add_routes(inside, &device, Side::Inside, name, index, &moved.routes)?;
        }
    }
    for interface in &spec.interfaces {
        let device = Device::of(interface);
        let guest = &interface.guest_name;
        let up = !interface.link_down;
        // The index of the device inside, when its making said it.
        let peer = match &interface.kind {
            InterfaceKind::Bridge {
                bridge,
                host_name,
                vlans,
                port_group,
                network_bridge,
            } => {
                let (master, settings) = if *network_bridge && vlans.is_empty() {
                    let index = network_bridge_index(host, &device, bridge)?;
                    (index, BridgeSettings::default())
                } else {
                    checked_bridge(host, &device, bridge)?
                };
                if !vlans.is_empty() && !settings.vlan_filtering {
                    let step = NetStep::VlanFilteringOff {
                        bridge: bridge.clone(),
                    };
                    return Err(NetworkError::new(&device, step, None));
                }
                // With VLANs the port comes up once it is in them only,
                // not in the bridge's default VLAN meanwhile.
                let end = HostEnd {
                    name: host_name,
                    master: Some(master),
                    up: up && vlans.is_empty(),
                    group: *port_group,
                };
                let made = make_veth(plumbed, host, interface, &device, end, container)?;
                let host_index = made.index;
                quiet_ipv6(host, &device, Side::Host, host_name, host_index)?;
                if !vlans.is_empty() {
                    join_vlans(
                        host, &device, bridge, host_name, host_index, vlans, settings,
                    )?;
                    if up {
                        set_host_end_up(host, &device, host_name, host_index)?;
                    }
                }
                shape(plumbed, host, interface, &device, host_name, host_index)?;
                made.peer
            }
            InterfaceKind::Ethernet {
                host_name,
                addresses,
                routes,
            } => {
                let end = HostEnd {
                    name: host_name,
                    master: None,
                    up,
                    group: None,
                };
                let made = make_veth(plumbed, host, interface, &device, end, container)?;
                let host_index = made.index;
                add_addresses(host, &device, Side::Host, host_name, host_index, addresses)?;
                add_routes(host, &device, Side::Host, host_name, host_index, routes)?;
                shape(plumbed, host, interface, &device, host_name, host_index)?;
                made.peer
            }
            InterfaceKind::Direct { dev, mode } => {
                let step = || NetStep::FindDevice { dev: dev.clone() };
                // Only its index is used: not the whole link's attributes.
                let lower = host
                    .index_of(dev)
                    .map_err(|e| NetworkError::new(&device, step(), Some(e)))?
                    .ok_or_else(|| NetworkError::new(&device, step(), None))?;
                let macvlan = Macvlan {
                    name: guest,
                    lower,
                    mtu: interface.mtu,
                    mode: *mode,
                    mac: Some(interface.mac),
                    netns: Some(container),
                    up,
                };
                host.create_macvlan(&macvlan).map_err(|e| {
                    let step = NetStep::CreateMacvlan {
                        dev: dev.clone(),
                        mode: *mode,
                        mtu: interface.mtu,
                    };
                    NetworkError::new(&device, step, Some(e))
                })?;
                None
            }
        };
        configure_inside(inside, interface, &device, peer)?;
    }
    Ok(())
}

/// The index of a virtual network's bridge: lxvirtd made it, so it is
/// one, and nothing else of it is needed.
fn network_bridge_index(
    host: &impl Links,
    device: &Device,
    bridge: &str,
) -> Result<u32, NetworkError> {
    let step = || NetStep::FindBridge {
        bridge: bridge.to_owned(),
    };
    host.index_of(bridge)
        .map_err(|e| NetworkError::new(device, step(), Some(e)))?
        .ok_or_else(|| NetworkError::new(device, step(), None))
}

/// The index and VLAN settings of the bridge `bridge`, which must be one.
fn checked_bridge(
    host: &impl Links,
    device: &Device,
    bridge: &str,
) -> Result<(u32, BridgeSettings), NetworkError> {
    let step = || NetStep::FindBridge {
        bridge: bridge.to_owned(),
    };
    let found = host
        .find(bridge)
        .map_err(|e| NetworkError::new(device, step(), Some(e)))?
        .ok_or_else(|| NetworkError::new(device, step(), None))?;
    if found.kind.as_deref() != Some("bridge") {
        let step = NetStep::NotABridge {
            bridge: bridge.to_owned(),
            kind: found.kind,
        };
        return Err(NetworkError::new(device, step, None));
    }
    Ok((found.index, found.bridge.unwrap_or_default()))
}

/// The host end of a veth to make.
struct HostEnd<'a> {
    name: &'a str,
    /// The bridge to put it on.
    master: Option<u32>,
    up: bool,
    /// The device group to make it in (a virtual network's port filter
    /// matches its ports by it).
    group: Option<u32>,
}

/// A veth pair: the host end (with the MTU, up if it says so, on its
/// bridge if any), the peer made in the container under its name, MAC
/// and MTU. Records the host end and returns the indexes.
fn make_veth(
    plumbed: &mut Plumbed,
    host: &impl Links,
    interface: &InterfaceSpec,
    device: &Device,
    end: HostEnd<'_>,
    container: Netns<'_>,
) -> Result<VethIndexes, NetworkError> {
    let HostEnd {
        name: host_name,
        master,
        up,
        group,
    } = end;
    let veth = Veth {
        name: host_name,
        mtu: interface.mtu,
        master,
        up,
        group,
        peer_name: &interface.guest_name,
        peer_mac: Some(interface.mac),
        peer_netns: Some(container),
    };
    let create_step = || NetStep::CreateVeth {
        host_name: host_name.to_owned(),
    };
    let echoed = host
        .create_veth(&veth)
        .map_err(|e| NetworkError::new(device, create_step(), Some(e)))?;
    // Its index, to delete this very link at the end (not a namesake):
    // from the kernel's echo, or asked for on a kernel without one.
    let made = match echoed {
        Some(made) => made,
        None => VethIndexes {
            index: host
                .index_of(host_name)
                .map_err(|e| NetworkError::new(device, create_step(), Some(e)))?
                .ok_or_else(|| {
                    let gone = LinkError {
                        errno: Errno::ENODEV,
                        message: None,
                    };
                    NetworkError::new(device, create_step(), Some(gone))
                })?,
            peer: None,
        },
    };
    plumbed
        .host_ends
        .push((made.index, host_name.to_owned(), device.clone()));
    Ok(made)
}

fn set_host_end_up(
    host: &impl Links,
    device: &Device,
    host_name: &str,
    index: u32,
) -> Result<(), NetworkError> {
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    host.change(index, &up).map_err(|e| {
        let step = NetStep::HostUp {
            host_name: host_name.to_owned(),
        };
        NetworkError::new(device, step, Some(e))
    })
}

/// Makes the bridge port a member of `vlans` and of no other: it joined
/// the bridge's default VLAN (`default_pvid`) as it was enslaved, and
/// leaves it unless it is one of them.
fn join_vlans(
    host: &impl Links,
    device: &Device,
    bridge: &str,
    host_name: &str,
    port: u32,
    vlans: &[BridgeVlan],
    settings: BridgeSettings,
) -> Result<(), NetworkError> {
    let failed = |e| {
        let step = NetStep::BridgeVlans {
            bridge: bridge.to_owned(),
            host_name: host_name.to_owned(),
        };
        NetworkError::new(device, step, Some(e))
    };
    host.add_bridge_vlans(port, vlans).map_err(failed)?;
    let default = settings.default_pvid;
    if default != 0 && !vlans.iter().any(|v| v.vid == default) {
        host.delete_bridge_vlan(port, default).map_err(failed)?;
    }
    Ok(())
}

/// `<bandwidth>` on the host end of a veth (see [`shaping`]); the ifb
/// devices it makes are recorded in `plumbed`.
fn shape(
    plumbed: &mut Plumbed,
    host: &impl Links,
    interface: &InterfaceSpec,
    device: &Device,
    host_name: &str,
    host_index: u32,
) -> Result<(), NetworkError> {
    let Some(bandwidth) = &interface.bandwidth else {
        return Ok(());
    };
    let mut made = Vec::new();
    let shaped = shaping::shape(host, host_name, host_index, bandwidth, &mut made);
    if let Some(outbound) = &bandwidth.outbound {
        plumbed.ifbs.extend(
            made.into_iter()
                .map(|index| (index, outbound.ifb.clone(), device.clone())),
        );
    }
    shaped.map_err(|e| NetworkError::shaping(device, e))
}

/// Changes the shaping of a running veth, whose host end is `host_name`,
/// from `old` to `new` ([`shaping::reshape`]).
pub fn reshape(
    host: &impl Links,
    device: &Device,
    host_name: &str,
    old: Option<&BandwidthSpec>,
    new: Option<&BandwidthSpec>,
) -> Result<(), NetworkError> {
    shaping::reshape(host, host_name, old, new).map_err(|e| NetworkError::shaping(device, e))
}

/// Deletes the ifb device `name` if it is the one `alias` names
/// ([`shaping::delete_ifb`]).
pub fn delete_ifb(
    host: &impl Links,
    device: &Device,
    name: &str,
    alias: &str,
) -> Result<(), NetworkError> {
    shaping::delete_ifb(host, name, alias).map_err(|e| NetworkError::shaping(device, e))
}

fn find_inside(inside: &impl Links, device: &Device, name: &str) -> Result<u32, NetworkError> {
    let step = || NetStep::FindInside {
        name: name.to_owned(),
    };
    inside
        .find(name)
        .map_err(|e| NetworkError::new(device, step(), Some(e)))?
        .map(|FoundLink { index, .. }| index)
        .ok_or_else(|| NetworkError::new(device, step(), None))
}

/// Turns IPv6 link-local address generation off on `name`, before it has
/// a carrier: a bridge port needs no address of its own, and a container
/// port on a network without IPv6 would only multicast to every other.
fn quiet_ipv6(
    links: &impl Links,
    device: &Device,
    side: Side,
    name: &str,
    index: u32,
) -> Result<(), NetworkError> {
    let change = LinkChange {
        ipv6_link_local: Some(false),
        ..LinkChange::default()
    };
    links.change(index, &change).map_err(|e| {
        let step = NetStep::QuietIpv6 {
            name: name.to_owned(),
            side,
        };
        NetworkError::new(device, step, Some(e))
    })
}

fn set_up(
    inside: &impl Links,
    device: &Device,
    name: &str,
    index: u32,
) -> Result<(), NetworkError> {
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    inside.change(index, &up).map_err(|e| {
        let step = NetStep::SetUp {
            name: name.to_owned(),
        };
        NetworkError::new(device, step, Some(e))
    })
}

/// Which side of an interface an address or route is for: inside the
/// container (`<ip>`, `<route>`) or on the host end (under `<source>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    #[default]
    Inside,
    Host,
}

impl Side {
    fn ip_element(self) -> &'static str {
        match self {
            Side::Inside => "<ip>",
            Side::Host => "<ip> under <source>",
        }
    }

    fn route_element(self) -> &'static str {
        match self {
            Side::Inside => "<route>",
            Side::Host => "<route> under <source>",
        }
    }
}

fn add_addresses(
    links: &impl Links,
    device: &Device,
    side: Side,
    name: &str,
    index: u32,
    addresses: &[IpAddress],
) -> Result<(), NetworkError> {
    for address in addresses {
        links.add_address(index, address).map_err(|e| {
            let step = NetStep::AddAddress {
                name: name.to_owned(),
                address: *address,
                side,
            };
            NetworkError::new(device, step, Some(e))
        })?;
    }
    Ok(())
}

/// Routes through the link (a gateway must be in a subnet of its
/// addresses).
fn add_routes(
    links: &impl Links,
    device: &Device,
    side: Side,
    name: &str,
    index: u32,
    routes: &[IpRoute],
) -> Result<(), NetworkError> {
    for route in routes {
        links.add_route(index, route).map_err(|e| {
            let step = NetStep::AddRoute {
                name: name.to_owned(),
                route: *route,
                side,
            };
            NetworkError::new(device, step, Some(e))
        })?;
    }
    Ok(())
}

/// Inside the container: up unless the link is to stay down (a macvlan
/// is made up; a veth's peer cannot be), then the addresses, then the
/// routes. `known`: its index, when its making said it.
fn configure_inside(
    inside: &impl Links,
    interface: &InterfaceSpec,
    device: &Device,
    known: Option<u32>,
) -> Result<(), NetworkError> {
    let name = &interface.guest_name;
    let index = match known {
        Some(index) => index,
        None => find_inside(inside, device, name)?,
    };
    if interface.quiet_ipv6 {
        quiet_ipv6(inside, device, Side::Inside, name, index)?;
    }
    if interface.kind.host_name().is_some() && !interface.link_down {
        set_up(inside, device, name, index)?;
    }
    add_addresses(
        inside,
        device,
        Side::Inside,
        name,
        index,
        &interface.addresses,
    )?;
    add_routes(inside, device, Side::Inside, name, index, &interface.routes)
}

/// Moves the host interfaces back to `host_ns` under their host names and
/// deletes the veths' host ends; returns what could not be undone.
pub fn unplumb(
    plumbed: Plumbed,
    host: &impl Links,
    inside: &impl Links,
    host_ns: Netns<'_>,
) -> Vec<NetworkError> {
    let mut errors = Vec::new();
    for moved in plumbed.moved {
        let device = Device::Hostdev {
            name: moved.name.clone(),
        };
        let step = || NetStep::MoveBack {
            name: moved.name.clone(),
        };
        let index = match moved.inside {
            Some(index) => Ok(index),
            None => find_inside(inside, &device, &moved.name),
        };
        let index = match index {
            Ok(index) => index,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let back = LinkChange {
            netns: Some(host_ns),
            name: Some(&moved.name),
            ..LinkChange::default()
        };
        let result = match inside.change(index, &back) {
            // Its name was taken on the host meanwhile: back under the
            // name it has, rather than lost.
            Err(e) if e.errno == Errno::EEXIST => inside
                .change(index, &LinkChange { name: None, ..back })
                .and(Err(e)),
            result => result,
        };
        if let Err(e) = result {
            errors.push(NetworkError::new(&device, step(), Some(e)));
        }
    }
    // The host ends (their peers and qdiscs go with them), then the ifb
    // devices their ingress was redirected to.
    let host_ends = plumbed.host_ends.into_iter().map(|(index, name, device)| {
        let step = NetStep::DeleteHostEnd {
            host_name: name.clone(),
        };
        (index, name, device, step)
    });
    let ifbs = plumbed.ifbs.into_iter().map(|(index, name, device)| {
        let step = NetStep::DeleteIfb { name: name.clone() };
        (index, name, device, step)
    });
    for (index, name, device, step) in host_ends.chain(ifbs) {
        // Gone already when the container deleted its end.
        let result = match host.find(&name) {
            Ok(Some(found)) if found.index == index => host.delete(index),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.errno == Errno::ENODEV => {}
            Err(e) => errors.push(NetworkError::new(&device, step, Some(e))),
        }
    }
    errors
}

/// A running container's network, held by its monitor: the sockets in
/// both namespaces and what was made. Undone by [`ContainerNetwork::tear_down`]
/// or, failing that, on drop.
#[derive(Debug)]
pub struct ContainerNetwork {
    host: Netlink,
    inside: Netlink,
    host_ns: OwnedFd,
    plumbed: Option<Plumbed>,
}

impl ContainerNetwork {
    /// Makes the devices of `spec` for the container whose init (in its new
    /// network namespace, not yet released) is `init`; `None` when the spec
    /// has none.
    pub fn set_up(
        spec: &ContainerSpec,
        init: Pid,
    ) -> Result<Option<ContainerNetwork>, NetworkError> {
        if spec.interfaces.is_empty() && spec.host_interfaces.is_empty() {
            return Ok(None);
        }
        let failed =
            |e: LinkError| NetworkError::new(&Device::Namespace, NetStep::OpenNamespace, Some(e));
        let open = |path: &str| {
            linux::open_namespace(Path::new(path)).map_err(|errno| {
                failed(LinkError {
                    errno,
                    message: None,
                })
            })
        };
        let container_ns = open(&format!("/proc/{init}/ns/net"))?;
        let host_ns = open("/proc/thread-self/ns/net")?;
        let host = Netlink::open().map_err(failed)?;
        // The socket keeps the namespace alive until it is dropped, after
        // the host interfaces went back.
        let inside = Netlink::open_in(container_ns.as_fd()).map_err(failed)?;
        let plumbed = plumb(
            spec,
            &host,
            &inside,
            Netns::Fd(container_ns.as_fd()),
            Netns::Fd(host_ns.as_fd()),
        )?;
        Ok(Some(ContainerNetwork {
            host,
            inside,
            host_ns,
            plumbed: Some(plumbed),
        }))
    }

    /// Undoes what was made; returns what could not be.
    pub fn tear_down(mut self) -> Vec<NetworkError> {
        self.undo()
    }

    fn undo(&mut self) -> Vec<NetworkError> {
        match self.plumbed.take() {
            Some(plumbed) => unplumb(
                plumbed,
                &self.host,
                &self.inside,
                Netns::Fd(self.host_ns.as_fd()),
            ),
            None => Vec::new(),
        }
    }
}

impl Drop for ContainerNetwork {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::*;
    use crate::lxc::spec::{HostInterfaceSpec, InterfaceSpec, OutboundSpec};
    use crate::net::{BridgeSettings, FoundLink, Ifb, RateLimit};

    /// Links of one namespace, shared by the double of each side so that
    /// moves and veth peers land on the other; every call is logged.
    #[derive(Default)]
    struct World {
        links: BTreeMap<(&'static str, String), FoundLink>,
        /// Veth pairs, by index: deleting one end deletes the other.
        peers: Vec<(u32, u32)>,
        next_index: u32,
        log: Vec<String>,
        /// The call (by its log line's start) that fails, and how.
        fail: Option<(String, Errno)>,
        /// The kernel's message with that failure.
        fail_message: Option<String>,
        /// The lookups by name, in order: `NS: find NAME` (the whole
        /// link) or `NS: index NAME`.
        lookups: Vec<String>,
    }

    struct Side {
        ns: &'static str,
        other: &'static str,
        world: Rc<RefCell<World>>,
    }

    impl World {
        fn add(&mut self, ns: &'static str, name: &str, kind: Option<&str>) -> u32 {
            self.next_index += 1;
            let link = FoundLink {
                index: self.next_index,
                kind: kind.map(str::to_owned),
                ..FoundLink::default()
            };
            self.links.insert((ns, name.to_owned()), link);
            self.next_index
        }

        fn name_of(&self, ns: &str, index: u32) -> Option<String> {
            self.links
                .iter()
                .find(|((n, _), l)| *n == ns && l.index == index)
                .map(|((_, name), _)| name.clone())
        }
    }

    impl Side {
        fn call(&self, line: String) -> Result<(), LinkError> {
            let mut world = self.world.borrow_mut();
            let line = format!("{}: {line}", self.ns);
            world.log.push(line.clone());
            match &world.fail {
                Some((prefix, errno)) if line.starts_with(prefix.as_str()) => Err(LinkError {
                    errno: *errno,
                    message: world.fail_message.clone(),
                }),
                _ => Ok(()),
            }
        }

        fn target(&self, netns: Option<Netns<'_>>) -> &'static str {
            if netns.is_some() { self.other } else { self.ns }
        }
    }

    impl Links for Side {
        fn find(&self, name: &str) -> Result<Option<FoundLink>, LinkError> {
            let mut world = self.world.borrow_mut();
            world.lookups.push(format!("{}: find {name}", self.ns));
            Ok(world.links.get(&(self.ns, name.to_owned())).cloned())
        }

        fn index_of(&self, name: &str) -> Result<Option<u32>, LinkError> {
            let mut world = self.world.borrow_mut();
            world.lookups.push(format!("{}: index {name}", self.ns));
            Ok(world
                .links
                .get(&(self.ns, name.to_owned()))
                .map(|link| link.index))
        }

        fn create_veth(&self, veth: &Veth<'_>) -> Result<Option<VethIndexes>, LinkError> {
            let group = veth.group.map(|g| format!(" group={g:#x}"));
            self.call(format!(
                "veth {} mtu={:?}{} master={:?} up={} peer={} mac={:02x?}",
                veth.name,
                veth.mtu,
                group.unwrap_or_default(),
                veth.master,
                veth.up,
                veth.peer_name,
                veth.peer_mac
            ))?;
            let peer_ns = self.target(veth.peer_netns);
            let mut world = self.world.borrow_mut();
            let end = world.add(self.ns, veth.name, Some("veth"));
            let peer = world.add(peer_ns, veth.peer_name, Some("veth"));
            world.peers.push((end, peer));
            Ok(Some(VethIndexes {
                index: end,
                peer: Some(peer),
            }))
        }

        fn create_macvlan(&self, macvlan: &Macvlan<'_>) -> Result<(), LinkError> {
            self.call(format!(
                "macvlan {} lower={} mtu={:?} mode={} up={}",
                macvlan.name,
                macvlan.lower,
                macvlan.mtu,
                macvlan.mode.as_str(),
                macvlan.up
            ))?;
            let ns = self.target(macvlan.netns);
            self.world
                .borrow_mut()
                .add(ns, macvlan.name, Some("macvlan"));
            Ok(())
        }

        fn change(&self, index: u32, change: &LinkChange<'_>) -> Result<(), LinkError> {
            if let Some(link_local) = change.ipv6_link_local {
                return self.call(format!("ipv6 link-local {index} {link_local}"));
            }
            self.call(format!(
                "change {index} name={:?} up={:?} move={}",
                change.name,
                change.up,
                change.netns.is_some()
            ))?;
            if change.netns.is_some() {
                let mut world = self.world.borrow_mut();
                let name = world.name_of(self.ns, index).unwrap();
                let link = world.links.remove(&(self.ns, name.clone())).unwrap();
                let name = change.name.map_or(name, str::to_owned);
                world.links.insert((self.other, name), link);
            }
            Ok(())
        }

        fn create_ifb(&self, ifb: &Ifb<'_>) -> Result<u32, LinkError> {
            self.call(format!("ifb {} alias={:?}", ifb.name, ifb.alias))?;
            let mut world = self.world.borrow_mut();
            let index = world.add(self.ns, ifb.name, Some("ifb"));
            if let Some(link) = world.links.get_mut(&(self.ns, ifb.name.to_owned())) {
                link.alias = Some(ifb.alias.to_owned());
            }
            Ok(index)
        }

        fn add_bridge_vlans(&self, port: u32, vlans: &[BridgeVlan]) -> Result<(), LinkError> {
            let vlans: Vec<String> = vlans
                .iter()
                .map(|v| {
                    format!(
                        "{}{}{}",
                        v.vid,
                        if v.pvid { " pvid" } else { "" },
                        if v.untagged { " untagged" } else { "" }
                    )
                })
                .collect();
            self.call(format!("vlans {port} [{}]", vlans.join(", ")))
        }

        fn delete_bridge_vlan(&self, port: u32, vid: u16) -> Result<(), LinkError> {
            self.call(format!("vlan delete {port} {vid}"))
        }

        fn limit_egress(&self, index: u32, limit: &RateLimit) -> Result<(), LinkError> {
            self.call(format!(
                "tbf {index} rate={} burst={} peak={:?}/{} queue={}",
                limit.rate, limit.burst, limit.peak, limit.peak_burst, limit.queue
            ))
        }

        fn redirect_ingress(&self, index: u32, to: u32) -> Result<(), LinkError> {
            self.call(format!("redirect {index} to {to}"))
        }

        fn reshape_egress(&self, index: u32, limit: Option<&RateLimit>) -> Result<(), LinkError> {
            match limit {
                Some(limit) => self.call(format!("tbf replace {index} rate={}", limit.rate)),
                None => self.call(format!("tbf delete {index}")),
            }
        }

        fn end_redirect(&self, index: u32) -> Result<(), LinkError> {
            self.call(format!("end redirect {index}"))
        }

        fn add_address(&self, index: u32, address: &IpAddress) -> Result<(), LinkError> {
            self.call(format!(
                "address {index} {}/{}",
                address.address, address.prefix
            ))
        }

        fn add_route(&self, index: u32, route: &IpRoute) -> Result<(), LinkError> {
            self.call(format!("route {index} {route}"))
        }

        fn delete(&self, index: u32) -> Result<(), LinkError> {
            self.call(format!("delete {index}"))?;
            let mut world = self.world.borrow_mut();
            let peers: Vec<u32> = world
                .peers
                .iter()
                .filter_map(|&(a, b)| (a == index).then_some(b).or((b == index).then_some(a)))
                .collect();
            world
                .links
                .retain(|_, link| link.index != index && !peers.contains(&link.index));
            Ok(())
        }
    }

    fn world() -> (Side, Side, Rc<RefCell<World>>) {
        let world = Rc::new(RefCell::new(World::default()));
        {
            let mut w = world.borrow_mut();
            w.add("host", "br0", Some("bridge"));
            w.add("host", "eth9", None);
            w.add("host", "lxvtifb", Some("ifb"));
            w.add("inside", "lo", None);
        }
        let host = Side {
            ns: "host",
            other: "inside",
            world: world.clone(),
        };
        let inside = Side {
            ns: "inside",
            other: "host",
            world: world.clone(),
        };
        (host, inside, world)
    }

    fn interface(index: usize, kind: InterfaceKind, guest: &str) -> InterfaceSpec {
        InterfaceSpec {
            index,
            kind,
            mac: [0x52, 0x54, 0, 0, 0, index as u8],
            guest_name: guest.into(),
            addresses: vec![IpAddress {
                address: format!("10.251.{index}.2").parse().unwrap(),
                prefix: 24,
                peer: None,
            }],
            routes: vec![IpRoute {
                destination: "0.0.0.0".parse().unwrap(),
                prefix: 0,
                gateway: Some(format!("10.251.{index}.1").parse().unwrap()),
            }],
            mtu: None,
            link_down: false,
            quiet_ipv6: false,
            bandwidth: None,
        }
    }

    fn spec(interfaces: Vec<InterfaceSpec>, hostdevs: &[&str]) -> ContainerSpec {
        let json = serde_json::json!({
            "version": crate::lxc::spec::SPEC_VERSION,
            "name": "web", "uuid": uuid::Uuid::nil(), "hostname": "web",
            "namespaces": {"net": "new", "ipc": "new", "uts": "new", "user": null},
            "root": "host", "mounts": [], "devices": [],
            "init": {"path": "/bin/sh", "args": [], "env": [], "cwd": "/", "user": null, "group": null},
            "capabilities": [], "no_new_privs": false, "masked_paths": [], "readonly_paths": [],
            "consoles": 1, "cgroup": crate::cgroup::CgroupSpec::default(), "security": null,
            "run_dir": "/run/lxvirt",
        });
        let mut spec: ContainerSpec = serde_json::from_value(json).unwrap();
        spec.interfaces = interfaces;
        spec.host_interfaces = hostdevs
            .iter()
            .map(|h| HostInterfaceSpec {
                name: h.to_string(),
                addresses: Vec::new(),
                routes: Vec::new(),
            })
            .collect();
        spec
    }

    /// Any descriptor stands for a namespace: the double never reads it.
    fn netns() -> std::fs::File {
        std::fs::File::open("/dev/null").unwrap()
    }

    fn plumb_here(
        spec: &ContainerSpec,
        host: &Side,
        inside: &Side,
    ) -> Result<Plumbed, NetworkError> {
        let ns = netns();
        plumb(
            spec,
            host,
            inside,
            Netns::Fd(ns.as_fd()),
            Netns::Fd(ns.as_fd()),
        )
    }

    fn bridge(bridge: &str, host_name: &str) -> InterfaceKind {
        InterfaceKind::Bridge {
            bridge: bridge.into(),
            host_name: host_name.into(),
            vlans: Vec::new(),
            port_group: None,
            network_bridge: false,
        }
    }

    fn ethernet(host_name: &str) -> InterfaceKind {
        InterfaceKind::Ethernet {
            host_name: host_name.into(),
            addresses: Vec::new(),
            routes: Vec::new(),
        }
    }

    #[test]
    fn every_kind_is_made_then_configured_inside_and_undone() {
        let (host, inside, world) = world();
        let ns = netns();
        // The first as a virtual network's port: made in its group.
        let port = InterfaceKind::Bridge {
            bridge: "br0".into(),
            host_name: "lxv0".into(),
            vlans: Vec::new(),
            port_group: Some(0x4000_0001),
            network_bridge: true,
        };
        let spec = spec(
            vec![
                interface(0, port, "eth0"),
                interface(1, ethernet("lxv1"), "eth1"),
                interface(
                    2,
                    InterfaceKind::Direct {
                        dev: "eth9".into(),
                        mode: MacvlanMode::Bridge,
                    },
                    "eth2",
                ),
            ],
            &["lxvtifb"],
        );
        let plumbed = plumb_here(&spec, &host, &inside).unwrap();
        let log = std::mem::take(&mut world.borrow_mut().log);
        assert_eq!(
            log,
            [
                "host: change 3 name=None up=None move=true",
                "host: veth lxv0 mtu=None group=0x40000001 master=Some(1) up=true peer=eth0 mac=Some([52, 54, 00, 00, 00, 00])",
                "host: ipv6 link-local 5 false",
                "inside: change 6 name=None up=Some(true) move=false",
                "inside: address 6 10.251.0.2/24",
                "inside: route 6 0.0.0.0/0 via 10.251.0.1",
                "host: veth lxv1 mtu=None master=None up=true peer=eth1 mac=Some([52, 54, 00, 00, 00, 01])",
                "inside: change 8 name=None up=Some(true) move=false",
                "inside: address 8 10.251.1.2/24",
                "inside: route 8 0.0.0.0/0 via 10.251.1.1",
                "host: macvlan eth2 lower=2 mtu=None mode=bridge up=true",
                "inside: address 9 10.251.2.2/24",
                "inside: route 9 0.0.0.0/0 via 10.251.2.1",
            ]
        );
        assert_eq!(
            plumbed
                .host_ends
                .iter()
                .map(|(i, n, _)| (*i, n.as_str()))
                .collect::<Vec<_>>(),
            [(5, "lxv0"), (7, "lxv1")]
        );
        // The network's bridge and a macvlan's lower device by their
        // index alone, the veths' peers by the indexes their making gave:
        // the others are looked up whole.
        assert_eq!(
            world.borrow().lookups,
            [
                "host: find lxvtifb",
                "inside: find lxvtifb",
                "host: index br0",
                "host: index eth9",
                "inside: find eth2",
            ]
        );

        let errors = unplumb(plumbed, &host, &inside, Netns::Fd(ns.as_fd()));
        assert_eq!(errors, []);
        let world = world.borrow();
        assert_eq!(
            world.log,
            [
                "inside: change 3 name=Some(\"lxvtifb\") up=None move=true",
                "host: delete 5",
                "host: delete 7",
            ]
        );
        assert!(
            world.links.contains_key(&("host", "lxvtifb".into())),
            "back on the host"
        );
        assert!(!world.links.contains_key(&("host", "lxv0".into())));
    }

    #[test]
    fn a_missing_bridge_is_named_with_the_fix_and_nothing_is_left() {
        let (host, inside, world) = world();
        let spec = spec(
            vec![
                interface(0, ethernet("lxv0"), "eth0"),
                interface(1, bridge("nobr", "lxv1"), "eth1"),
            ],
            &["lxvtifb"],
        );
        let err = plumb_here(&spec, &host, &inside).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<interface type='bridge'> #2 (bridge 'nobr'): bridge 'nobr' does not exist; create it or change <source bridge>"
        );
        let world = world.borrow();
        let log = world.log.join("\n");
        assert!(log.ends_with("host: delete 5"), "{log}");
        assert!(
            log.contains("inside: change 3 name=Some(\"lxvtifb\") up=None move=true"),
            "{log}"
        );
        assert!(world.links.keys().all(|(_, n)| n != "lxv0" && n != "eth0"));
        assert!(world.links.contains_key(&("host", "lxvtifb".into())));
    }

    #[test]
    fn refusals_name_the_device_and_the_fix() {
        /// The interface, the call that fails (and how), the message.
        type Case = (InterfaceKind, Option<(&'static str, Errno)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                bridge("eth9", "lxv0"),
                None,
                "<interface type='bridge'> #1 (bridge 'eth9'): 'eth9' is not a bridge (it is a physical device); name a Linux bridge in <source bridge>",
            ),
            (
                InterfaceKind::Direct {
                    dev: "nodev".into(),
                    mode: MacvlanMode::Vepa,
                },
                None,
                "<interface type='direct'> #1 (device 'nodev', mode 'vepa'): host device 'nodev' does not exist; change <source dev>",
            ),
            (
                bridge("br0", "lxv0"),
                Some(("host: veth", Errno::EEXIST)),
                "<interface type='bridge'> #1 (bridge 'br0'): host interface 'lxv0' exists already; change <target dev> or remove that interface",
            ),
            (
                bridge("br0", "lxv0"),
                Some(("inside: route", Errno::ENETUNREACH)),
                "<interface type='bridge'> #1 (bridge 'br0'): cannot add the route 0.0.0.0/0 via 10.251.0.1 on 'eth0': the gateway is not in a subnet of the interface; add an <ip> in the gateway's subnet or change <route gateway>",
            ),
        ];
        for (kind, fail, message) in cases {
            let (host, inside, world) = world();
            world.borrow_mut().fail = fail.map(|(p, e)| (p.to_owned(), e));
            let spec = spec(vec![interface(0, kind, "eth0")], &[]);
            let err = plumb_here(&spec, &host, &inside).unwrap_err();
            assert_eq!(err.to_string(), message);
            let world = world.borrow();
            assert!(
                world.links.keys().all(|(_, n)| n != "lxv0" && n != "eth0"),
                "{message}: {:?}",
                world.links
            );
        }
        // A hostdev that is not there.
        let (host, inside, _) = world();
        let err = plumb_here(&spec(vec![], &["gone0"]), &host, &inside).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<hostdev type='net'> 'gone0': host interface 'gone0' does not exist; change <source><interface> of the <hostdev>"
        );
    }

    fn direct(dev: &str) -> InterfaceKind {
        InterfaceKind::Direct {
            dev: dev.into(),
            mode: MacvlanMode::Bridge,
        }
    }

    const MAC0: &str = "mac=Some([52, 54, 00, 00, 00, 00])";

    #[test]
    fn mtu_and_link_state_reach_both_ends() {
        let (host, inside, world) = self::world();
        let mut down = interface(0, bridge("br0", "lxv0"), "eth0");
        down.mtu = Some(9000);
        down.link_down = true;
        down.routes.clear();
        let mut up = interface(1, ethernet("lxv1"), "eth1");
        up.mtu = Some(1400);
        let mut macvlan = interface(2, direct("eth9"), "eth2");
        macvlan.mtu = Some(1400);
        macvlan.link_down = true;
        macvlan.routes.clear();
        plumb_here(&self::spec(vec![down, up, macvlan], &[]), &host, &inside).unwrap();
        assert_eq!(
            world.borrow().log,
            [
                format!("host: veth lxv0 mtu=Some(9000) master=Some(1) up=false peer=eth0 {MAC0}"),
                "host: ipv6 link-local 5 false".into(),
                // Left down inside: addresses only.
                "inside: address 6 10.251.0.2/24".into(),
                "host: veth lxv1 mtu=Some(1400) master=None up=true peer=eth1 mac=Some([52, 54, 00, 00, 00, 01])".into(),
                "inside: change 8 name=None up=Some(true) move=false".into(),
                "inside: address 8 10.251.1.2/24".into(),
                "inside: route 8 0.0.0.0/0 via 10.251.1.1".into(),
                "host: macvlan eth2 lower=2 mtu=Some(1400) mode=bridge up=false".into(),
                "inside: address 9 10.251.2.2/24".into(),
            ]
        );

        // A macvlan's MTU above its device's.
        let (host, inside, world) = self::world();
        world.borrow_mut().fail = Some(("host: macvlan".into(), Errno::EINVAL));
        let mut macvlan = interface(0, direct("eth9"), "eth0");
        macvlan.mtu = Some(9000);
        let err = plumb_here(&self::spec(vec![macvlan], &[]), &host, &inside).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<interface type='direct'> #1 (device 'eth9', mode 'bridge'): cannot create a macvlan with MTU 9000 on host device 'eth9': a macvlan's MTU may not exceed its device's; lower <mtu size> or raise the MTU of 'eth9'"
        );
    }

    fn host_side() -> InterfaceKind {
        InterfaceKind::Ethernet {
            host_name: "lxv0".into(),
            addresses: vec![IpAddress {
                address: "10.251.40.1".parse().unwrap(),
                prefix: 32,
                peer: Some("10.251.40.2".parse().unwrap()),
            }],
            routes: vec![IpRoute {
                destination: "10.251.41.0".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.251.40.2".parse().unwrap()),
            }],
        }
    }

    #[test]
    fn host_side_addresses_go_on_the_host_end_and_hostdevs_get_theirs_inside() {
        let (host, inside, world) = self::world();
        let mut spec = self::spec(vec![interface(0, host_side(), "eth0")], &["lxvtifb"]);
        spec.host_interfaces[0].addresses = vec![IpAddress {
            address: "10.251.42.2".parse().unwrap(),
            prefix: 24,
            peer: None,
        }];
        spec.host_interfaces[0].routes = vec![IpRoute {
            destination: "192.168.43.0".parse().unwrap(),
            prefix: 24,
            gateway: Some("10.251.42.1".parse().unwrap()),
        }];
        let plumbed = plumb_here(&spec, &host, &inside).unwrap();
        assert_eq!(
            world.borrow().log,
            [
                "host: change 3 name=None up=None move=true".to_owned(),
                // The move leaves it down: up before its routes.
                "inside: change 3 name=None up=Some(true) move=false".into(),
                "inside: address 3 10.251.42.2/24".into(),
                "inside: route 3 192.168.43.0/24 via 10.251.42.1".into(),
                format!("host: veth lxv0 mtu=None master=None up=true peer=eth0 {MAC0}"),
                "host: address 5 10.251.40.1/32".into(),
                "host: route 5 10.251.41.0/24 via 10.251.40.2".into(),
                "inside: change 6 name=None up=Some(true) move=false".into(),
                "inside: address 6 10.251.0.2/24".into(),
                "inside: route 6 0.0.0.0/0 via 10.251.0.1".into(),
            ]
        );
        // The host end's addresses and routes go with it; the kernel
        // flushes the moved interface's as it leaves the namespace.
        world.borrow_mut().log.clear();
        let ns = netns();
        assert_eq!(unplumb(plumbed, &host, &inside, Netns::Fd(ns.as_fd())), []);
        assert_eq!(
            world.borrow().log,
            [
                "inside: change 3 name=Some(\"lxvtifb\") up=None move=true",
                "host: delete 5",
            ]
        );

        for (errno, message) in [
            (
                Errno::ENETUNREACH,
                "<interface type='ethernet'> #1 (host end 'lxv0'): cannot add the route 10.251.41.0/24 via 10.251.40.2 on 'lxv0': the gateway is not in a subnet of the interface; add an <ip> under <source> in the gateway's subnet or change <route gateway>",
            ),
            (
                Errno::EEXIST,
                "<interface type='ethernet'> #1 (host end 'lxv0'): the host has a route to 10.251.41.0 already, so it cannot go through 'lxv0'; remove the duplicate <route> under <source>, or the host's own route",
            ),
        ] {
            let (host, inside, world) = self::world();
            world.borrow_mut().fail = Some(("host: route".into(), errno));
            let spec = self::spec(vec![interface(0, host_side(), "eth0")], &[]);
            let err = plumb_here(&spec, &host, &inside).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert!(world.borrow().log.ends_with(&["host: delete 5".to_owned()]));
        }
    }

    fn shaped(index: usize, kind: InterfaceKind) -> InterfaceSpec {
        let limit = |rate: u64| RateLimit {
            rate,
            burst: 65_536,
            peak: None,
            peak_burst: 1518,
            queue: 100_000,
        };
        let mut shaped = interface(index, kind, &format!("eth{index}"));
        shaped.bandwidth = Some(BandwidthSpec {
            inbound: Some(limit(2_048_000)),
            outbound: Some(OutboundSpec {
                ifb: "lxvq0001".into(),
                alias: "lxvirt: test".into(),
                limit: limit(1_024_000),
            }),
        });
        shaped
    }

    #[test]
    fn a_running_interfaces_shaping_changes_one_direction_at_a_time() {
        let (host, _inside, world) = self::world();
        let end = world.borrow_mut().add("host", "lxv0", Some("veth"));
        let full = shaped(0, bridge("br0", "lxv0")).bandwidth.unwrap();
        let device = Device::Namespace;
        let take = || std::mem::take(&mut world.borrow_mut().log);
        // None to both: the host end's bucket, an ifb with its bucket and
        // the redirect, as at a start.
        reshape(&host, &device, "lxv0", None, Some(&full)).unwrap();
        let ifb = end + 1;
        assert_eq!(
            take(),
            [
                format!("host: tbf replace {end} rate=2048000"),
                "host: ifb lxvq0001 alias=\"lxvirt: test\"".to_owned(),
                format!("host: tbf {ifb} rate=1024000 burst=65536 peak=None/1518 queue=100000"),
                format!("host: redirect {end} to {ifb}"),
            ]
        );
        // A new outbound rate: the ifb's bucket in place, nothing else.
        let mut faster = full.clone();
        if let Some(out) = faster.outbound.as_mut() {
            out.limit.rate = 4_096_000;
        }
        reshape(&host, &device, "lxv0", Some(&full), Some(&faster)).unwrap();
        assert_eq!(take(), [format!("host: tbf replace {ifb} rate=4096000")]);
        // Outbound ended: the redirect and the ifb go; inbound untouched.
        let inbound_only = BandwidthSpec {
            outbound: None,
            ..faster.clone()
        };
        reshape(&host, &device, "lxv0", Some(&faster), Some(&inbound_only)).unwrap();
        assert_eq!(
            take(),
            [
                format!("host: end redirect {end}"),
                format!("host: delete {ifb}")
            ]
        );
        // All of it ended.
        reshape(&host, &device, "lxv0", Some(&inbound_only), None).unwrap();
        assert_eq!(take(), [format!("host: tbf delete {end}")]);
        // A host end that is gone is named.
        let gone = reshape(&host, &device, "lxv9", None, Some(&full)).unwrap_err();
        assert!(
            gone.to_string().contains("its host end 'lxv9' is gone"),
            "{gone}"
        );
        // An ifb of that name that is not the interface's stays.
        world.borrow_mut().add("host", "lxvq0001", Some("ifb"));
        delete_ifb(&host, &device, "lxvq0001", "lxvirt: test").unwrap();
        assert!(
            world
                .borrow()
                .links
                .contains_key(&("host", "lxvq0001".into()))
        );
    }

    #[test]
    fn bandwidth_shapes_the_host_end_and_an_ifb_that_go_at_the_end() {
        let (host, inside, world) = self::world();
        let spec = self::spec(vec![shaped(0, bridge("br0", "lxv0"))], &[]);
        let plumbed = plumb_here(&spec, &host, &inside).unwrap();
        let log = std::mem::take(&mut world.borrow_mut().log);
        assert_eq!(
            log[2..6],
            [
                "host: tbf 5 rate=2048000 burst=65536 peak=None/1518 queue=100000",
                "host: ifb lxvq0001 alias=\"lxvirt: test\"",
                "host: tbf 7 rate=1024000 burst=65536 peak=None/1518 queue=100000",
                "host: redirect 5 to 7",
            ]
        );
        let ns = netns();
        assert_eq!(unplumb(plumbed, &host, &inside, Netns::Fd(ns.as_fd())), []);
        assert_eq!(world.borrow().log, ["host: delete 5", "host: delete 7"]);
        assert!(
            !world
                .borrow()
                .links
                .contains_key(&("host", "lxvq0001".into()))
        );

        // One left by a killed monitor (its name and alias) is replaced;
        // another device of that name is not touched.
        let (host, inside, world) = self::world();
        world.borrow_mut().add("host", "lxvq0001", Some("ifb"));
        if let Some(left) = world
            .borrow_mut()
            .links
            .get_mut(&("host", "lxvq0001".into()))
        {
            left.alias = Some("lxvirt: test".into());
        }
        let spec = self::spec(vec![shaped(0, bridge("br0", "lxv0"))], &[]);
        plumb_here(&spec, &host, &inside).unwrap();
        let log = world.borrow().log.clone();
        assert_eq!(
            log[3..5],
            [
                "host: delete 5",
                "host: ifb lxvq0001 alias=\"lxvirt: test\""
            ]
        );
        for alias in [None, Some("someone else's")] {
            let (host, inside, world) = self::world();
            world.borrow_mut().add("host", "lxvq0001", Some("ifb"));
            if let Some(other) = world
                .borrow_mut()
                .links
                .get_mut(&("host", "lxvq0001".into()))
            {
                other.alias = alias.map(str::to_owned);
            }
            let err = plumb_here(&spec, &host, &inside).unwrap_err();
            assert_eq!(
                err.to_string(),
                "<interface type='bridge'> #1 (bridge 'br0'): the host has a device named 'lxvq0001' that is not this interface's; <outbound> shaping needs that name for its ifb device: rename or remove that device"
            );
            let world = world.borrow();
            assert!(world.links.contains_key(&("host", "lxvq0001".into())));
            assert!(
                world.log.ends_with(&["host: delete 6".to_owned()]),
                "{:?}",
                world.log
            );
        }

        // A failure after the ifb was made takes it along; a kernel
        // without the pieces is named.
        for (fail, errno, message) in [
            (
                "host: redirect",
                Errno::EPERM,
                "<interface type='ethernet'> #1 (host end 'lxv0'): cannot redirect what arrives on 'lxv0' to 'lxvq0001' for <outbound> shaping (the kernel says: refused): EPERM: Operation not permitted",
            ),
            (
                "host: redirect",
                Errno::ENOENT,
                "<interface type='ethernet'> #1 (host end 'lxv0'): cannot redirect what arrives on 'lxv0' to 'lxvq0001' for <outbound> shaping: this kernel lacks the ingress qdisc, the u32 filter or the mirred action (modules sch_ingress, cls_u32, act_mirred); load them or remove <outbound> (the kernel says: refused): ENOENT: No such file or directory",
            ),
            (
                "host: tbf 7",
                Errno::ENOENT,
                "<interface type='ethernet'> #1 (host end 'lxv0'): cannot shape the traffic of 'lxvq0001' for <outbound>: this kernel has no tbf qdisc (CONFIG_NET_SCH_TBF, module sch_tbf); load it or remove <bandwidth> (the kernel says: refused): ENOENT: No such file or directory",
            ),
        ] {
            let (host, inside, world) = self::world();
            world.borrow_mut().fail = Some((fail.into(), errno));
            world.borrow_mut().fail_message = Some("refused".into());
            let spec = self::spec(vec![shaped(0, ethernet("lxv0"))], &[]);
            let err = plumb_here(&spec, &host, &inside).unwrap_err();
            assert_eq!(crate::error_chain::error_chain(&err), message);
            let world = world.borrow();
            assert!(
                world
                    .log
                    .ends_with(&["host: delete 5".to_owned(), "host: delete 7".to_owned()]),
                "{:?}",
                world.log
            );
            assert!(
                world
                    .links
                    .keys()
                    .all(|(_, n)| n != "lxvq0001" && n != "lxv0")
            );
        }
    }

    fn vlan(vid: u16, pvid: bool, untagged: bool) -> BridgeVlan {
        BridgeVlan {
            vid,
            pvid,
            untagged,
        }
    }

    /// A world with `brv`, a bridge that filters VLANs (index 5).
    fn vlan_world() -> (Side, Side, Rc<RefCell<World>>) {
        let (host, inside, world) = self::world();
        world.borrow_mut().add("host", "brv", Some("bridge"));
        if let Some(brv) = world.borrow_mut().links.get_mut(&("host", "brv".into())) {
            brv.bridge = Some(BridgeSettings {
                vlan_filtering: true,
                default_pvid: 1,
            });
        }
        (host, inside, world)
    }

    fn on_vlans(vlans: Vec<BridgeVlan>, bridge: &str) -> InterfaceSpec {
        let kind = InterfaceKind::Bridge {
            bridge: bridge.into(),
            host_name: "lxv0".into(),
            vlans,
            port_group: None,
            network_bridge: false,
        };
        interface(0, kind, "eth0")
    }

    #[test]
    fn vlans_make_the_port_a_member_before_it_comes_up() {
        let (host, inside, world) = self::vlan_world();
        let spec = self::spec(vec![on_vlans(vec![vlan(10, true, true)], "brv")], &[]);
        plumb_here(&spec, &host, &inside).unwrap();
        assert_eq!(
            world.borrow().log[..6],
            [
                format!("host: veth lxv0 mtu=None master=Some(5) up=false peer=eth0 {MAC0}"),
                "host: ipv6 link-local 6 false".into(),
                "host: vlans 6 [10 pvid untagged]".into(),
                // Out of the bridge's default VLAN.
                "host: vlan delete 6 1".into(),
                "host: change 6 name=None up=Some(true) move=false".into(),
                "inside: change 7 name=None up=Some(true) move=false".into(),
            ]
        );

        // A trunk with the default VLAN among its own keeps it; a link
        // left down leaves the host end down.
        let (host, inside, world) = self::vlan_world();
        let mut trunk = on_vlans(vec![vlan(1, true, false), vlan(20, false, false)], "brv");
        trunk.link_down = true;
        trunk.routes.clear();
        plumb_here(&spec_of(trunk), &host, &inside).unwrap();
        assert_eq!(
            world.borrow().log,
            [
                format!("host: veth lxv0 mtu=None master=Some(5) up=false peer=eth0 {MAC0}"),
                "host: ipv6 link-local 6 false".into(),
                "host: vlans 6 [1 pvid, 20]".into(),
                "inside: address 7 10.251.0.2/24".into(),
            ]
        );

        // A bridge that does not filter: refused before anything is made.
        let (host, inside, world) = self::vlan_world();
        let spec = self::spec(vec![on_vlans(vec![vlan(10, true, true)], "br0")], &[]);
        let err = plumb_here(&spec, &host, &inside).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<interface type='bridge'> #1 (bridge 'br0'): bridge 'br0' does not filter VLANs, so <vlan> cannot be applied; turn filtering on (ip link set br0 type bridge vlan_filtering 1) or remove <vlan>"
        );
        assert_eq!(world.borrow().log, Vec::<String>::new());

        // A refused membership undoes the veth.
        let (host, inside, world) = self::vlan_world();
        world.borrow_mut().fail = Some(("host: vlan delete".into(), Errno::EPERM));
        let spec = self::spec(vec![on_vlans(vec![vlan(10, true, true)], "brv")], &[]);
        let err = plumb_here(&spec, &host, &inside).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<interface type='bridge'> #1 (bridge 'brv'): cannot make port 'lxv0' of bridge 'brv' a member of its VLANs; check <vlan>"
        );
        assert!(world.borrow().log.ends_with(&["host: delete 6".to_owned()]));
    }

    fn spec_of(interface: InterfaceSpec) -> ContainerSpec {
        spec(vec![interface], &[])
    }

    #[test]
    fn errors_cross_to_the_daemon_whole() {
        let err = NetworkError {
            device: Device::Interface {
                index: 0,
                type_name: "bridge".into(),
                source: Some("bridge 'br0'".into()),
            },
            step: Box::new(NetStep::CreateVeth {
                host_name: "lxv0".into(),
            }),
            errno: Some(Errno::EPERM),
            detail: Some("Operation not permitted".into()),
        };
        let json = serde_json::to_string(&err).unwrap();
        let back: NetworkError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
        assert_eq!(
            crate::error_chain::error_chain(&back),
            "<interface type='bridge'> #1 (bridge 'br0'): cannot create the veth pair with host end 'lxv0' (the kernel says: Operation not permitted): EPERM: Operation not permitted"
        );
    }
}
