//! `<bandwidth>` on an interface's host side: a container's veth host end
//! or a VM's tap. Either way what leaves that device (its egress) is what
//! the guest receives, `<inbound>`, and what arrives on it (its ingress)
//! is what the guest sends, `<outbound>`. The first goes through a token
//! bucket (the tbf qdisc) on the device itself; the second is redirected
//! to an ifb device whose egress has the other bucket, since tc shapes
//! only what leaves a device.
//!
//! The ifb device is the one thing shaping leaves on the host when the
//! shaped device goes away (with the container's namespace, with qemu's
//! tap descriptor): whoever ends the domain deletes it
//! ([`release_ifbs`]). Its name is the same at every start (a hash of the
//! domain's UUID and the interface's MAC), so that one left behind is
//! found and replaced; its alias says whose it is, and only a device
//! with that alias is ever replaced or deleted.

use serde::{Deserialize, Serialize};

use super::{FoundLink, Ifb, LinkError, Links, Netlink, RateLimit};
use crate::domain::{BandwidthRate, DomainDef, Interface};
use crate::sys::Errno;

/// `<bandwidth>` as token buckets on the host side of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthSpec {
    /// On the host side's egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<RateLimit>,
    /// On the egress of an ifb device that the host side's ingress is
    /// redirected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundSpec>,
}

/// Outbound shaping: the ifb device's name and alias, and the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundSpec {
    /// The same for every start of the domain's interface, so that a
    /// device left behind is found (and replaced) by the next start.
    pub ifb: String,
    /// Names the domain and the interface; a device of `ifb`'s name is
    /// replaced only when it has this alias.
    pub alias: String,
    pub limit: RateLimit,
}

/// Which traffic a bucket limits: towards the guest or from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    /// Its element in `<bandwidth>`.
    pub fn element(self) -> &'static str {
        match self {
            Direction::Inbound => "<inbound>",
            Direction::Outbound => "<outbound>",
        }
    }
}

/// A device's MTU unless `<mtu>` says otherwise.
const DEFAULT_MTU: u32 = 1500;
/// What a frame adds to the MTU: the Ethernet header and a VLAN tag.
const FRAME_OVERHEAD: u32 = 18;
/// The bucket without `burst=`, at least: big enough for a whole
/// segmentation-offload packet (64 KiB), so that the kernel need not cut
/// them up to pass them.
const DEFAULT_BURST: u64 = 64 * 1024;

/// Why `<bandwidth>` cannot be applied: the element, the problem, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub element: &'static str,
    pub problem: &'static str,
    pub fix: &'static str,
}

/// `<bandwidth>` of `interface` (number `index` of `def`) as token
/// buckets.
pub fn spec(
    def: &DomainDef,
    index: usize,
    interface: &Interface,
) -> Result<Option<BandwidthSpec>, Refusal> {
    let Some(bandwidth) = &interface.bandwidth else {
        return Ok(None);
    };
    if bandwidth.inbound.is_some_and(|r| r.floor.is_some()) {
        return Err(Refusal {
            element: "<inbound floor=…>",
            problem: "needs the QoS of a virtual network, which lxvirt does not run yet",
            fix: "remove floor=",
        });
    }
    let frame = interface.mtu.map_or(DEFAULT_MTU, u32::from) + FRAME_OVERHEAD;
    Ok(Some(BandwidthSpec {
        inbound: bandwidth.inbound.and_then(|r| rate_limit(&r, frame)),
        outbound: bandwidth
            .outbound
            .and_then(|r| rate_limit(&r, frame))
            .map(|limit| {
                let (ifb, alias) = ifb_name(def, index, interface);
                OutboundSpec { ifb, alias, limit }
            }),
    }))
}

/// One direction of `<bandwidth>` as a token bucket, in libvirt's units:
/// `average` and `peak` in kilobytes (1000 bytes) per second, `burst` in
/// kibibytes (the units tc gives them when libvirt writes `kbps` and
/// `kb`). `None` without `average` (a `floor` alone).
///
/// - The bucket is `burst`, else 10 ms at the average rate or
///   [`DEFAULT_BURST`], whichever is more; never less than one frame of
///   `frame` bytes, which could otherwise never pass.
/// - `peak` above the average gets a bucket of one frame, so that the
///   rate holds packet by packet; equal to it, it changes nothing.
/// - Up to 50 ms of traffic at the average rate, on top of the bucket, may
///   wait in the queue before packets are dropped.
fn rate_limit(rate: &BandwidthRate, frame: u32) -> Option<RateLimit> {
    let average = rate.average? * 1000;
    let burst = rate
        .burst
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| DEFAULT_BURST.max(average / 100))
        .max(u64::from(frame));
    let burst = u32::try_from(burst).unwrap_or(u32::MAX);
    let queue = u64::from(burst) + average / 20;
    Some(RateLimit {
        rate: average,
        burst,
        peak: rate
            .peak
            .map(|peak| peak * 1000)
            .filter(|&peak| peak > average),
        peak_burst: frame,
        queue: u32::try_from(queue).unwrap_or(u32::MAX),
    })
}

