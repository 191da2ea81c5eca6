//! Devices attached to and detached from a domain: the running instance
//! (live, through its driver), the persistent definition (config), or
//! both, as libvirt's `AFFECT_*` flags say: interfaces, disks,
//! filesystems and host devices, attached, detached or updated.
//!
//! A live change is in flight in the lifecycle table (`Devices`) until the
//! driver answers: meanwhile other changes are busy, and a stop wins.
//! The persistent definition is checked before the live change and saved
//! after it succeeded, so a refusal changes neither.

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;

use super::define::fill_macs;
use super::{Internal, Manager, Reply};
use crate::core::lifecycle::{Operation, Report};
use crate::core::live::LiveStatus;
use crate::core::types::{AffectFlags, CoreError, Seq};
use crate::domain::{DeviceDef, DomainDef, Hostdev, Interface, InterfaceSource, MacAddr};
use crate::driver::{Request, Response};
use crate::error_chain::error_chain;

/// Attach, detach or update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Attach,
    Detach,
    /// Replace a device the domain has (named as a detach names it) with
    /// the one given.
    Update,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Attach => "attach",
            Change::Detach => "detach",
            Change::Update => "update",
        }
    }
}

/// A finished live change, back on the manager's task.
#[derive(Debug)]
pub(super) struct LiveChange {
    pub uuid: Uuid,
    /// The domain's name when the change began.
    pub domain: String,
    pub generation: u64,
    pub change: Change,
    /// The device as the live definition gets it (attach, update) or
    /// loses it (detach).
    pub device: Box<DeviceDef>,
    /// The persistent definition to save once the live change is done.
    pub config: Option<Box<DomainDef>>,
    pub result: Result<Response, CoreError>,
    pub reply: Reply<Seq>,
}

