//! A VM's network interfaces on the host: a tap device each, made by
//! lxvirtd and handed to qemu as a descriptor (qemu never needs
//! `CAP_NET_ADMIN` nor `/dev/net/tun`).
//!
//! The tap is not persistent: it goes away with the last descriptor, that
//! is when qemu exits, whatever way it ends. Its host side is set up as a
//! container's veth host end is: named by the definition's `<target
//! dev>` (the core names one when absent), put on its bridge (a network's
//! port: in the network's device group, which the port filter knows),
//! with no IPv6 of its own, up unless `<link state='down'>`. Its MAC is
//! the guest's with the first byte `0xfe`, so that a bridge never takes
//! the guest's address for its own. `<bandwidth>` shapes it as it shapes
//! a veth's host end ([`crate::net::shaping`]), before it joins its
//! bridge; the ifb device of `<outbound>` outlives the tap, and goes when
//! the daemon collects the VM's end.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::domain::{DomainDef, Interface, InterfaceSource, LinkState};
use crate::driver::NetworkPort;
use crate::net::link::Netlink;
use crate::net::shaping::{self, BandwidthSpec, ShapeError};
use crate::net::{LinkChange, LinkError, Links as _};

/// What one interface's tap is to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPlan {
    /// The host-side name.
    pub name: String,
    /// The bridge it joins, if any (`type='ethernet'` joins none).
    pub bridge: Option<String>,
    /// Its device group on a filtered network.
    pub group: Option<u32>,
    pub mac: [u8; 6],
    pub up: bool,
    /// Its `<bandwidth>` as token buckets.
    pub bandwidth: Option<BandwidthSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("interface {name}: cannot make its tap device")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "interface {name}: the bridge {bridge} does not exist; create it or fix <source bridge>"
    )]
    NoBridge { name: String, bridge: String },
    #[error("interface {name}")]
    Shape {
        name: String,
        #[source]
        source: Box<ShapeError>,
    },
    #[error("interface {name}: {step}")]
    Netlink {
        name: String,
        step: &'static str,
        #[source]
        source: LinkError,
    },
}

/// The tap of interface number `index` of `def` (plugged: a
/// `type='network'` one reads as its network's bridge), or why a VM
/// cannot have it: the element that is not supported yet.
pub fn plan(
    def: &DomainDef,
    index: usize,
    port: Option<&NetworkPort>,
) -> Result<TapPlan, &'static str> {
    let Some(interface) = def.devices.interfaces.get(index) else {
        return Err("<interface> that is not there");
    };
    if interface.vlan.is_some() {
        return Err("<interface><vlan>");
    }
    if !interface.ips.is_empty() || !interface.routes.is_empty() {
        return Err("<interface><ip> or <route> (the guest sets its own)");
    }
    let bridge = match &interface.source {
        InterfaceSource::Bridge { bridge } => Some(bridge.clone()),
        InterfaceSource::Ethernet { ips, routes } if ips.is_empty() && routes.is_empty() => None,
        InterfaceSource::Ethernet { .. } => return Err("<interface type='ethernet'><source><ip>"),
        InterfaceSource::Network { .. } => {
            return Err("<interface type='network'> of an inactive network");
        }
        InterfaceSource::Direct { .. } => return Err("<interface type='direct'>"),
        InterfaceSource::Kept(_) => {
            return Err("<interface> of a type lxvirt keeps but does not run");
        }
    };
    let mut mac = interface
        .mac
        .map(|m| m.0)
        .ok_or("<interface> without <mac>")?;
    mac[0] = 0xfe;
    Ok(TapPlan {
        name: interface
            .target_dev
            .clone()
            .ok_or("<interface> without <target dev>")?,
        bridge,
        group: port.and_then(|p| p.group),
        mac,
        up: interface.link_state != Some(LinkState::Down),
        bandwidth: shaping::spec(def, index, interface).map_err(|refusal| refusal.element)?,
    })
}

