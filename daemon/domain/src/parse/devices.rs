//! `<devices>`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use super::super::addr;
use super::super::def::*;
use super::super::error::DomainError;
use super::super::kept;
use super::super::values::{DomainName, MacAddr, check_ifname, check_name};
use super::super::xml::{Attribute, Element};
use super::Ctx;
use super::addresses::{
    check_family, ifname, ifname_child, ip_attr, mac_element, mtu_element, prefix_attr, req_ip,
    same_family,
};
use super::helpers::*;
use super::kept::{parse_kept, split_kept};
use super::vm;

/// One device of a domain of type `kind`, as `AttachDevice`,
/// `DetachDevice` and `UpdateDevice` take it: an interface, a disk, a
/// filesystem (not the root) or a host device.
pub fn parse_device(kind: DomainType, el: &Element) -> Result<DeviceDef> {
    let ctx = Ctx { kind };
    if el.namespace.is_some() {
        return Err(not_a_device(el));
    }
    match el.name.as_str() {
        "interface" => {
            let iface = parse_interface(ctx, el)?;
            InterfaceNames::default().check(el, &iface)?;
            Ok(DeviceDef::Interface(iface))
        }
        "disk" => Ok(DeviceDef::Disk(parse_disk(ctx, el)?)),
        "filesystem" => {
            ctx.lxc_only(el)?;
            let fs = parse_filesystem(el)?;
            if fs.target == Path::new("/") {
                let pos = el.element("target").map_or(el.pos, |t| t.pos);
                return Err(DomainError::invalid(
                    pos,
                    "filesystem",
                    "the root filesystem cannot be attached, detached or updated",
                    "change the root with 'lxvirt define' and restart the domain",
                ));
            }
            Ok(DeviceDef::Filesystem(fs))
        }
        "hostdev" => {
            ctx.lxc_only(el)?;
            Ok(DeviceDef::Hostdev(parse_hostdev(el)?))
        }
        _ => Err(not_a_device(el)),
    }
}

fn not_a_device(el: &Element) -> DomainError {
    DomainError::invalid(
        el.pos,
        &el.qname,
        format!("<{}> cannot be attached, detached or updated", el.qname),
        "give one <interface>, <disk>, <filesystem> or <hostdev> element",
    )
}

pub(super) fn parse_devices(ctx: Ctx, el: &Element) -> Result<Devices> {
    let full = el;
    let (el, kept) = split_kept(ctx, el, kept::DEVICES, &["filesystem", "hostdev"])?;
    let el = &el;
    check_attrs(el, &[])?;
    check_children(
        el,
        &["emulator"],
        &[
            "filesystem",
            "disk",
            "interface",
            "hostdev",
            "serial",
            "console",
        ],
    )?;
    let mut d = Devices {
        emulator: el.element("emulator").map(text_path).transpose()?,
        kept,
        ..Devices::default()
    };
    vm::device_fields(&mut d, full)?;
    let mut fs_targets: HashSet<PathBuf> = HashSet::new();
    let mut disk_targets: HashSet<String> = HashSet::new();
    let mut interface_names = InterfaceNames::default();
    let mut net_hostdevs: HashSet<String> = HashSet::new();
    let mut console_ports = PortAssigner::default();
    let mut serial_ports = PortAssigner::default();
    let mut consoles = Vec::new();
    let mut serials = Vec::new();
    let mut boot_orders: HashSet<u32> = HashSet::new();
    let mut boot_order = |child: &Element, order: Option<u32>| match order {
        Some(o) if !boot_orders.insert(o) => Err(DomainError::duplicate(
            child.element("boot").map_or(child.pos, |b| b.pos),
            "devices",
            format!("<boot order='{o}'>"),
        )),
        _ => Ok(()),
    };
    for child in el.elements() {
        match child.name.as_str() {
            "filesystem" => {
                ctx.lxc_only(child)?;
                let fs = parse_filesystem(child)?;
                check_fs_target(&mut fs_targets, &fs, child)?;
                d.filesystems.push(fs);
            }
            "disk" => {
                let disk = parse_disk(ctx, child)?;
                boot_order(child, disk.boot_order)?;
                if !disk_targets.insert(disk.target_dev.clone()) {
                    return Err(DomainError::duplicate(
                        child.pos,
                        "devices",
                        format!("disk target '{}'", disk.target_dev),
                    ));
                }
                d.disks.push(disk);
            }
            "interface" => {
                let iface = parse_interface(ctx, child)?;
                interface_names.check(child, &iface)?;
                boot_order(child, iface.boot_order)?;
                d.interfaces.push(iface);
            }
            "hostdev" => {
                ctx.lxc_only(child)?;
                let hostdev = parse_hostdev(child)?;
                if let Hostdev::Net { interface, .. } = &hostdev
                    && !net_hostdevs.insert(interface.clone())
                {
                    return Err(DomainError::duplicate(
                        child.pos,
                        "devices",
                        format!("<hostdev type='net'> of host interface '{interface}'"),
                    ));
                }
                d.hostdevs.push(hostdev);
            }
            "serial" => {
                ctx.vm_only(child)?;
                let (rest, mut kept) = split_kept(ctx, child, kept::CHARDEV, &[])?;
                let common = vm::common(&mut kept, child)?;
                let (chardev, target, port) = parse_chardev(ctx, &rest, &["type", "port"])?;
                serials.push((chardev, serial_target(target)?, port, common, kept));
                serial_ports.reserve(child, port)?;
            }
            "console" => {
                let (rest, mut kept) = split_kept(ctx, child, kept::CHARDEV, &[])?;
                let common = vm::common(&mut kept, child)?;
                let (chardev, target_type, port) = parse_console(ctx, &rest)?;
                consoles.push((chardev, target_type, port, common, kept));
                console_ports.reserve(child, port)?;
            }
            _ => {} // emulator, handled above
        }
    }
    for (chardev_type, (target_type, model), port, common, kept) in serials {
        d.serials.push(Serial {
            chardev_type,
            kept,
            port: serial_ports.assign(port),
            target_type,
            model,
            address: common.address,
            alias: common.alias,
        });
    }
    for (chardev_type, target_type, port, common, kept) in consoles {
        d.consoles.push(Console {
            chardev_type,
            kept,
            target_type,
            port: console_ports.assign(port),
            address: common.address,
            alias: common.alias,
        });
    }
    d.shrink_to_fit();
    Ok(d)
}