impl Manager {
    pub(super) fn change_device(
        &mut self,
        uuid: Uuid,
        change: Change,
        xml: &str,
        flags: AffectFlags,
        reply: Reply<Seq>,
    ) {
        if let Err(error) = self.try_change_device(uuid, change, xml, flags, reply) {
            // `try_change_device` gave the reply back with its refusal.
            let (error, reply) = *error;
            let _ = reply.send(Err(error));
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_change_device(
        &mut self,
        uuid: Uuid,
        change: Change,
        xml: &str,
        flags: AffectFlags,
        reply: Reply<Seq>,
    ) -> Result<(), Box<(CoreError, Reply<Seq>)>> {
        macro_rules! refuse {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(error) => return Err(Box::new((error.into(), reply))),
                }
            };
        }
        if flags.0 & !AffectFlags::ALL != 0 {
            return Err(Box::new((CoreError::InvalidFlags(flags.0), reply)));
        }
        let taken = self.macs_in_use(uuid);
        let entry = refuse!(self.entry_mut(uuid));
        let name = entry.name().to_owned();
        let mut device = refuse!(parse(entry.def.domain_type, change, xml));
        let running = entry.runtime.is_some();
        let (live, config) = match flags.0 {
            AffectFlags::CURRENT => (running, !running),
            f => (f & AffectFlags::LIVE != 0, f & AffectFlags::CONFIG != 0),
        };
        if config && !entry.persistent {
            return Err(Box::new((CoreError::NotPersistent(name), reply)));
        }
        if live {
            refuse!(entry.check(Operation::ChangeDevices));
        }
        if let (Change::Attach, DeviceDef::Interface(interface)) = (change, &mut device)
            && interface.mac.is_none()
        {
            // One MAC for both the live and the persistent interface.
            let mut one = DomainDef::clone(&entry.def);
            Arc::make_mut(&mut one.devices).interfaces = vec![interface.clone()];
            fill_macs(
                &mut one,
                None,
                &taken_with(&taken, entry.live_def(), &entry.def),
            );
            *interface = Arc::make_mut(&mut one.devices).interfaces.remove(0);
        }
        // The persistent definition as it will be, checked now.
        let new_config = if config {
            let mut def = entry.def.clone();
            refuse!(apply(&mut def, change, &device, &name, "persistent"));
            refuse!(recheck(&def, &name));
            Some(Box::new(def))
        } else {
            None
        };
        if !live {
            let Some(def) = new_config else {
                return Err(Box::new((CoreError::InvalidFlags(flags.0), reply)));
            };
            refuse!(self.save_config(uuid, *def));
            tracing::info!(domain = %name, change = change.verb(), "device changed in the definition");
            let seq = self.publish_change(uuid, None);
            let _ = reply.send(Ok(seq));
            return Ok(());
        }
        if entry.runtime.is_none() {
            return Err(Box::new((
                CoreError::NotRunning {
                    domain: name,
                    operation: "change its devices",
                },
                reply,
            )));
        }
        let live_def = entry.live_def().clone();
        let driver = refuse!(self.driver_of(uuid));
        let request = match (change, &mut device) {
            (Change::Attach, DeviceDef::Interface(interface)) => {
                let mut probe = live_def.clone();
                refuse!(apply(
                    &mut probe,
                    change,
                    &DeviceDef::Interface(interface.clone()),
                    &name,
                    "running"
                ));
                super::start::name_host_end(interface);
                let mut one = live_def.clone();
                Arc::make_mut(&mut one.devices).interfaces = vec![interface.clone()];
                let mut ports = refuse!(self.network_ports(&one));
                let port = match &interface.source {
                    InterfaceSource::Network { network, .. } => ports.remove(network),
                    _ => None,
                };
                Request::AttachInterface {
                    live: Box::new(live_def),
                    interface: Box::new(interface.clone()),
                    port,
                }
            }
            (Change::Detach, DeviceDef::Interface(_)) => {
                let found = refuse!(find(&live_def, &device, &name, "running"));
                let interface = live_def.devices.interfaces[found].clone();
                device = DeviceDef::Interface(interface.clone());
                Request::DetachInterface {
                    live: Box::new(live_def),
                    interface: Box::new(interface),
                }
            }
            (Change::Update, DeviceDef::Interface(interface)) => {
                let wanted = DeviceDef::Interface(interface.clone());
                let found = refuse!(find(&live_def, &wanted, &name, "running"));
                let old = live_def.devices.interfaces[found].clone();
                // Completed in place: `device` is what the definition gets.
                refuse!(live_interface_update(&old, interface, &name));
                let mut new_live = live_def;
                Arc::make_mut(&mut new_live.devices).interfaces[found] = interface.clone();
                Request::UpdateDevice {
                    live: Box::new(new_live),
                    old: Box::new(DeviceDef::Interface(old)),
                    new: Box::new(DeviceDef::Interface(interface.clone())),
                }
            }
            (Change::Attach, _) => {
                let mut new_live = live_def;
                refuse!(apply(&mut new_live, change, &device, &name, "running"));
                Request::AttachDevice {
                    live: Box::new(new_live),
                    device: Box::new(device.clone()),
                }
            }
            (Change::Detach, _) => {
                let found = refuse!(find(&live_def, &device, &name, "running"));
                device = nth(&live_def, &device, found);
                let mut new_live = live_def;
                refuse!(apply(&mut new_live, change, &device, &name, "running"));
                Request::DetachDevice {
                    live: Box::new(new_live),
                    device: Box::new(device.clone()),
                }
            }
            (Change::Update, _) => {
                let found = refuse!(find(&live_def, &device, &name, "running"));
                let old = nth(&live_def, &device, found);
                let mut new_live = live_def;
                refuse!(apply(&mut new_live, change, &device, &name, "running"));
                Request::UpdateDevice {
                    live: Box::new(new_live),
                    old: Box::new(old),
                    new: Box::new(device.clone()),
                }
            }
        };
        // Checked above; the port just joined leaves again if it fails.
        let begun = self.entry_mut(uuid).and_then(|entry| {
            entry.request(Operation::ChangeDevices)?;
            let runtime = entry.runtime.clone().ok_or(CoreError::NotRunning {
                domain: name.clone(),
                operation: "change its devices",
            })?;
            Ok((runtime, entry.generation))
        });
        let (runtime, generation) = match begun {
            Ok(begun) => begun,
            Err(error) => {
                self.release_attached(&name, change, &device);
                return Err(Box::new((error, reply)));
            }
        };
        let work = driver.request(&name, &runtime, request);
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = work.await.map_err(CoreError::Driver);
            let _ = internal.send(Internal::DeviceChanged(Box::new(LiveChange {
                uuid,
                domain: name,
                generation,
                change,
                device: Box::new(device),
                config: new_config,
                result,
                reply,
            })));
        });
        Ok(())
    }

    pub(super) fn device_changed(&mut self, done: LiveChange) {
        let LiveChange {
            uuid,
            domain,
            generation,
            change,
            mut device,
            config,
            result,
            reply,
        } = done;
        let Ok(entry) = self.entry_mut(uuid) else {
            self.release_attached(&domain, change, &device);
            let _ = reply.send(Err(CoreError::StoppedMeanwhile {
                domain: uuid.to_string(),
            }));
            return;
        };
        let name = entry.name().to_owned();
        let current = entry.generation == generation && entry.report(Report::DevicesChanged);
        if !current {
            self.release_attached(&name, change, &device);
            let _ = reply.send(Err(CoreError::StoppedMeanwhile { domain: name }));
            return;
        }
        let attached_interface =
            change == Change::Attach && matches!(*device, DeviceDef::Interface(_));
        match (result, device.as_mut()) {
            (Ok(Response::Attached { guest_name }), DeviceDef::Interface(interface))
                if attached_interface =>
            {
                interface.guest_dev = Some(guest_name);
            }
            (Ok(Response::Done), _) if !attached_interface => {}
            (Ok(other), _) => {
                self.release_attached(&name, change, &device);
                let _ = reply.send(Err(super::running::unexpected(other)));
                return;
            }
            (Err(error), _) => {
                self.release_attached(&name, change, &device);
                let _ = reply.send(Err(error));
                return;
            }
        }
        let mut live = entry.live_def().clone();
        // Checked before the driver was asked; nothing else changed it since.
        let _ = apply(&mut live, change, &device, &name, "running");
        if let (Change::Detach, DeviceDef::Interface(interface)) = (change, device.as_ref())
            && let (InterfaceSource::Network { network, .. }, Some(mac)) =
                (&interface.source, interface.mac)
        {
            self.network_driver.remove_port(network, mac, &name);
        }
        tracing::info!(domain = %name, change = change.verb(), "device changed in the running instance");
        self.commit_live_change(uuid, live, config, reply);
    }

    /// The end of a live change the driver made: the instance's new live
    /// definition (recorded for a restarted daemon), then the persistent
    /// one if the change was asked of it too.
    pub(super) fn commit_live_change(
        &mut self,
        uuid: Uuid,
        live: DomainDef,
        config: Option<Box<DomainDef>>,
        reply: Reply<Seq>,
    ) {
        let run_dir = self.config.run_dir.clone();
        let entry = match self.entry_mut(uuid) {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let name = entry.name().to_owned();
        let live_xml = live.to_live_xml();
        entry.live = Some(Box::new(live));
        record_live_xml(&run_dir, &name, live_xml);
        if let Some(def) = config
            && let Err(error) = self.save_config(uuid, *def)
        {
            // The instance has it; the definition could not be written.
            let _ = reply.send(Err(error));
            return;
        }
        let seq = self.publish_change(uuid, None);
        let _ = reply.send(Ok(seq));
    }

    /// An attach of `domain`'s that did not happen: its port leaves the
    /// network again.
    fn release_attached(&self, domain: &str, change: Change, device: &DeviceDef) {
        if change == Change::Attach
            && let DeviceDef::Interface(interface) = device
            && let (InterfaceSource::Network { network, .. }, Some(mac)) =
                (&interface.source, interface.mac)
        {
            self.network_driver.remove_port(network, mac, domain);
        }
    }

    pub(super) fn save_config(&mut self, uuid: Uuid, def: DomainDef) -> Result<(), CoreError> {
        self.store.save(&def).map_err(|source| CoreError::Store {
            kind: "domain",
            name: def.name().to_owned(),
            source,
        })?;
        let entry = self.entry_mut(uuid)?;
        entry.def = def;
        Ok(())
    }
}

