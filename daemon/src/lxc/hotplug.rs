//! Interfaces plugged into and out of a running container, from the
//! daemon: it opens the container's network namespace through
//! `/proc/INIT/ns/net` and speaks rtnetlink there, as the monitor does at
//! start. The plumbing is the start's own (one interface's spec, made by
//! the same conversion). A veth pair and a macvlan go with the namespace
//! when the container ends; the one thing such an interface leaves on the
//! host, the ifb device of its outbound shaping, is deleted at detach and
//! by [`shaping::release_ifbs`] when the container ends.

use std::os::fd::AsFd;
use std::path::Path;

use crate::domain::{DomainDef, Interface, InterfaceSource, LinkState};
use crate::driver::NetworkPort;
use crate::lxc::convert::{self, ConvertSettings};
use crate::lxc::network::{Device, NetworkError, delete_ifb, plumb, reshape};
use crate::net::shaping;
use crate::net::{LinkChange, LinkError, Links, Netlink, Netns};
use crate::sys::linux;

/// Why an interface could not be plugged in or out.
#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error("cannot open the container's network namespace: {0}")]
    Namespace(crate::sys::Errno),
    #[error(transparent)]
    Netlink(#[from] LinkError),
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    #[error(transparent)]
    Plumb(#[from] NetworkError),
    #[error("the container has no interface with MAC {0}")]
    NotFound(String),
}

/// The first `ethN` no interface of the namespace has.
fn free_guest_name(inside: &Netlink) -> Result<String, LinkError> {
    let names: Vec<String> = inside.links()?.into_iter().map(|l| l.name).collect();
    Ok((0u32..)
        .map(|n| format!("eth{n}"))
        .find(|name| !names.contains(name))
        .unwrap_or_default())
}

/// Plugs `interface` into the container whose init is `init_pid`, whose
/// running definition is `live`; returns its name inside.
pub fn attach(
    live: &DomainDef,
    interface: &Interface,
    port: Option<&NetworkPort>,
    init_pid: i32,
    settings: &ConvertSettings,
) -> Result<String, HotplugError> {
    let netns = linux::open_namespace(Path::new(&format!("/proc/{init_pid}/ns/net")))
        .map_err(HotplugError::Namespace)?;
    let own =
        linux::open_namespace(Path::new("/proc/self/ns/net")).map_err(HotplugError::Namespace)?;
    let inside = Netlink::open_in(netns.as_fd())?;
    let host = Netlink::open()?;
    let mut one = live.clone();
    let mut interface = interface.clone();
    if interface.guest_dev.is_none() {
        interface.guest_dev = Some(free_guest_name(&inside)?);
    }
    let guest_name = interface.guest_dev.clone().unwrap_or_default();
    let devices = std::sync::Arc::make_mut(&mut one.devices);
    devices.interfaces = vec![interface];
    devices.hostdevs.clear();
    let networks = port
        .map(|p| {
            let network = match &one.devices.interfaces[0].source {
                crate::domain::InterfaceSource::Network { network, .. } => network.clone(),
                _ => String::new(),
            };
            [(network, p.clone())].into_iter().collect()
        })
        .unwrap_or_default();
    let plugged = crate::driver::plug_networks(&one, &networks);
    // The start's own conversion, for this one interface.
    let mut spec = convert::container_spec(&plugged, settings, &|_| None, None)?;
    convert::set_port_groups(&mut spec, &one, &networks);
    plumb(
        &spec,
        &host,
        &inside,
        Netns::Fd(netns.as_fd()),
        Netns::Fd(own.as_fd()),
    )?;
    Ok(guest_name)
}

/// Unplugs `interface` (found inside by its MAC) of the container whose
/// running definition is `live`: deleting the container's end takes a
/// veth's host end with it, and then its ifb device goes.
pub fn detach(live: &DomainDef, interface: &Interface, init_pid: i32) -> Result<(), HotplugError> {
    let (inside, index) = find_inside(interface, init_pid)?;
    inside.delete(index)?;
    if shaping::has_ifb(interface) {
        let host = Netlink::open()?;
        let position = position(live, interface);
        let (name, alias) = shaping::ifb_name(live, position, interface);
        delete_ifb(&host, &device(position, interface), &name, &alias)?;
    }
    Ok(())
}

/// Changes the running `old` interface of the container whose running
/// definition (with `new` in its place) is `live` to `new`: its `<link
/// state>` and its `<bandwidth>`, the only parts that change live (the
/// core let nothing else differ).
pub fn update(
    live: &DomainDef,
    old: &Interface,
    new: &Interface,
    init_pid: i32,
) -> Result<(), HotplugError> {
    if old.link_state != new.link_state {
        set_link_state(new, init_pid)?;
    }
    if old.bandwidth == new.bandwidth {
        return Ok(());
    }
    // The parser refuses <bandwidth> on a 'direct' interface, and the
    // core a change of MAC: both specs name the same ifb.
    let position = position(live, new);
    let old_spec = convert::live_bandwidth(live, position, old)?;
    let new_spec = convert::live_bandwidth(live, position, new)?;
    let host_name = new.target_dev.clone().unwrap_or_default();
    let host = Netlink::open()?;
    reshape(
        &host,
        &device(position, new),
        &host_name,
        old_spec.as_ref(),
        new_spec.as_ref(),
    )?;
    Ok(())
}

/// Where `interface` (by its MAC) is in `live`'s interfaces (0 when it is
/// not there, which only names it in messages).
fn position(live: &DomainDef, interface: &Interface) -> usize {
    live.devices
        .interfaces
        .iter()
        .position(|i| i.mac.is_some() && i.mac == interface.mac)
        .unwrap_or(0)
}

/// How a refusal names interface number `index`.
fn device(index: usize, interface: &Interface) -> Device {
    Device::Interface {
        index,
        type_name: interface.source.type_str().to_owned(),
        source: interface
            .target_dev
            .as_ref()
            .map(|t| format!("host end '{t}'")),
    }
}

/// Sets the running `interface`'s link up or down as its `<link state>`
/// says (up when absent), inside and, for a veth, on its host end, as a
/// start leaves them. A macvlan's host side is its parent device, which
/// is not the container's to change.
pub fn set_link_state(interface: &Interface, init_pid: i32) -> Result<(), HotplugError> {
    let change = LinkChange {
        up: Some(interface.link_state != Some(LinkState::Down)),
        ..LinkChange::default()
    };
    let (inside, index) = find_inside(interface, init_pid)?;
    inside.change(index, &change)?;
    if !matches!(interface.source, InterfaceSource::Direct { .. })
        && let Some(host_name) = &interface.target_dev
    {
        let host = Netlink::open()?;
        if let Some(link) = host.find(host_name)? {
            host.change(link.index, &change)?;
        }
    }
    Ok(())
}

/// The container's network namespace, and the index there of the link
/// with `interface`'s MAC.
fn find_inside(interface: &Interface, init_pid: i32) -> Result<(Netlink, u32), HotplugError> {
    let netns = linux::open_namespace(Path::new(&format!("/proc/{init_pid}/ns/net")))
        .map_err(HotplugError::Namespace)?;
    let inside = Netlink::open_in(netns.as_fd())?;
    let mac = interface.mac.map(|m| m.0);
    let found = inside
        .links()?
        .into_iter()
        .find(|l| mac.is_some() && l.mac == mac)
        .ok_or_else(|| {
            HotplugError::NotFound(interface.mac.map(|m| m.to_string()).unwrap_or_default())
        })?;
    Ok((inside, found.index))
}