/// What must be unique among a domain's interfaces: MAC addresses and
/// device names on either side.
#[derive(Default)]
struct InterfaceNames {
    macs: HashSet<MacAddr>,
    targets: HashSet<String>,
    guests: HashSet<String>,
}

impl InterfaceNames {
    fn check(&mut self, el: &Element, iface: &Interface) -> Result<()> {
        let clash = |child: &str, what: String| {
            let pos = el.element(child).map_or(el.pos, |c| c.pos);
            Err(DomainError::invalid(
                pos,
                "interface",
                format!("another interface already has {what}"),
                format!(
                    "give each interface its own <{child}>, or leave it out to get one assigned"
                ),
            ))
        };
        if let Some(mac) = iface.mac
            && !self.macs.insert(mac)
        {
            return clash("mac", format!("MAC address {mac}"));
        }
        if let Some(dev) = &iface.target_dev
            && !self.targets.insert(dev.clone())
        {
            return clash("target", format!("target dev '{dev}'"));
        }
        if let Some(dev) = &iface.guest_dev
            && !self.guests.insert(dev.clone())
        {
            return clash("guest", format!("guest dev '{dev}'"));
        }
        Ok(())
    }
}

/// Gives ports to consoles that name none: the lowest free one, in
/// document order.
#[derive(Default)]
struct PortAssigner {
    used: BTreeSet<u32>,
    /// No port below this is free.
    next: u32,
}

impl PortAssigner {
    fn reserve(&mut self, el: &Element, port: Option<u32>) -> Result<()> {
        if let Some(p) = port
            && !self.used.insert(p)
        {
            return Err(DomainError::duplicate(
                el.pos,
                "devices",
                format!("<{}> port {p}", el.qname),
            ));
        }
        Ok(())
    }

    fn assign(&mut self, port: Option<u32>) -> u32 {
        if let Some(p) = port {
            return p;
        }
        while self.used.contains(&self.next) {
            self.next += 1;
        }
        self.used.insert(self.next);
        self.next
    }
}

fn check_fs_target(seen: &mut HashSet<PathBuf>, fs: &Filesystem, el: &Element) -> Result<()> {
    if !seen.insert(fs.target.clone()) {
        let pos = el.element("target").map_or(el.pos, |t| t.pos);
        return Err(if fs.target == Path::new("/") {
            DomainError::invalid(
                pos,
                "filesystem",
                "more than one filesystem has target '/'",
                "keep one root filesystem",
            )
        } else {
            DomainError::duplicate(
                pos,
                "devices",
                format!("filesystem target '{}'", fs.target.display()),
            )
        });
    }
    Ok(())
}