/// The device `xml` describes. A detach needs only what names an
/// interface: an `<interface>` with its `<mac>` (as virsh's
/// detach-interface sends) is enough, though its other children may be
/// missing.
fn parse(
    kind: crate::domain::DomainType,
    change: Change,
    xml: &str,
) -> Result<DeviceDef, CoreError> {
    let full = DeviceDef::from_xml(kind, xml).map_err(CoreError::InvalidXml);
    match (full, change) {
        (Ok(device), _) => Ok(device),
        (Err(error), Change::Attach | Change::Update) => Err(error),
        (Err(error), Change::Detach) => {
            let mac = crate::domain::xml::parse_str(xml).ok().and_then(|root| {
                (root.name == "interface")
                    .then(|| {
                        root.element("mac")
                            .and_then(|m| m.attr("address"))
                            .map(str::to_owned)
                    })
                    .flatten()
            });
            match mac.and_then(|m| MacAddr::parse(&m).ok()) {
                Some(mac) => Ok(DeviceDef::Interface(Interface {
                    source: InterfaceSource::Ethernet {
                        ips: Vec::new(),
                        routes: Vec::new(),
                    },
                    mac: Some(mac),
                    target_dev: None,
                    guest_dev: None,
                    model: None,
                    ips: Vec::new(),
                    routes: Vec::new(),
                    mtu: None,
                    link_state: None,
                    bandwidth: None,
                    vlan: None,
                    boot_order: None,
                    address: None,
                    alias: None,
                    kept: Vec::new(),
                })),
                None => Err(error),
            }
        }
    }
}