/// The ifb device that shapes the outbound traffic of `interface`
/// (number `index` of `def`), as (name, alias). The name is the same at
/// every start (`lxvq` and 8 hex digits of a hash of the domain's UUID
/// and the interface's MAC, which the core gives every interface, else
/// its index), so that a device left behind is found; the alias says
/// whose it is, and only a device with it is ever deleted.
pub fn ifb_name(def: &DomainDef, index: usize, interface: &Interface) -> (String, String) {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(def.uuid.as_bytes());
    let which = match interface.mac {
        Some(mac) => {
            hasher.update(mac.0);
            mac.to_string()
        }
        None => {
            hasher.update((index as u64).to_le_bytes());
            format!("#{}", index + 1)
        }
    };
    let digest = hasher.finalize();
    (
        format!(
            "lxvq{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        ),
        format!(
            "lxvirt: outbound shaping of domain {} interface {which}",
            def.uuid
        ),
    )
}

/// The ifb devices that `def`'s interfaces shape their outbound traffic
/// through, as (name, alias): what the host may hold for the domain
/// beyond its interfaces' own devices.
pub fn ifb_names(def: &DomainDef) -> Vec<(String, String)> {
    def.devices
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, interface)| has_ifb(interface))
        .map(|(index, interface)| ifb_name(def, index, interface))
        .collect()
}

/// Whether `interface`'s outbound traffic goes through an ifb device: an
/// `<outbound>` with an average (a floor alone shapes nothing).
pub fn has_ifb(interface: &Interface) -> bool {
    interface
        .bandwidth
        .is_some_and(|b| b.outbound.is_some_and(|o| o.average.is_some()))
}

/// What shaping was doing when a [`ShapeError`] happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeStep {
    /// A token bucket on `name`'s egress.
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
    DeleteIfb {
        name: String,
    },
    /// Finding a running interface's host side, to change it.
    FindHostEnd {
        host_name: String,
    },
    /// Ending one direction's shaping on a running interface.
    EndShaping {
        name: String,
        direction: Direction,
    },
}

impl ShapeStep {
    /// What went wrong with the kernel's `errno` (`None`: a refusal of
    /// lxvirt's own), and the fix where there is one.
    pub fn problem(&self, errno: Option<Errno>) -> String {
        let missing = errno == Some(Errno::ENOENT) || errno == Some(Errno::EOPNOTSUPP);
        match self {
            ShapeStep::Shape { name, direction } if missing => format!(
                "cannot shape the traffic of '{name}' for {}: this kernel has no tbf qdisc (CONFIG_NET_SCH_TBF, module sch_tbf); load it or remove <bandwidth>",
                direction.element()
            ),
            ShapeStep::Shape { name, direction } => format!(
                "cannot shape the traffic of '{name}' with a tbf qdisc for {}; check <bandwidth>",
                direction.element()
            ),
            ShapeStep::CreateIfb { name } if errno == Some(Errno::EOPNOTSUPP) => format!(
                "cannot create the ifb device '{name}' that <outbound> shaping goes through: this kernel has no ifb devices (CONFIG_IFB, module ifb); load it or remove <outbound>"
            ),
            ShapeStep::CreateIfb { name } => format!(
                "cannot create the ifb device '{name}' that <outbound> shaping goes through"
            ),
            ShapeStep::IfbNameTaken { name } => format!(
                "the host has a device named '{name}' that is not this interface's; <outbound> shaping needs that name for its ifb device: rename or remove that device"
            ),
            ShapeStep::Redirect { host_name, ifb } if missing => format!(
                "cannot redirect what arrives on '{host_name}' to '{ifb}' for <outbound> shaping: this kernel lacks the ingress qdisc, the u32 filter or the mirred action (modules sch_ingress, cls_u32, act_mirred); load them or remove <outbound>"
            ),
            ShapeStep::Redirect { host_name, ifb } => format!(
                "cannot redirect what arrives on '{host_name}' to '{ifb}' for <outbound> shaping"
            ),
            ShapeStep::DeleteIfb { name } => format!("cannot delete the ifb device '{name}'"),
            ShapeStep::FindHostEnd { host_name } if errno.is_none() => format!(
                "its host end '{host_name}' is gone from the host (deleted by hand?); restart the domain to make it again"
            ),
            ShapeStep::FindHostEnd { host_name } => {
                format!("cannot look up its host end '{host_name}'")
            }
            ShapeStep::EndShaping { name, direction } => format!(
                "cannot end the shaping of '{name}' for {}",
                direction.element()
            ),
        }
    }
}