fn parse_filesystem(el: &Element) -> Result<Filesystem> {
    check_attrs(el, &["type", "accessmode"])?;
    check_children(el, &["driver", "source", "target", "readonly"], &[])?;
    let fs_type = match el.attribute("type") {
        None => "mount",
        Some(a) => match a.value.as_str() {
            t @ ("mount" | "bind" | "ram" | "block" | "file" | "volume") => t,
            other => {
                return Err(DomainError::invalid(
                    a.pos,
                    "filesystem",
                    format!("filesystem type '{other}' is not known"),
                    "use one of 'mount', 'bind', 'ram', 'block', 'file', 'volume'",
                ));
            }
        },
    };
    let accessmode = attr_keyword(el, "accessmode", AccessMode::parse, AccessMode::NAMES)?;
    if let Some(mode) = accessmode
        && mode != AccessMode::Passthrough
    {
        let pos = el.attribute("accessmode").map_or(el.pos, |a| a.pos);
        return Err(DomainError::invalid(
            pos,
            "filesystem",
            format!("accessmode '{mode}' is not supported for containers"),
            "use accessmode='passthrough' or leave it out",
        ));
    }
    let (attr, example) = match fs_type {
        "mount" | "bind" => ("dir", "<source dir='/srv/data'/>"),
        "ram" => ("usage", "<source usage='64' units='MiB'/>"),
        "block" => ("dev", "<source dev='/dev/sdb1'/>"),
        "volume" => ("volume", "<source pool='images' volume='busybox'/>"),
        _ => ("file", "<source file='/var/lib/lxvirt/disks/data.img'/>"),
    };
    let source_el = req_child(
        el,
        "source",
        &format!("a '{fs_type}' filesystem needs {example}"),
    )?;
    check_children(source_el, &[], &[])?;
    if fs_type == "ram" {
        check_attrs(source_el, &["usage", "units"])?;
    } else if fs_type == "volume" {
        check_attrs(source_el, &["pool", "volume"])?;
    } else {
        check_attrs(source_el, &[attr])?;
    }
    let src = req_attr(source_el, attr, &format!("write {example}"))?;
    let driver = match el.element("driver") {
        None => None,
        Some(d) if fs_type == "file" => Some(parse_fs_driver(d)?),
        Some(d) => {
            return Err(DomainError::invalid(
                d.pos,
                "driver",
                format!("a '{fs_type}' filesystem takes no <driver>"),
                "remove it; drivers apply to type='file' only",
            ));
        }
    };
    let source = match fs_type {
        "mount" => FsSource::Mount {
            dir: attr_path(source_el, src)?,
        },
        "bind" => FsSource::Bind {
            dir: attr_path(source_el, src)?,
        },
        "ram" => {
            let usage = size_value(source_el, src.pos, &src.value, source_el.attribute("units"))?;
            if usage == 0 {
                return Err(DomainError::invalid(
                    src.pos,
                    "source",
                    "a ram filesystem of size zero",
                    "give a positive usage, e.g. usage='64' units='MiB'",
                ));
            }
            FsSource::Ram { usage }
        }
        "block" => FsSource::Block {
            dev: attr_path(source_el, src)?,
        },
        "volume" => parse_volume_source(source_el, src)?,
        _ => FsSource::File {
            file: attr_path(source_el, src)?,
            driver,
        },
    };
    let target_el = req_child(el, "target", "add <target dir='/mnt/data'/>")?;
    check_attrs(target_el, &["dir"])?;
    check_children(target_el, &[], &[])?;
    let target = attr_path(
        target_el,
        req_attr(target_el, "dir", "add dir='/mnt/data'")?,
    )?;
    let readonly = match el.element("readonly") {
        None => false,
        Some(r) => {
            check_flag(r)?;
            true
        }
    };
    if let FsSource::Volume { volume, .. } = &source {
        // An image is the container's root, under its own writable layer;
        // a read-only image mount elsewhere is not built yet.
        if target != Path::new("/") {
            return Err(DomainError::invalid(
                target_el.pos,
                "target",
                format!("a 'volume' filesystem (image '{volume}') must be the root filesystem"),
                "use <target dir='/'/>, or export the image and mount it with type='mount'",
            ));
        }
        if let Some(r) = el.element("readonly") {
            return Err(DomainError::invalid(
                r.pos,
                "readonly",
                "a root filesystem from an image is writable through the domain's own layer",
                "remove <readonly/>",
            ));
        }
    }
    Ok(Filesystem {
        source,
        accessmode,
        target,
        readonly,
    })
}

/// `<source pool='images' volume='NAME-OR-ID'/>`: the pool must be the
/// image store; the volume an image name or id (whether it exists is
/// checked at start, as libvirt checks volumes).
fn parse_volume_source(source_el: &Element, volume: &Attribute) -> Result<FsSource> {
    let pool = req_attr(
        source_el,
        "pool",
        &format!("add pool='{IMAGE_POOL}' (the image store)"),
    )?;
    if pool.value != IMAGE_POOL {
        return Err(DomainError::invalid(
            pool.pos,
            "source",
            format!("pool '{}' is not known", pool.value),
            format!("use pool='{IMAGE_POOL}', lxvirt's image store"),
        ));
    }
    if let Err(reason) = DomainName::new(&volume.value) {
        return Err(DomainError::invalid(
            volume.pos,
            "source",
            format!(
                "volume '{}' is not an image name or id: {reason}",
                volume.value
            ),
            "name an image from 'lxvirt image list'",
        ));
    }
    Ok(FsSource::Volume {
        pool: pool.value.clone(),
        volume: volume.value.clone(),
    })
}

fn parse_fs_driver(d: &Element) -> Result<FsDriver> {
    check_attrs(d, &["type", "format"])?;
    check_children(d, &[], &[])?;
    let t = req_attr(d, "type", "add type='loop' (raw images) or type='nbd'")?;
    let driver_type = keyword(
        t.pos,
        "driver",
        "driver type",
        &t.value,
        FsDriverType::parse,
        FsDriverType::NAMES,
    )?;
    let format = attr_keyword(d, "format", ImageFormat::parse, ImageFormat::NAMES)?;
    if driver_type == FsDriverType::Loop
        && let Some(f) = format
        && f != ImageFormat::Raw
    {
        let pos = d.attribute("format").map_or(d.pos, |a| a.pos);
        return Err(DomainError::invalid(
            pos,
            "driver",
            format!("the loop driver cannot read '{f}' images"),
            "use format='raw', or type='nbd' for other formats",
        ));
    }
    Ok(FsDriver {
        driver_type,
        format,
    })
}