/// The MACs no new interface of this domain may take.
fn taken_with(others: &HashSet<MacAddr>, live: &DomainDef, def: &DomainDef) -> HashSet<MacAddr> {
    others
        .iter()
        .copied()
        .chain(
            [live, def]
                .into_iter()
                .flat_map(|d| d.devices.interfaces.iter().filter_map(|i| i.mac)),
        )
        .collect()
}

/// Adds `device` to `def`, removes the one it names, or replaces that one
/// with it.
fn apply(
    def: &mut DomainDef,
    change: Change,
    device: &DeviceDef,
    domain: &str,
    which: &'static str,
) -> Result<(), CoreError> {
    let refused = |problem: String| CoreError::DeviceRefused {
        domain: domain.to_owned(),
        which,
        problem,
    };
    match change {
        Change::Attach => {
            if let DeviceDef::Interface(interface) = device
                && let Some(mac) = interface.mac
                && def.devices.interfaces.iter().any(|i| i.mac == Some(mac))
            {
                return Err(refused(format!(
                    "it has an interface with MAC {mac} already; give another <mac> or none"
                )));
            }
            if !matches!(device, DeviceDef::Interface(_)) && !matching(def, device).is_empty() {
                return Err(refused(format!(
                    "it has {} already; detach that one first, or update it",
                    describe(device)
                )));
            }
            let devices = Arc::make_mut(&mut def.devices);
            match device.clone() {
                DeviceDef::Interface(i) => devices.interfaces.push(i),
                DeviceDef::Disk(d) => devices.disks.push(d),
                DeviceDef::Filesystem(f) => devices.filesystems.push(f),
                DeviceDef::Hostdev(h) => devices.hostdevs.push(h),
            }
        }
        Change::Detach => {
            let index = find(def, device, domain, which)?;
            let devices = Arc::make_mut(&mut def.devices);
            match device {
                DeviceDef::Interface(_) => drop(devices.interfaces.remove(index)),
                DeviceDef::Disk(_) => drop(devices.disks.remove(index)),
                DeviceDef::Filesystem(_) => drop(devices.filesystems.remove(index)),
                DeviceDef::Hostdev(_) => drop(devices.hostdevs.remove(index)),
            }
        }
        Change::Update => {
            let index = find(def, device, domain, which)?;
            let devices = Arc::make_mut(&mut def.devices);
            match device.clone() {
                DeviceDef::Interface(i) => devices.interfaces[index] = i,
                DeviceDef::Disk(d) => devices.disks[index] = d,
                DeviceDef::Filesystem(f) => devices.filesystems[index] = f,
                DeviceDef::Hostdev(h) => devices.hostdevs[index] = h,
            }
        }
    }
    Ok(())
}

