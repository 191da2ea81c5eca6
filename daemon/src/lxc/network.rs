//! The container's network devices, made by the monitor between init's
//! clone and its release, and undone when the container ends.
//!
//! The monitor does it all itself, single-threaded and with rtnetlink
//! (no `ip`): host root has `CAP_NET_ADMIN` over every network
//! namespace, the container's (owned by its user namespace) included, and
//! a netlink socket opened inside that namespace (the monitor joins it
//! for the `socket` call only) configures it from outside.
//!
//! ```text
//! host namespace (monitor)                  container namespace
//! <hostdev type='net'> NAME ── moved in ───► NAME (down, as the move leaves it)
//! bridge/ethernet: veth HOST_END ◄─ pair ──► GUEST_NAME (made here: MAC)
//!   (on the bridge for 'bridge'; up)          up, addresses, routes
//! direct: on host device DEV ─ macvlan ────► GUEST_NAME (made here: MAC, up)
//!                                             addresses, routes
//! ```
//!
//! The container ends of veths and macvlans are created in the
//! container's namespace directly under their final names, so nothing
//! needs renaming and no temporary name can clash on the host.
//!
//! When the container ends (or its start fails half way), [`unplumb`]
//! moves every `<hostdev type='net'>` back to the host under its host
//! name (a virtual device would otherwise die with the namespace) and
//! deletes the host ends of the veths (their peers go with them), before
//! the monitor lets go of the namespace. If the monitor itself is killed,
//! the namespace dies with the container's last process and takes the
//! veth pairs and macvlans along; a virtual `<hostdev>` device dies with
//! it (a physical one returns to the host by itself).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::spec::{ContainerSpec, InterfaceKind, InterfaceSpec};
use crate::net::{
    FoundLink, IpAddress, IpRoute, LinkChange, LinkError, Links, Macvlan, MacvlanMode, Netlink,
    Netns, Veth,
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
            InterfaceKind::Ethernet { host_name } => Some(format!("host end '{host_name}'")),
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
    },
    FindInside {
        name: String,
    },
    SetUp {
        name: String,
    },

    AddAddress {
        name: String,
        address: IpAddress,
    },
    AddRoute {
        name: String,
        route: IpRoute,
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
            NetStep::CreateMacvlan { dev, mode } => format!(
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
            NetStep::AddAddress { name, address } if errno == Some(Errno::EEXIST) => format!(
                "address {}/{} is given twice on '{name}'; remove the duplicate <ip>",
                address.address, address.prefix
            ),
            NetStep::AddAddress { name, address } => format!(
                "cannot add address {}/{} to '{name}'; check <ip>",
                address.address, address.prefix
            ),
            NetStep::AddRoute { name, route } if errno == Some(Errno::ENETUNREACH) => format!(
                "cannot add the route {route} on '{name}': the gateway is not in a subnet of the interface; add an <ip> in the gateway's subnet or change <route gateway>"
            ),
            NetStep::AddRoute { name, route } if errno == Some(Errno::EEXIST) => format!(
                "the route {route} on '{name}' is given twice (or another <interface> has it); remove the duplicate <route>"
            ),
            NetStep::AddRoute { name, route } => {
                format!("cannot add the route {route} on '{name}'; check <route>")
            }
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
    for name in &spec.host_interfaces {
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
    }
    for interface in &spec.interfaces {
        let device = Device::of(interface);
        let guest = &interface.guest_name;
        match &interface.kind {
            InterfaceKind::Bridge {
                bridge,
                host_name,
                port_group,
            } => {
                let step = || NetStep::FindBridge {
                    bridge: bridge.clone(),
                };
                let found = host
                    .find(bridge)
                    .map_err(|e| NetworkError::new(&device, step(), Some(e)))?
                    .ok_or_else(|| NetworkError::new(&device, step(), None))?;
                if found.kind.as_deref() != Some("bridge") {
                    let step = NetStep::NotABridge {
                        bridge: bridge.clone(),
                        kind: found.kind,
                    };
                    return Err(NetworkError::new(&device, step, None));
                }
                make_veth(
                    plumbed,
                    host,
                    interface,
                    &device,
                    host_name,
                    (Some(found.index), *port_group),
                    container,
                )?;
            }
            InterfaceKind::Ethernet { host_name } => {
                make_veth(
                    plumbed,
                    host,
                    interface,
                    &device,
                    host_name,
                    (None, None),
                    container,
                )?;
            }
            InterfaceKind::Direct { dev, mode } => {
                let step = || NetStep::FindDevice { dev: dev.clone() };
                let lower = host
                    .find(dev)
                    .map_err(|e| NetworkError::new(&device, step(), Some(e)))?
                    .ok_or_else(|| NetworkError::new(&device, step(), None))?;
                let macvlan = Macvlan {
                    name: guest,
                    lower: lower.index,
                    mode: *mode,
                    mac: Some(interface.mac),
                    netns: Some(container),
                    up: true,
                };
                host.create_macvlan(&macvlan).map_err(|e| {
                    let step = NetStep::CreateMacvlan {
                        dev: dev.clone(),
                        mode: *mode,
                    };
                    NetworkError::new(&device, step, Some(e))
                })?;
            }
        }
        configure_inside(inside, interface, &device)?;
    }
    Ok(())
}

/// A veth pair: the host end (up, in `group` and on `master` if any),
/// the peer made in the container under its name and MAC. Records the
/// host end.
fn make_veth(
    plumbed: &mut Plumbed,
    host: &impl Links,
    interface: &InterfaceSpec,
    device: &Device,
    host_name: &str,
    (master, group): (Option<u32>, Option<u32>),
    container: Netns<'_>,
) -> Result<(), NetworkError> {
    let veth = Veth {
        name: host_name,
        master,
        up: true,
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
    let index = match echoed {
        Some(index) => index,
        None => {
            host.find(host_name)
                .map_err(|e| NetworkError::new(device, create_step(), Some(e)))?
                .ok_or_else(|| {
                    let gone = LinkError {
                        errno: Errno::ENODEV,
                        message: None,
                    };
                    NetworkError::new(device, create_step(), Some(gone))
                })?
                .index
        }
    };
    plumbed
        .host_ends
        .push((index, host_name.to_owned(), device.clone()));
    Ok(())
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

/// Inside the container: up (a macvlan is made up; a veth's peer cannot
/// be), then the addresses, then the routes (a gateway must be in a
/// subnet of the interface's addresses).
fn configure_inside(
    inside: &impl Links,
    interface: &InterfaceSpec,
    device: &Device,
) -> Result<(), NetworkError> {
    let name = &interface.guest_name;
    let index = find_inside(inside, device, name)?;
    if interface.kind.host_name().is_some() {
        let up = LinkChange {
            up: Some(true),
            ..LinkChange::default()
        };
        inside.change(index, &up).map_err(|e| {
            NetworkError::new(device, NetStep::SetUp { name: name.clone() }, Some(e))
        })?;
    }
    for address in &interface.addresses {
        inside.add_address(index, address).map_err(|e| {
            let step = NetStep::AddAddress {
                name: name.clone(),
                address: *address,
            };
            NetworkError::new(device, step, Some(e))
        })?;
    }
    for route in &interface.routes {
        inside.add_route(index, route).map_err(|e| {
            let step = NetStep::AddRoute {
                name: name.clone(),
                route: *route,
            };
            NetworkError::new(device, step, Some(e))
        })?;
    }
    Ok(())
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
    for (index, name, device) in plumbed.host_ends {
        let step = || NetStep::DeleteHostEnd {
            host_name: name.clone(),
        };
        // Gone already when the container deleted its end.
        let result = match host.find(&name) {
            Ok(Some(found)) if found.index == index => host.delete(index),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.errno == Errno::ENODEV => {}
            Err(e) => errors.push(NetworkError::new(&device, step(), Some(e))),
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
    use crate::lxc::spec::InterfaceSpec;

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
                    message: None,
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
            let world = self.world.borrow();
            Ok(world.links.get(&(self.ns, name.to_owned())).cloned())
        }

        fn create_veth(&self, veth: &Veth<'_>) -> Result<Option<u32>, LinkError> {
            let group = veth.group.map(|g| format!(" group={g:#x}"));
            self.call(format!(
                "veth {}{} master={:?} up={} peer={} mac={:02x?}",
                veth.name,
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
            Ok(Some(end))
        }

        fn create_macvlan(&self, macvlan: &Macvlan<'_>) -> Result<(), LinkError> {
            self.call(format!(
                "macvlan {} lower={} mode={} up={}",
                macvlan.name,
                macvlan.lower,
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
        spec.host_interfaces = hostdevs.iter().map(|h| h.to_string()).collect();
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
            port_group: None,
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
            port_group: Some(0x4000_0001),
        };
        let spec = spec(
            vec![
                interface(0, port, "eth0"),
                interface(
                    1,
                    InterfaceKind::Ethernet {
                        host_name: "lxv1".into(),
                    },
                    "eth1",
                ),
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
                "host: veth lxv0 group=0x40000001 master=Some(1) up=true peer=eth0 mac=Some([52, 54, 00, 00, 00, 00])",
                "inside: change 6 name=None up=Some(true) move=false",
                "inside: address 6 10.251.0.2/24",
                "inside: route 6 0.0.0.0/0 via 10.251.0.1",
                "host: veth lxv1 master=None up=true peer=eth1 mac=Some([52, 54, 00, 00, 00, 01])",
                "inside: change 8 name=None up=Some(true) move=false",
                "inside: address 8 10.251.1.2/24",
                "inside: route 8 0.0.0.0/0 via 10.251.1.1",
                "host: macvlan eth2 lower=2 mode=bridge up=true",
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
                interface(
                    0,
                    InterfaceKind::Ethernet {
                        host_name: "lxv0".into(),
                    },
                    "eth0",
                ),
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