fn parse_disk(ctx: Ctx, el: &Element) -> Result<Disk> {
    let full = el;
    let (el, mut kept) = split_kept(ctx, el, kept::DISK, &[])?;
    let el = &el;
    let common = vm::common(&mut kept, full)?;
    let extra = vm::disk_fields(&mut kept, full)?;
    if ctx.lxc() {
        check_attrs(el, &["type", "device"])?;
    } else {
        check_attrs(el, &["type", "device", "model"])?;
    }
    let model = attr_keyword(el, "model", VirtioModel::parse, VirtioModel::NAMES)?;
    check_children(el, &["driver", "source", "target", "readonly"], &[])?;
    // libvirt reads a VM's disk without a type as a file.
    let (type_pos, type_value) = match el.attribute("type") {
        Some(t) => (t.pos, t.value.as_str()),
        None if !ctx.lxc() => (el.pos, "file"),
        None => {
            let t = req_attr(el, "type", "add type='block'")?;
            (t.pos, t.value.as_str())
        }
    };
    let kept_type = if ctx.lxc() {
        None
    } else {
        KeptDiskType::parse(type_value)
    };
    let is_file = match type_value {
        "file" if !ctx.lxc() => true,
        "block" => false,
        _ if kept_type.is_some() => false,
        other => {
            return Err(DomainError::invalid(
                type_pos,
                "disk",
                format!(
                    "disk type '{other}' is not supported in a {} domain",
                    ctx.kind
                ),
                if ctx.lxc() {
                    "use type='block'"
                } else {
                    "use type='file' or type='block'"
                },
            ));
        }
    };
    let device = attr_keyword(el, "device", DiskDevice::parse, DiskDevice::NAMES)?
        .unwrap_or(DiskDevice::Disk);
    if ctx.lxc() && device != DiskDevice::Disk {
        return Err(DomainError::invalid(
            el.attribute("device").map_or(el.pos, |a| a.pos),
            "disk",
            format!("device '{device}' is not supported in an lxc domain"),
            "use device='disk'",
        ));
    }
    let driver = match el.element("driver") {
        None => None,
        Some(d) => {
            ctx.vm_only(d)?;
            // The table checks every name and value; the typed ones are
            // read from it, the rest stay as written.
            let k = parse_kept(d, &kept::DISK_DRIVER)?;
            let kw = |name: &str| k.attr(name);
            let queues = d
                .attribute("queues")
                .map(|q| number(q.pos, "driver", "queues", q.value.trim(), 1u32, 1024))
                .transpose()?;
            const TYPED: &[&str] = &["name", "type", "cache", "io", "discard", "queues"];
            Some(DiskDriver {
                name: kw("name").and_then(DiskDriverName::parse),
                format: kw("type").and_then(ImageFormat::parse),
                cache: kw("cache").and_then(DiskCache::parse),
                io: kw("io").and_then(DiskIo::parse),
                discard: kw("discard").and_then(DiskDiscard::parse),
                queues,
                kept_attrs: k
                    .attributes
                    .iter()
                    .filter(|(n, _)| !TYPED.contains(&n.as_str()))
                    .cloned()
                    .collect(),
                kept: k.children,
            })
        }
    };
    let src_attr = if is_file { "file" } else { "dev" };
    // A source with more than its path, or of a type lxvirt does not
    // run, is kept as written.
    let kept_source = match (kept_type, el.element("source")) {
        (Some(KeptDiskType::File | KeptDiskType::Block), Some(s))
            if s.attributes.iter().any(|a| a.name != src_attr) || s.elements().next().is_some() =>
        {
            Some(s)
        }
        (Some(KeptDiskType::File | KeptDiskType::Block), _) => None,
        (Some(_), s) => s,
        (None, _) => None,
    };
    let kept_source_type = match kept_type {
        Some(KeptDiskType::File | KeptDiskType::Block) if kept_source.is_none() => None,
        other => other,
    };
    if let Some(s) = kept_source {
        kept.push(parse_kept(s, &kept::DISK_KEPT_SOURCE)?);
    }
    let path = match el.element("source") {
        _ if kept_source_type.is_some() => None,
        // Removable media may be empty.
        None if matches!(device, DiskDevice::Cdrom | DiskDevice::Floppy) => None,
        None => {
            return Err(DomainError::missing(
                el.pos,
                "disk",
                "<source>",
                format!("add <source {src_attr}='…'/>"),
            ));
        }
        Some(s) => {
            check_attrs(s, &[src_attr])?;
            check_children(s, &[], &[])?;
            let a = req_attr(s, src_attr, &format!("add {src_attr}='…'"))?;
            Some(attr_path(s, a)?)
        }
    };
    let source = match kept_source_type {
        Some(t) => DiskSource::Kept(t),
        None if is_file => DiskSource::File(path),
        None => DiskSource::Block(path),
    };
    let target = req_child(el, "target", "add <target dev='vdb' bus='virtio'/>")?;
    let target_kept = if ctx.lxc() {
        check_attrs(target, &["dev", "bus"])?;
        Vec::new()
    } else {
        // The table checks the names and values of the kept attributes.
        parse_kept(target, &kept::DISK_TARGET)?
            .attributes
            .into_iter()
            .filter(|(name, _)| name != "dev" && name != "bus")
            .collect()
    };
    check_children(target, &[], &[])?;
    let dev = req_attr(target, "dev", "add dev='vdb'")?;
    let dev_ok = dev.value.len() <= 32
        && dev.value.starts_with(|c: char| c.is_ascii_lowercase())
        && dev
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !dev_ok {
        return Err(DomainError::invalid(
            dev.pos,
            "target",
            format!("'{}' is not a disk device name", dev.value),
            "use a name such as vdb or sda",
        ));
    }
    let readonly = match el.element("readonly") {
        None => false,
        Some(r) => {
            check_flag(r)?;
            true
        }
    };
    Ok(Disk {
        source,
        device,
        model,
        driver,
        target_dev: dev.value.clone(),
        target_bus: attr_keyword(target, "bus", DiskBus::parse, DiskBus::NAMES)?,
        target_kept,
        readonly,
        boot_order: common.boot_order,
        serial: extra.serial,
        shareable: extra.shareable,
        transient: extra.transient,
        backing_store: extra.backing_store,
        address: common.address,
        alias: common.alias,
        kept,
    })
}