/// Checks `new`, an update of the running interface `old`, for what can
/// change live — its `<link state>` and `<bandwidth>` — and completes it with what the
/// start generated and a caller need not repeat (MAC, host-side and guest
/// names).
fn live_interface_update(
    old: &Interface,
    new: &mut Interface,
    domain: &str,
) -> Result<(), CoreError> {
    new.mac = new.mac.or(old.mac);
    if new.target_dev.is_none() {
        new.target_dev.clone_from(&old.target_dev);
    }
    if new.guest_dev.is_none() {
        new.guest_dev.clone_from(&old.guest_dev);
    }
    let unchanged_but_live = Interface {
        link_state: new.link_state,
        bandwidth: new.bandwidth,
        ..old.clone()
    };
    if unchanged_but_live == *new {
        return Ok(());
    }
    let changed = interface_changes(old, new)
        .into_iter()
        .filter(|element| *element != "<bandwidth>")
        .collect::<Vec<_>>()
        .join(", ");
    Err(CoreError::DeviceRefused {
        domain: domain.to_owned(),
        which: "running",
        problem: format!(
            "only <link state> and <bandwidth> of a running domain's interface change live, and {changed} changed; \
             detach it and attach the new one, or update the definition only (--config) and restart"
        ),
    })
}

/// The elements of an interface that differ between `old` and `new`, as
/// a refusal names them.
fn interface_changes(old: &Interface, new: &Interface) -> Vec<&'static str> {
    [
        (old.source != new.source, "<source>"),
        (old.mac != new.mac, "<mac>"),
        (old.target_dev != new.target_dev, "<target dev>"),
        (old.guest_dev != new.guest_dev, "<guest dev>"),
        (old.model != new.model, "<model>"),
        (old.ips != new.ips, "<ip>"),
        (old.routes != new.routes, "<route>"),
        (old.mtu != new.mtu, "<mtu>"),
        (old.bandwidth != new.bandwidth, "<bandwidth>"),
        (old.vlan != new.vlan, "<vlan>"),
        (old.boot_order != new.boot_order, "<boot>"),
        (old.address != new.address, "<address>"),
        (old.alias != new.alias, "<alias>"),
        (old.kept != new.kept, "elements lxvirt keeps as written"),
    ]
    .into_iter()
    .filter_map(|(changed, element)| changed.then_some(element))
    .collect()
}

/// The indices, in their list of `def`'s devices, of those `wanted` names:
/// an interface by MAC, else by host-side name, else by type and source;
/// a disk by its target device; a filesystem by its mount point; a host
/// device by what it passes.
fn matching(def: &DomainDef, wanted: &DeviceDef) -> Vec<usize> {
    fn positions<T>(list: &[T], same: impl Fn(&T) -> bool) -> Vec<usize> {
        list.iter()
            .enumerate()
            .filter(|(_, item)| same(item))
            .map(|(index, _)| index)
            .collect()
    }
    let devices = &def.devices;
    match wanted {
        DeviceDef::Interface(w) => {
            positions(&devices.interfaces, |i| match (w.mac, &w.target_dev) {
                (Some(mac), _) => i.mac == Some(mac),
                (None, Some(dev)) => i.target_dev.as_ref() == Some(dev),
                (None, None) => i.source == w.source,
            })
        }
        DeviceDef::Disk(w) => positions(&devices.disks, |d| d.target_dev == w.target_dev),
        DeviceDef::Filesystem(w) => positions(&devices.filesystems, |f| f.target == w.target),
        DeviceDef::Hostdev(w) => positions(&devices.hostdevs, |h| match (h, w) {
            (Hostdev::Storage { block: a }, Hostdev::Storage { block: b }) => a == b,
            (Hostdev::Misc { char_dev: a }, Hostdev::Misc { char_dev: b }) => a == b,
            (Hostdev::Net { interface: a, .. }, Hostdev::Net { interface: b, .. }) => a == b,
            (a @ Hostdev::Usb { .. }, b) => a == b,
            _ => false,
        }),
    }
}