const TUN: &std::ffi::CStr = c"/dev/net/tun";
/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Makes the tap `plan.name` and sets it up; returns its descriptor
/// (close-on-exec: the launcher keeps it open for qemu only). An ifb
/// device of its shaping stays when anything fails later: the caller
/// deletes them by name ([`shaping::release_ifbs`]).
pub fn make(links: &Netlink, plan: &TapPlan) -> Result<OwnedFd, TapError> {
    let fd = open(&plan.name).map_err(|source| TapError::Open {
        name: plan.name.clone(),
        source,
    })?;
    let netlink = |step, source| TapError::Netlink {
        name: plan.name.clone(),
        step,
        source,
    };
    let found = links
        .find(&plan.name)
        .map_err(|e| netlink("cannot find the tap just made", e))?
        .ok_or_else(|| TapError::Open {
            name: plan.name.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    let master = match &plan.bridge {
        Some(bridge) => Some(
            links
                .find(bridge)
                .map_err(|e| netlink("cannot look up its bridge", e))?
                .ok_or_else(|| TapError::NoBridge {
                    name: plan.name.clone(),
                    bridge: bridge.clone(),
                })?
                .index,
        ),
        None => None,
    };
    // Group and addresses first: on a filtered network a port passes
    // nothing it is not known for, from the moment it is on the bridge.
    let quiet = LinkChange {
        mac: Some(plan.mac),
        group: plan.group,
        ipv6_link_local: Some(false),
        ..LinkChange::default()
    };
    links
        .change(found.index, &quiet)
        .map_err(|e| netlink("cannot set its address, group or IPv6 mode", e))?;
    if let Some(bandwidth) = &plan.bandwidth {
        let mut made = Vec::new();
        shaping::shape(links, &plan.name, found.index, bandwidth, &mut made).map_err(|source| {
            TapError::Shape {
                name: plan.name.clone(),
                source: Box::new(source),
            }
        })?;
    }
    let plug = LinkChange {
        master,
        up: Some(plan.up),
        ..LinkChange::default()
    };
    links
        .change(found.index, &plug)
        .map_err(|e| netlink("cannot put it on its bridge and up", e))?;
    Ok(fd)
}

/// The id qemu knows interface number `index` by (`set_link` takes it):
/// its `<alias>`, else `net{index}`, as the command line names it.
pub fn nic_id(interface: &Interface, index: usize) -> String {
    interface
        .alias
        .clone()
        .unwrap_or_else(|| format!("net{index}"))
}

/// Changes the running tap of `old` (number `index` of the VM's live
/// definition `live`, in which `new` took its place) to `new`: the tap's
/// own link up or down, as at a start, and its `<bandwidth>` in place
/// ([`shaping::reshape`]). What the guest sees of the link is qemu's
/// (`set_link`), the caller's part.
pub fn update(
    live: &DomainDef,
    index: usize,
    old: &Interface,
    new: &Interface,
) -> Result<(), UpdateError> {
    let name = new.target_dev.clone().unwrap_or_default();
    let netlink = |step, source| {
        UpdateError::Tap(TapError::Netlink {
            name: name.clone(),
            step,
            source,
        })
    };
    let links = Netlink::open().map_err(|e| netlink("cannot open a netlink socket", e))?;
    if old.link_state != new.link_state {
        let found = links
            .find(&name)
            .map_err(|e| netlink("cannot look up the tap", e))?
            .ok_or_else(|| {
                let gone = LinkError {
                    errno: crate::sys::Errno::ENODEV,
                    message: None,
                };
                netlink("its tap is gone from the host (deleted by hand?)", gone)
            })?;
        let change = LinkChange {
            up: Some(new.link_state != Some(LinkState::Down)),
            ..LinkChange::default()
        };
        links
            .change(found.index, &change)
            .map_err(|e| netlink("cannot set it up or down", e))?;
    }
    if old.bandwidth != new.bandwidth {
        let spec = |interface| shaping::spec(live, index, interface).map_err(UpdateError::Refused);
        let (old_spec, new_spec) = (spec(old)?, spec(new)?);
        shaping::reshape(&links, &name, old_spec.as_ref(), new_spec.as_ref()).map_err(|e| {
            UpdateError::Tap(TapError::Shape {
                name: name.clone(),
                source: Box::new(e),
            })
        })?;
    }
    Ok(())
}

/// Why a running tap could not change.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Tap(TapError),
    #[error("{} {}; {}", .0.element, .0.problem, .0.fix)]
    Refused(shaping::Refusal),
}

/// A new tap device `name` (`IFF_VNET_HDR`: virtio-net offloads).
fn open(name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: a static NUL-terminated path; open returns a new descriptor
    // or -1.
    let raw = unsafe { libc::open(TUN.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    for (slot, byte) in request.name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads (and may write back the name into) a struct
    // ifreq, which `request` is laid out as and outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut request) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::net::HostLinks as _;

    fn vm(xml: &str) -> DomainDef {
        DomainDef::from_xml(&format!(
            "<domain type='qemu'><name>vm</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type></os><devices>{xml}</devices></domain>"
        ))
        .unwrap()
    }

    #[test]
    fn taps_take_the_guest_mac_with_fe_and_refuse_what_a_vm_cannot_have() {
        let plan = plan(
            &vm(
                "<interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br0'/>\
                 <target dev='lxvtap0'/><link state='down'/></interface>",
            ),
            0,
            Some(&NetworkPort {
                bridge: "br0".into(),
                group: Some(7),
                ipv6: false,
            }),
        )
        .unwrap();
        assert_eq!(
            plan,
            TapPlan {
                name: "lxvtap0".into(),
                bridge: Some("br0".into()),
                group: Some(7),
                mac: [0xfe, 0x54, 0, 0x12, 0x34, 0x56],
                up: false,
                bandwidth: None,
            }
        );
        // <bandwidth> as a container's: the same buckets, the same ifb.
        let shaped = vm(
            "<interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br0'/>\
             <target dev='t'/><bandwidth><inbound average='100'/><outbound average='200' burst='64'/></bandwidth></interface>",
        );
        let bandwidth = super::plan(&shaped, 0, None).unwrap().bandwidth.unwrap();
        assert_eq!(bandwidth.inbound.map(|l| l.rate), Some(100_000));
        let outbound = bandwidth.outbound.unwrap();
        assert_eq!(
            (outbound.limit.rate, outbound.limit.burst),
            (200_000, 65_536)
        );
        assert_eq!(
            (outbound.ifb, outbound.alias),
            shaping::ifb_name(&shaped, 0, &shaped.devices.interfaces[0])
        );
        let refused = |xml: &str| super::plan(&vm(xml), 0, None).unwrap_err();
        assert_eq!(
            refused(
                "<interface type='direct'><mac address='52:54:00:12:34:56'/><source dev='eth0' mode='bridge'/></interface>"
            ),
            "<interface type='direct'>"
        );
    }

    /// A real tap on a real bridge, in a network namespace of the test's
    /// own: named, enslaved, grouped, with the given MAC; gone with its
    /// descriptor.
    #[test]
    fn a_tap_is_made_on_its_bridge_and_goes_with_its_descriptor() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let links = Netlink::open().unwrap();
            links
                .create_bridge(&crate::net::BridgeLink {
                    name: "lxvtbr9",
                    mac: None,
                    stp: false,
                    forward_delay: 0,
                    mtu: None,
                })
                .unwrap();
            let plan = TapPlan {
                name: "lxvtap9".into(),
                bridge: Some("lxvtbr9".into()),
                group: Some(0x4000_0009),
                mac: [0xfe, 0x54, 0, 1, 2, 3],
                up: true,
                bandwidth: None,
            };
            let fd = make(&links, &plan).unwrap();
            let shown = std::process::Command::new("ip")
                .args(["-d", "link", "show", "lxvtap9"])
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&shown.stdout);
            assert!(shown.contains("master lxvtbr9"), "{shown}");
            assert!(shown.contains("fe:54:00:01:02:03"), "{shown}");
            assert!(shown.contains("group 1073741833"), "{shown}");
            assert!(shown.contains("tun type tap"), "{shown}");
            drop(fd);
            assert!(links.find("lxvtap9").unwrap().is_none());
            // No bridge: named in the error.
            let error = make(
                &links,
                &TapPlan {
                    bridge: Some("nobr".into()),
                    ..plan
                },
            )
            .unwrap_err();
            assert!(error.to_string().contains("nobr"), "{error}");
        })
        .join()
        .unwrap();
    }

    /// `<bandwidth>` on a real tap, in a network namespace of the test's
    /// own: its egress through the inbound bucket, its ingress redirected
    /// to an ifb device with the outbound one; the ifb outlives the tap
    /// and goes at release.
    #[test]
    fn a_shaped_tap_has_its_buckets_and_its_ifb_goes_at_release() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let links = Netlink::open().unwrap();
            let def = vm(
                "<interface type='ethernet'><mac address='52:54:00:12:34:57'/><target dev='lxvtap8'/>\
                 <bandwidth><inbound average='1000'/><outbound average='2000'/></bandwidth></interface>",
            );
            let plan = plan(&def, 0, None).unwrap();
            let fd = match make(&links, &plan) {
                Ok(fd) => fd,
                // A kernel without tbf or ifb: said so, nothing to test.
                Err(error) if error.to_string().contains("this kernel") => return,
                Err(error) => panic!("{error}"),
            };
            let qdiscs = |dev: &str| {
                let out = std::process::Command::new("tc")
                    .args(["-j", "qdisc", "show", "dev", dev])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let tap = qdiscs("lxvtap8");
            assert!(tap.contains("\"kind\":\"tbf\""), "{tap}");
            assert!(tap.contains("\"rate\":1000000"), "{tap}");
            assert!(tap.contains("\"kind\":\"ingress\""), "{tap}");
            let (ifb, alias) = shaping::ifb_name(&def, 0, &def.devices.interfaces[0]);
            let found = links.find(&ifb).unwrap().unwrap();
            assert_eq!(
                (found.kind.as_deref(), found.alias.as_deref()),
                (Some("ifb"), Some(alias.as_str()))
            );
            let shaped = qdiscs(&ifb);
            assert!(shaped.contains("\"rate\":2000000"), "{shaped}");
            drop(fd);
            assert!(links.find("lxvtap8").unwrap().is_none());
            assert!(links.find(&ifb).unwrap().is_some(), "the ifb outlives the tap");
            assert_eq!(shaping::release_ifbs(&def), Vec::<String>::new());
            assert!(links.find(&ifb).unwrap().is_none());
        })
        .join()
        .unwrap();
    }
}