fn parse_interface(ctx: Ctx, el: &Element) -> Result<Interface> {
    let full = el;
    let (el, mut kept) = split_kept(ctx, el, kept::INTERFACE, &[])?;
    let el = &el;
    let common = vm::common(&mut kept, full)?;
    check_attrs(el, &["type"])?;
    let t = req_attr(
        el,
        "type",
        "add type='network' (or bridge, ethernet, direct)",
    )?;
    // A type libvirt has that lxvirt keeps but does not run: its source,
    // addresses and port forwards are kept as written.
    let kept_type = if ctx.lxc() {
        None
    } else {
        KeptInterfaceType::parse(&t.value)
    };
    let repeated: &[&str] = if kept_type.is_some() {
        &["ip", "route", "portForward"]
    } else {
        &["ip", "route"]
    };
    check_children(
        el,
        &[
            "mac",
            "source",
            "target",
            "guest",
            "model",
            "mtu",
            "link",
            "bandwidth",
            "vlan",
        ],
        repeated,
    )?;
    let source_el = el.element("source");
    let need_source = |example: &str| {
        source_el.ok_or_else(|| {
            DomainError::missing(el.pos, "interface", "<source>", format!("add {example}"))
        })
    };
    let source = if let Some(kt) = kept_type {
        if let Some(s) = source_el {
            kept.push(parse_kept(s, &kept::NET_KEPT_SOURCE)?);
        }
        for child in el.elements() {
            match child.name.as_str() {
                "ip" => kept.push(parse_kept(child, &kept::NET_KEPT_IP)?),
                "route" => kept.push(parse_kept(child, &kept::NET_KEPT_ROUTE)?),
                "portForward" => kept.push(parse_kept(child, &kept::PORT_FORWARD)?),
                _ => {}
            }
        }
        InterfaceSource::Kept(kt)
    } else {
        match t.value.as_str() {
            "network" => {
                let s = need_source("<source network='default'/>")?;
                check_attrs(s, &["network", "portgroup"])?;
                check_children(s, &[], &[])?;
                let object = |a: &Attribute, fix: &str| {
                    check_name(&a.value, 64).map_err(|e| {
                        DomainError::invalid(
                            a.pos,
                            "source",
                            format!("{} '{}': {e}", a.name, a.value),
                            fix,
                        )
                    })?;
                    Ok::<_, DomainError>(a.value.clone())
                };
                InterfaceSource::Network {
                    network: object(
                        req_attr(s, "network", "add network='default'")?,
                        "name an existing network",
                    )?,
                    portgroup: s
                        .attribute("portgroup")
                        .map(|a| object(a, "name a port group of the network"))
                        .transpose()?,
                }
            }
            "bridge" => InterfaceSource::Bridge {
                bridge: ifname_child(need_source("<source bridge='br0'/>")?, "bridge")?,
            },
            "ethernet" => match source_el {
                None => InterfaceSource::Ethernet {
                    ips: Vec::new(),
                    routes: Vec::new(),
                },
                Some(s) => {
                    check_attrs(s, &[])?;
                    check_children(s, &[], &["ip", "route"])?;
                    let (ips, routes) = ips_and_routes(s)?;
                    InterfaceSource::Ethernet { ips, routes }
                }
            },
            "direct" => {
                let s = need_source("<source dev='eth0' mode='bridge'/>")?;
                check_attrs(s, &["dev", "mode"])?;
                check_children(s, &[], &[])?;
                InterfaceSource::Direct {
                    dev: ifname(s, req_attr(s, "dev", "add dev='eth0'")?)?,
                    mode: attr_keyword(s, "mode", DirectMode::parse, DirectMode::NAMES)?
                        .unwrap_or(DirectMode::Vepa),
                }
            }
            other => {
                return Err(DomainError::invalid(
                    t.pos,
                    "interface",
                    format!("interface type '{other}' is not supported"),
                    "use one of 'network', 'bridge', 'ethernet', 'direct'",
                ));
            }
        }
    };
    let mac = el.element("mac").map(mac_element).transpose()?;
    let target_dev = el
        .element("target")
        .map(|e| ifname_child(e, "dev"))
        .transpose()?;
    let guest_dev = match el.element("guest") {
        None => None,
        Some(g) => {
            ctx.lxc_only(g)?;
            Some(ifname_child(g, "dev")?)
        }
    };
    let model = match el.element("model") {
        None => None,
        Some(m) => {
            ctx.vm_only(m)?;
            check_attrs(m, &["type"])?;
            check_children(m, &[], &[])?;
            let a = req_attr(m, "type", "add type='virtio'")?;
            Some(keyword(
                a.pos,
                "model",
                "model",
                &a.value,
                NicModel::parse,
                NicModel::NAMES,
            )?)
        }
    };
    let (ips, routes) = if kept_type.is_some() {
        (Vec::new(), Vec::new())
    } else {
        for child in el.elements_named("ip").chain(el.elements_named("route")) {
            ctx.lxc_only(child)?;
        }
        ips_and_routes(el)?
    };
    let link_state = match el.element("link") {
        None => None,
        Some(l) => {
            check_attrs(l, &["state"])?;
            check_children(l, &[], &[])?;
            let a = req_attr(l, "state", "add state='up' or state='down'")?;
            Some(keyword(
                a.pos,
                "link",
                "link state",
                &a.value,
                LinkState::parse,
                LinkState::NAMES,
            )?)
        }
    };
    let bandwidth = match el.element("bandwidth") {
        None => None,
        Some(b) => {
            if ctx.lxc() && matches!(source, InterfaceSource::Direct { .. }) {
                return Err(DomainError::invalid(
                    b.pos,
                    "bandwidth",
                    "a container's 'direct' interface cannot be shaped: its device moves into the container and leaves nothing on the host side",
                    "remove <bandwidth>, or use a 'bridge' or 'network' interface",
                ));
            }
            parse_bandwidth(b, matches!(source, InterfaceSource::Network { .. }))?
        }
    };
    let vlan = match el.element("vlan") {
        None => None,
        Some(v) => {
            if matches!(source, InterfaceSource::Ethernet { .. }) {
                return Err(DomainError::invalid(
                    v.pos,
                    "vlan",
                    "an 'ethernet' interface has no switch port to tag",
                    "remove <vlan>, or connect the interface to a bridge or network that filters VLANs",
                ));
            }
            Some(parse_vlan(v)?)
        }
    };
    Ok(Interface {
        source,
        mac,
        target_dev,
        guest_dev,
        model,
        ips,
        routes,
        mtu: el.element("mtu").map(mtu_element).transpose()?,
        link_state,
        bandwidth,
        vlan,
        boot_order: common.boot_order,
        address: common.address,
        alias: common.alias,
        kept,
    })
}