/// The device `wanted` names, as `def` has it at `index`.
fn nth(def: &DomainDef, wanted: &DeviceDef, index: usize) -> DeviceDef {
    let devices = &def.devices;
    match wanted {
        DeviceDef::Interface(_) => DeviceDef::Interface(devices.interfaces[index].clone()),
        DeviceDef::Disk(_) => DeviceDef::Disk(devices.disks[index].clone()),
        DeviceDef::Filesystem(_) => DeviceDef::Filesystem(devices.filesystems[index].clone()),
        DeviceDef::Hostdev(_) => DeviceDef::Hostdev(devices.hostdevs[index].clone()),
    }
}

/// A device as messages name it.
fn describe(device: &DeviceDef) -> String {
    match device {
        DeviceDef::Interface(i) => match i.mac {
            Some(mac) => format!("an interface with MAC {mac}"),
            None => "such an interface".into(),
        },
        DeviceDef::Disk(d) => format!("a <disk> with target '{}'", d.target_dev),
        DeviceDef::Filesystem(f) => {
            format!("a <filesystem> with target '{}'", f.target.display())
        }
        DeviceDef::Hostdev(h) => match h {
            Hostdev::Storage { block } => format!("a <hostdev> of '{}'", block.display()),
            Hostdev::Misc { char_dev } => format!("a <hostdev> of '{}'", char_dev.display()),
            Hostdev::Net { interface, .. } => format!("a <hostdev> of interface '{interface}'"),
            Hostdev::Usb { .. } => "that USB <hostdev>".into(),
        },
    }
}

/// The one device of `def` that `wanted` names.
fn find(
    def: &DomainDef,
    wanted: &DeviceDef,
    domain: &str,
    which: &'static str,
) -> Result<usize, CoreError> {
    let refused = |problem: String| CoreError::DeviceRefused {
        domain: domain.to_owned(),
        which,
        problem,
    };
    let interface = matches!(wanted, DeviceDef::Interface(_));
    match matching(def, wanted)[..] {
        [index] => Ok(index),
        [] if interface => Err(refused(
            "it has no such interface; see 'lxvirt domiflist' and name it by <mac>".into(),
        )),
        [] => Err(refused(format!(
            "it has no {}; see 'lxvirt dumpxml'",
            describe(wanted)
                .trim_start_matches("a ")
                .trim_start_matches("that ")
        ))),
        ref matches => Err(refused(format!(
            "{} interfaces match; name the one to detach by its <mac>",
            matches.len()
        ))),
    }
}

/// The whole definition, checked as a define would check it (names used
/// twice, a guest name equal to a host device's…).
fn recheck(def: &DomainDef, domain: &str) -> Result<(), CoreError> {
    DomainDef::from_xml(&def.to_xml())
        .map(drop)
        .map_err(|error| CoreError::DeviceRefused {
            domain: domain.to_owned(),
            which: "persistent",
            problem: error.to_string(),
        })
}

/// The live status file gets the new live definition, so a restarted
/// daemon knows the instance's devices.
fn record_live_xml(run_dir: &std::path::Path, name: &str, live_xml: String) {
    let path = LiveStatus::path(run_dir, name);
    let saved = LiveStatus::load(&path).and_then(|mut status| {
        status.live_xml = live_xml;
        status.save(run_dir)
    });
    if let Err(error) = saved {
        tracing::warn!(domain = %name, error = %error_chain(&error), "cannot record the device change in the live status");
    }
}