/// A shaping step that failed, with the kernel's refusal if it was one
/// (`None`: a refusal of lxvirt's own). Its cause is the errno; its own
/// words carry the kernel's extended message, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub step: ShapeStep,
    pub kernel: Option<LinkError>,
}

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kernel = self.kernel.as_ref();
        write!(
            f,
            "{}{}",
            self.step.problem(kernel.map(|e| e.errno)),
            kernel_says(kernel)
        )
    }
}

impl std::error::Error for ShapeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kernel
            .as_ref()
            .map(|e| &e.errno as &(dyn std::error::Error + 'static))
    }
}

/// What the kernel's extended message does not say already.
fn kernel_says(error: Option<&LinkError>) -> String {
    match error.and_then(|e| e.message.as_deref()) {
        Some(message) => format!(" (the kernel says: {message})"),
        None => String::new(),
    }
}

fn failed(step: ShapeStep) -> impl FnOnce(LinkError) -> ShapeError {
    move |e| ShapeError {
        step,
        kernel: Some(e),
    }
}

/// Shapes the host side `host_name` (`host_index`) as `spec` says. The
/// ifb devices it makes are pushed to `made` before anything else can
/// fail, for the caller to delete when the start goes no further.
pub fn shape(
    host: &impl Links,
    host_name: &str,
    host_index: u32,
    spec: &BandwidthSpec,
    made: &mut Vec<u32>,
) -> Result<(), ShapeError> {
    if let Some(limit) = &spec.inbound {
        host.limit_egress(host_index, limit)
            .map_err(failed(ShapeStep::Shape {
                name: host_name.to_owned(),
                direction: Direction::Inbound,
            }))?;
    }
    if let Some(outbound) = &spec.outbound {
        shape_outbound(host, host_name, host_index, outbound, made)?;
    }
    Ok(())
}

/// Outbound shaping of `host_name` (`host_index`): its ifb device with
/// the token bucket, and the host side's ingress redirected to it.
fn shape_outbound(
    host: &impl Links,
    host_name: &str,
    host_index: u32,
    outbound: &OutboundSpec,
    made: &mut Vec<u32>,
) -> Result<(), ShapeError> {
    let ifb = make_ifb(host, &outbound.ifb, &outbound.alias)?;
    made.push(ifb);
    host.limit_egress(ifb, &outbound.limit)
        .map_err(failed(ShapeStep::Shape {
            name: outbound.ifb.clone(),
            direction: Direction::Outbound,
        }))?;
    host.redirect_ingress(host_index, ifb)
        .map_err(failed(ShapeStep::Redirect {
            host_name: host_name.to_owned(),
            ifb: outbound.ifb.clone(),
        }))
}

/// Whether `link` is the ifb device whose alias is `alias`: only such a
/// device is lxvirt's to replace or delete.
fn is_ifb_of(link: &FoundLink, alias: &str) -> bool {
    link.kind.as_deref() == Some("ifb") && link.alias.as_deref() == Some(alias)
}

/// The ifb device `name`, up; returns its index. One of that name and
/// `alias` is this interface's, left behind: it is replaced. Any other of
/// that name is not touched.
fn make_ifb(host: &impl Links, name: &str, alias: &str) -> Result<u32, ShapeError> {
    let step = || ShapeStep::CreateIfb {
        name: name.to_owned(),
    };
    match host.find(name).map_err(failed(step()))? {
        None => {}
        Some(left) if is_ifb_of(&left, alias) => {
            host.delete(left.index).map_err(failed(step()))?;
        }
        Some(_) => {
            return Err(ShapeError {
                step: ShapeStep::IfbNameTaken {
                    name: name.to_owned(),
                },
                kernel: None,
            });
        }
    }
    host.create_ifb(&Ifb { name, alias })
        .map_err(failed(step()))
}