/// The `<ip>` and `<route>` children of `el`: the addresses and routes of
/// one device (an interface's guest or host side, a network hostdev).
fn ips_and_routes(el: &Element) -> Result<(Vec<IpConfig>, Vec<Route>)> {
    let mut ips = Vec::new();
    for ip in el.elements_named("ip") {
        check_attrs(ip, &["address", "family", "prefix", "peer"])?;
        check_children(ip, &[], &[])?;
        let address = req_ip(ip, "address", "192.168.122.10")?;
        check_family(ip, address)?;
        let prefix = prefix_attr(ip, address, 0)?;
        let peer = match ip.attribute("peer") {
            None => None,
            Some(a) => {
                let p = ip_attr(ip, a)?;
                same_family(ip, a, address, p)?;
                Some(p)
            }
        };
        ips.push(IpConfig {
            address,
            prefix,
            peer,
        });
    }
    let mut routes = Vec::new();
    for r in el.elements_named("route") {
        check_attrs(r, &["address", "family", "prefix", "gateway"])?;
        check_children(r, &[], &[])?;
        let address = req_ip(r, "address", "0.0.0.0")?;
        check_family(r, address)?;
        let g = req_attr(r, "gateway", "add gateway='192.168.122.1'")?;
        let gateway = ip_attr(r, g)?;
        same_family(r, g, address, gateway)?;
        let prefix = prefix_attr(r, address, 0)?;
        let bits = prefix.unwrap_or_else(|| addr::natural_prefix(address));
        if !addr::is_network_address(address, bits) {
            let pos = r.attribute("address").map_or(r.pos, |a| a.pos);
            return Err(DomainError::invalid(
                pos,
                "route",
                format!(
                    "{address} has bits set after the prefix of {bits} bits, so it is not a network address"
                ),
                format!(
                    "write the network's address, {}, or give the prefix that goes with {address}{}",
                    addr::network_address(address, bits),
                    if prefix.is_none() {
                        " (without prefix= it is the address's class: /8, /16 or /24 for IPv4, /64 for IPv6, /0 for 0.0.0.0)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        routes.push(Route {
            address,
            prefix,
            gateway,
        });
    }
    Ok((ips, routes))
}

/// A bandwidth value: 1..=MAX_BANDWIDTH.
fn bandwidth_value(el: &Element, name: &str) -> Result<Option<u64>> {
    el.attribute(name)
        .map(|a| number(a.pos, &el.qname, name, &a.value, 1u64, MAX_BANDWIDTH))
        .transpose()
}

/// `<inbound>` or `<outbound>`.
fn parse_rate(el: &Element, floor_allowed: bool) -> Result<BandwidthRate> {
    let inbound = el.name == "inbound";
    check_attrs(
        el,
        if inbound {
            &["average", "peak", "burst", "floor"]
        } else {
            &["average", "peak", "burst"]
        },
    )?;
    check_children(el, &[], &[])?;
    let rate = BandwidthRate {
        average: bandwidth_value(el, "average")?,
        peak: bandwidth_value(el, "peak")?,
        burst: bandwidth_value(el, "burst")?,
        floor: bandwidth_value(el, "floor")?,
    };
    if let (Some(_), false) = (rate.floor, floor_allowed) {
        let pos = el.attribute("floor").map_or(el.pos, |a| a.pos);
        return Err(DomainError::invalid(
            pos,
            "inbound",
            "floor= needs a virtual network that shapes all its traffic",
            "remove floor=, or connect the interface with type='network'",
        ));
    }
    match rate.average {
        None if rate.floor.is_none() => {
            return Err(DomainError::missing(
                el.pos,
                &el.qname,
                "attribute 'average'",
                if inbound {
                    "add average='1000' (kB/s), or floor= on a type='network' interface"
                } else {
                    "add average='1000' (kB/s)"
                },
            ));
        }
        None if rate.peak.is_some() || rate.burst.is_some() => {
            return Err(DomainError::missing(
                el.pos,
                &el.qname,
                "attribute 'average', which peak= and burst= need",
                "add average='1000' (kB/s)",
            ));
        }
        Some(average) if rate.peak.is_some_and(|p| p < average) => {
            let pos = el.attribute("peak").map_or(el.pos, |a| a.pos);
            return Err(DomainError::invalid(
                pos,
                &el.qname,
                "peak is below average",
                "make peak at least average (both in kB/s), or leave peak out",
            ));
        }
        _ => {}
    }
    Ok(rate)
}

/// `<bandwidth>`; `None` when it has neither direction.
fn parse_bandwidth(el: &Element, floor_allowed: bool) -> Result<Option<Bandwidth>> {
    check_attrs(el, &[])?;
    check_children(el, &["inbound", "outbound"], &[])?;
    let bw = Bandwidth {
        inbound: el
            .element("inbound")
            .map(|e| parse_rate(e, floor_allowed))
            .transpose()?,
        outbound: el
            .element("outbound")
            .map(|e| parse_rate(e, false))
            .transpose()?,
    };
    Ok((bw != Bandwidth::default()).then_some(bw))
}

fn parse_vlan(el: &Element) -> Result<Vlan> {
    check_attrs(el, &["trunk"])?;
    check_children(el, &[], &["tag"])?;
    let mut tags: Vec<VlanTag> = Vec::new();
    let mut native: Option<&Element> = None;
    for t in el.elements_named("tag") {
        check_attrs(t, &["id", "nativeMode"])?;
        check_children(t, &[], &[])?;
        let a = req_attr(t, "id", "add id='42'")?;
        let id = number(a.pos, "tag", "VLAN id", &a.value, 0u16, MAX_VLAN_ID)?;
        if tags.iter().any(|o| o.id == id) {
            return Err(DomainError::duplicate(
                t.pos,
                "vlan",
                format!("<tag id='{id}'>"),
            ));
        }
        let native_mode = attr_keyword(t, "nativeMode", NativeMode::parse, NativeMode::NAMES)?;
        if native_mode.is_some() {
            if let Some(first) = native {
                return Err(DomainError::invalid(
                    t.pos,
                    "tag",
                    format!(
                        "a second native VLAN (the first is on line {})",
                        first.pos.line
                    ),
                    "give nativeMode= to one tag only",
                ));
            }
            native = Some(t);
        }
        tags.push(VlanTag { id, native_mode });
    }
    if tags.is_empty() {
        return Err(DomainError::missing(
            el.pos,
            "vlan",
            "<tag>",
            "add <tag id='42'/>",
        ));
    }
    let trunk = match attr_yes_no(el, "trunk")? {
        Some(false) if tags.len() > 1 => {
            return Err(DomainError::invalid(
                el.pos,
                "vlan",
                "trunk='no' with more than one tag",
                "write trunk='yes' to carry several VLANs, or keep one <tag>",
            ));
        }
        Some(false) if native.is_some() => {
            return Err(DomainError::invalid(
                el.pos,
                "vlan",
                "trunk='no' with a native VLAN",
                "write trunk='yes', or remove nativeMode=",
            ));
        }
        Some(trunk) => trunk || tags.len() > 1,
        None => tags.len() > 1,
    };
    Ok(Vlan { trunk, tags })
}

fn parse_hostdev(el: &Element) -> Result<Hostdev> {
    check_attrs(el, &["mode", "type"])?;
    check_children(el, &["source"], &["ip", "route"])?;
    let mode = req_attr(el, "mode", "add mode='capabilities' or mode='subsystem'")?;
    let t = req_attr(el, "type", "add type='storage', 'misc', 'net' or 'usb'")?;
    if t.value != "net"
        && let Some(c) = el
            .elements_named("ip")
            .chain(el.elements_named("route"))
            .next()
    {
        return Err(DomainError::invalid(
            c.pos,
            "hostdev",
            format!("<{}> belongs to network devices only", c.name),
            "remove it; only a <hostdev type='net'> takes <ip> and <route>",
        ));
    }
    let source = req_child(el, "source", "add <source>…</source>")?;
    check_attrs(source, &[])?;
    match (mode.value.as_str(), t.value.as_str()) {
        ("capabilities", kind @ ("storage" | "misc" | "net")) => {
            let child = match kind {
                "storage" => "block",
                "misc" => "char",
                _ => "interface",
            };
            check_children(source, &[child], &[])?;
            let c = req_child(
                source,
                child,
                &format!("add <{child}>…</{child}> naming the host device"),
            )?;
            Ok(match kind {
                "storage" => Hostdev::Storage {
                    block: text_path(c)?,
                },
                "misc" => Hostdev::Misc {
                    char_dev: text_path(c)?,
                },
                _ => {
                    check_attrs(c, &[])?;
                    let name = text(c)?.trim().to_owned();
                    check_ifname(&name).map_err(|e| {
                        DomainError::invalid(
                            c.pos,
                            "interface",
                            e,
                            "name a host interface, such as eth4",
                        )
                    })?;
                    let (ips, routes) = ips_and_routes(el)?;
                    Hostdev::Net {
                        interface: name,
                        ips,
                        routes,
                    }
                }
            })
        }
        ("subsystem", "usb") => {
            check_children(source, &["vendor", "product", "address"], &[])?;
            let id = |name: &str| -> Result<Option<u16>> {
                let Some(e) = source.element(name) else {
                    return Ok(None);
                };
                check_attrs(e, &["id"])?;
                check_children(e, &[], &[])?;
                let a = req_attr(e, "id", "add id='0x1234'")?;
                Ok(Some(parse_hex_or_dec(e, a, u16::MAX.into())? as u16))
            };
            let ids = match (id("vendor")?, id("product")?) {
                (Some(vendor), Some(product)) => Some(UsbIds { vendor, product }),
                (None, None) => None,
                _ => {
                    return Err(DomainError::missing(
                        source.pos,
                        "source",
                        "<vendor> or <product>",
                        "give both <vendor id='0x…'/> and <product id='0x…'/>",
                    ));
                }
            };
            let address = match source.element("address") {
                None => None,
                Some(a) => {
                    check_attrs(a, &["bus", "device"])?;
                    check_children(a, &[], &[])?;
                    let get = |n: &str| -> Result<u32> {
                        let at = req_attr(a, n, "give bus='1' device='3'")?;
                        Ok(parse_hex_or_dec(a, at, u32::MAX.into())? as u32)
                    };
                    Some(UsbAddress {
                        bus: get("bus")?,
                        device: get("device")?,
                    })
                }
            };
            if ids.is_none() && address.is_none() {
                return Err(DomainError::missing(
                    source.pos,
                    "source",
                    "the USB device",
                    "add <address bus='1' device='3'/> or <vendor id='0x…'/><product id='0x…'/>",
                ));
            }
            Ok(Hostdev::Usb { ids, address })
        }
        (m, k) => Err(DomainError::invalid(
            el.pos,
            "hostdev",
            format!("hostdev mode '{m}' type '{k}' is not supported"),
            "use mode='capabilities' with type storage, misc or net, or mode='subsystem' type='usb'",
        )),
    }
}

/// A number written in decimal or as 0x hex, at most `max`.
fn parse_hex_or_dec(el: &Element, a: &Attribute, max: u64) -> Result<u64> {
    match hex_or_dec(a.value.trim()) {
        Some(n) if n <= max => Ok(n),
        _ => Err(DomainError::invalid(
            a.pos,
            &el.qname,
            format!("{} '{}' is not a number up to {max:#x}", a.name, a.value),
            "write it in decimal or as 0x hex",
        )),
    }
}

/// `<serial>`/`<console>` common part: `type` (`pty` for containers)
/// and an optional `<target port=>`; returns the type, the target element
/// and port.
fn parse_chardev<'a>(
    ctx: Ctx,
    el: &'a Element,
    target_attrs: &[&str],
) -> Result<(ChardevType, Option<&'a Element>, Option<u32>)> {
    check_attrs(el, &["type"])?;
    check_children(el, &["target"], &[])?;
    let chardev = match el.attribute("type") {
        None => ChardevType::Pty,
        Some(t) if ctx.lxc() && t.value != "pty" => {
            return Err(DomainError::invalid(
                t.pos,
                &el.qname,
                format!("{} type '{}' is not supported", el.qname, t.value),
                "use type='pty'",
            ));
        }
        Some(t) => keyword(
            t.pos,
            &el.qname,
            "type",
            &t.value,
            ChardevType::parse,
            ChardevType::NAMES,
        )?,
    };
    let target = el.element("target");
    let mut port = None;
    if let Some(t) = target {
        check_attrs(t, target_attrs)?;
        // A serial port's target may name the emulated device.
        let children: &[&str] = if el.name == "serial" { &["model"] } else { &[] };
        check_children(t, children, &[])?;
        port = t
            .attribute("port")
            .map(|a| number(a.pos, "target", "port", &a.value, 0u32, 4095))
            .transpose()?;
    }
    Ok((chardev, target, port))
}

fn parse_console(ctx: Ctx, el: &Element) -> Result<(ChardevType, ConsoleTargetType, Option<u32>)> {
    let (chardev, target, port) = parse_chardev(ctx, el, &["type", "port"])?;
    let default = if ctx.lxc() {
        ConsoleTargetType::Lxc
    } else {
        ConsoleTargetType::Serial
    };
    let Some(t) = target else {
        return Ok((chardev, default, port));
    };
    let tt = attr_keyword(
        t,
        "type",
        ConsoleTargetType::parse,
        ConsoleTargetType::NAMES,
    )?
    .unwrap_or(default);
    if ctx.lxc() != (tt == ConsoleTargetType::Lxc) {
        let pos = t.attribute("type").map_or(t.pos, |a| a.pos);
        return Err(DomainError::invalid(
            pos,
            "target",
            format!(
                "console target type '{tt}' does not fit a {} domain",
                ctx.kind
            ),
            if ctx.lxc() {
                "use type='lxc'"
            } else {
                "use type='serial' or type='virtio'"
            },
        ));
    }
    Ok((chardev, tt, port))
}

/// The `type` and `<model name=>` of a serial port's `<target>`.
fn serial_target(
    target: Option<&Element>,
) -> Result<(Option<SerialTargetType>, Option<SerialModel>)> {
    let Some(t) = target else {
        return Ok((None, None));
    };
    let target_type = attr_keyword(t, "type", SerialTargetType::parse, SerialTargetType::NAMES)?;
    let model = match t.element("model") {
        None => None,
        Some(m) => {
            check_attrs(m, &["name"])?;
            check_children(m, &[], &[])?;
            let a = req_attr(m, "name", "add name='isa-serial'")?;
            Some(keyword(
                a.pos,
                "model",
                "serial model",
                &a.value,
                SerialModel::parse,
                SerialModel::NAMES,
            )?)
        }
    };
    Ok((target_type, model))
}