/// Changes the shaping of a running interface, whose host side is
/// `host_name`, from `old` to `new`, to what [`shape`] makes of `new` at
/// a start: only the direction that changed is touched, so the other
/// keeps its bucket. Ending the outbound shaping deletes its ifb device.
pub fn reshape(
    host: &impl Links,
    host_name: &str,
    old: Option<&BandwidthSpec>,
    new: Option<&BandwidthSpec>,
) -> Result<(), ShapeError> {
    let find_step = || ShapeStep::FindHostEnd {
        host_name: host_name.to_owned(),
    };
    let host_index = host
        .find(host_name)
        .map_err(failed(find_step()))?
        .ok_or_else(|| ShapeError {
            step: find_step(),
            kernel: None,
        })?
        .index;
    let inbound = |b: Option<&BandwidthSpec>| b.and_then(|b| b.inbound);
    let (old_in, new_in) = (inbound(old), inbound(new));
    if old_in != new_in {
        let step = match new_in {
            Some(_) => ShapeStep::Shape {
                name: host_name.to_owned(),
                direction: Direction::Inbound,
            },
            None => ShapeStep::EndShaping {
                name: host_name.to_owned(),
                direction: Direction::Inbound,
            },
        };
        host.reshape_egress(host_index, new_in.as_ref())
            .map_err(failed(step))?;
    }
    let outbound = |b: Option<&BandwidthSpec>| b.and_then(|b| b.outbound.clone());
    let (old_out, new_out) = (outbound(old), outbound(new));
    if old_out == new_out {
        return Ok(());
    }
    let ours = |spec: &OutboundSpec| -> Result<Option<u32>, ShapeError> {
        Ok(host
            .find(&spec.ifb)
            .map_err(failed(ShapeStep::CreateIfb {
                name: spec.ifb.clone(),
            }))?
            .filter(|l| is_ifb_of(l, &spec.alias))
            .map(|l| l.index))
    };
    // The same device (its name follows the domain and the MAC): a new
    // bucket in place.
    if let (Some(old_out), Some(new_out)) = (&old_out, &new_out)
        && old_out.ifb == new_out.ifb
        && let Some(ifb) = ours(new_out)?
    {
        return host
            .reshape_egress(ifb, Some(&new_out.limit))
            .map_err(failed(ShapeStep::Shape {
                name: new_out.ifb.clone(),
                direction: Direction::Outbound,
            }));
    }
    if let Some(old_out) = &old_out {
        host.end_redirect(host_index)
            .map_err(failed(ShapeStep::EndShaping {
                name: host_name.to_owned(),
                direction: Direction::Outbound,
            }))?;
        delete_ifb(host, &old_out.ifb, &old_out.alias)?;
    }
    let Some(new_out) = new_out else {
        return Ok(());
    };
    let mut made = Vec::new();
    let shaped = shape_outbound(host, host_name, host_index, &new_out, &mut made);
    if shaped.is_err() {
        let _ = host.end_redirect(host_index);
        for index in made {
            let _ = host.delete(index);
        }
    }
    shaped
}

/// Deletes the ifb device `name` if it is the one `alias` names (another
/// of that name is not lxvirt's to delete); gone already is fine.
pub fn delete_ifb(host: &impl Links, name: &str, alias: &str) -> Result<(), ShapeError> {
    let step = || ShapeStep::DeleteIfb {
        name: name.to_owned(),
    };
    match host.find(name).map_err(failed(step()))? {
        Some(link) if is_ifb_of(&link, alias) => match host.delete(link.index) {
            Err(e) if e.errno != Errno::ENODEV => Err(failed(step())(e)),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Deletes the ifb devices that `live`'s interfaces shaped their outbound
/// traffic through, once the domain is gone. Returns what could not be
/// deleted.
pub fn release_ifbs(live: &DomainDef) -> Vec<String> {
    let names = ifb_names(live);
    if names.is_empty() {
        return Vec::new();
    }
    let host = match Netlink::open() {
        Ok(host) => host,
        Err(e) => return vec![format!("cannot delete its ifb devices: {e}")],
    };
    names
        .iter()
        .filter_map(|(name, alias)| delete_ifb(&host, name, alias).err())
        .map(|e| crate::error_chain::error_chain(&e))
        .collect()
}
