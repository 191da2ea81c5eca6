//! What qemu reads from the host's storage: `<disk>` and the firmware's
//! flash (`<loader>`, `<nvram>`), both as `-blockdev` node graphs.
//!
//! Each image of a disk's chain is two nodes: a protocol node that opens
//! the file or block device and a format node (raw or qcow2) over it; a
//! qcow2 node names the layer below with `backing`. Only raw and qcow2 are
//! accepted: other formats (vmdk's extents, for one) can make qemu open
//! files the definition does not name. Node names are `disk{N}` for the
//! top of disk N, `disk{N}-b{K}` for its K-th backing image and
//! `disk{N}-overlay` for a transient disk's overlay, each with a `-file`
//! protocol node; a device's id is its `<alias>` or `disk-{target}`.
//!
//! Without `<backingStore>` under a qcow2 layer, qemu opens the backing
//! image the image's header names (the driver may fill the chain in
//! before start, as libvirt probes it, to pin the formats); an empty
//! `<backingStore/>` says there is none (`backing: null`).

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Value, json};

use super::devices::Buses;
use super::{Args, Chipset, Ctx, escape, on_off};
use crate::domain::{
    BackingStore, Disk, DiskBus, DiskCache, DiskDevice, DiskDiscard, DiskIo, DiskSource, HvmOs,
    ImageFormat, LoaderType, VirtioModel,
};
use crate::qemu::command::CommandError;

/// The qemu id of the device of `disk`.
pub fn disk_device_id(disk: &Disk) -> String {
    disk.alias
        .clone()
        .unwrap_or_else(|| format!("disk-{}", disk.target_dev))
}

/// The node name of the top of the `index`-th disk's chain as the
/// command line makes it (without a transient overlay).
pub fn disk_node_name(index: usize) -> String {
    format!("disk{index}")
}

/// The bus a disk's target names when `bus=` is not given, as libvirt
/// derives it from the name's prefix.
fn bus_of(disk: &Disk) -> Option<DiskBus> {
    disk.target_bus.or_else(|| {
        let prefix = disk.target_dev.get(..2)?;
        match prefix {
            "vd" => Some(DiskBus::Virtio),
            "sd" => Some(DiskBus::Scsi),
            "hd" => Some(DiskBus::Ide),
            "fd" => Some(DiskBus::Fdc),
            _ => None,
        }
    })
}

/// The position a target name gives: `sda` 0, `sdz` 25, `sdaa` 26.
fn target_index(dev: &str) -> Option<u64> {
    let letters = dev.get(2..)?;
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut index: u64 = 0;
    for b in letters.bytes() {
        index = index
            .checked_mul(26)?
            .checked_add(u64::from(b - b'a') + 1)?;
    }
    Some(index - 1)
}

/// The drive address a disk gives (`controller`, `bus`, `target`, `unit`),
/// if it gives one.
fn drive_address(disk: &Disk) -> Option<(u64, u64, u64, u64)> {
    let a = disk.address.as_ref()?;
    if a.address_type != Some(crate::domain::AddressType::Drive) {
        return None;
    }
    Some((
        a.controller.unwrap_or(0),
        a.bus.unwrap_or(0),
        a.target.unwrap_or(0),
        a.unit.unwrap_or(0),
    ))
}

/// The SCSI controller index a disk on the SCSI bus sits on.
pub(super) fn scsi_controller_of(disk: &Disk) -> Option<u32> {
    if bus_of(disk) != Some(DiskBus::Scsi) {
        return None;
    }
    Some(drive_address(disk).map_or(0, |(c, ..)| u32::try_from(c).unwrap_or(u32::MAX)))
}

/// The SATA controller index a disk on the SATA bus sits on.
pub(super) fn sata_controller_of(disk: &Disk) -> Option<u32> {
    if bus_of(disk) != Some(DiskBus::Sata) {
        return None;
    }
    let controller = match drive_address(disk) {
        Some((c, ..)) => c,
        None => target_index(&disk.target_dev).unwrap_or(0) / AHCI_PORTS,
    };
    Some(u32::try_from(controller).unwrap_or(u32::MAX))
}

/// Ports of one AHCI controller.
const AHCI_PORTS: u64 = 6;

/// How a `<driver cache=>` mode reads in qemu: the nodes' `cache.direct`
/// and `cache.no-flush`, and the device's `write-cache`.
struct CacheMode {
    direct: bool,
    no_flush: bool,
    write_cache: bool,
}

fn cache_mode(cache: DiskCache) -> CacheMode {
    let (direct, no_flush, write_cache) = match cache {
        DiskCache::Default | DiskCache::Writeback => (false, false, true),
        DiskCache::None => (true, false, true),
        DiskCache::Writethrough => (false, false, false),
        DiskCache::Directsync => (true, false, false),
        DiskCache::Unsafe => (false, true, true),
    };
    CacheMode {
        direct,
        no_flush,
        write_cache,
    }
}

/// One image of a chain, top first.
struct Layer<'a> {
    path: &'a Path,
    block: bool,
    format: ImageFormat,
}

/// Options every node of one disk shares.
struct NodeOptions {
    cache: Option<CacheMode>,
    aio: Option<&'static str>,
    discard: Option<&'static str>,
}

impl NodeOptions {
    fn apply(&self, node: &mut Value, protocol: bool) {
        if let Some(cache) = &self.cache {
            node["cache"] = json!({ "direct": cache.direct, "no-flush": cache.no_flush });
        }
        if let Some(discard) = self.discard {
            node["discard"] = json!(discard);
        }
        if protocol && let Some(aio) = self.aio {
            node["aio"] = json!(aio);
        }
    }
}

/// `-blockdev` for a protocol node and a format node over it.
fn push_layer(
    args: &mut Args,
    layer: &Layer<'_>,
    node: &str,
    read_only: bool,
    backing: Option<Value>,
    options: &NodeOptions,
    cdrom: bool,
) {
    let driver = match (layer.block, cdrom) {
        (false, _) => "file",
        (true, false) => "host_device",
        (true, true) => "host_cdrom",
    };
    let file = format!("{node}-file");
    let mut protocol = json!({
        "driver": driver,
        "filename": layer.path.display().to_string(),
        "node-name": file,
        "read-only": read_only,
    });
    options.apply(&mut protocol, true);
    args.push2("-blockdev", protocol.to_string());
    let mut format = json!({
        "driver": layer.format.as_str(),
        "node-name": node,
        "file": file,
        "read-only": read_only,
    });
    options.apply(&mut format, false);
    if let Some(backing) = backing {
        format["backing"] = backing;
    }
    args.push2("-blockdev", format.to_string());
}

fn path_of(source: &DiskSource) -> (Option<&Path>, bool) {
    match source {
        DiskSource::File(p) => (p.as_deref(), false),
        DiskSource::Block(p) => (p.as_deref(), true),
        // disk_nodes refuses a kept source before it asks.
        DiskSource::Kept(_) => (None, false),
    }
}

/// The images of a disk's chain under its top (from `<backingStore>`),
/// and whether the chain is said to end there (an empty element).
fn backing_layers<'a>(
    ctx: &Ctx<'_>,
    what: &str,
    mut next: Option<&'a BackingStore>,
) -> Result<(Vec<Layer<'a>>, bool), CommandError> {
    let mut layers = Vec::new();
    while let Some(store) = next {
        let Some(source) = &store.source else {
            if store.format.is_none() && store.backing.is_none() {
                return Ok((layers, true));
            }
            return Err(ctx.refuse(
                format!("{what}: <backingStore> without <source>"),
                "a backing image needs a source file or device",
            ));
        };
        let (Some(path), block) = path_of(source) else {
            return Err(ctx.refuse(
                format!("{what}: <backingStore> without <source>"),
                "a backing image needs a source file or device",
            ));
        };
        let Some(format) = store.format else {
            return Err(ctx.refuse(
                format!("{what}: <backingStore> of '{}'", path.display()),
                "a backing image needs <format type='raw'> or <format type='qcow2'>",
            ));
        };
        layers.push(Layer {
            path,
            block,
            format,
        });
        next = store.backing.as_deref();
    }
    Ok((layers, false))
}

fn check_format(ctx: &Ctx<'_>, what: &str, format: ImageFormat) -> Result<(), CommandError> {
    match format {
        ImageFormat::Raw | ImageFormat::Qcow2 => Ok(()),
        _ => Err(ctx.refuse(
            format!("{what} in format '{format}'"),
            "only raw and qcow2 images run (other formats may open files the definition does not name)",
        )),
    }
}

/// The node graph of one disk; returns the node its device reads, `None`
/// for an empty CD-ROM drive.
fn disk_nodes(
    args: &mut Args,
    ctx: &Ctx<'_>,
    index: usize,
    disk: &Disk,
    what: &str,
) -> Result<Option<String>, CommandError> {
    if let DiskSource::Kept(t) = disk.source {
        return Err(ctx.refuse(
            format!("{what} with type='{t}' or a <source> of more than its path"),
            "lxvirt keeps it but does not run it",
        ));
    }
    if matches!(disk.device, DiskDevice::Floppy | DiskDevice::Lun) {
        return Err(ctx.refuse(
            format!("{what} with device='{}'", disk.device),
            "the QEMU driver runs disks and CD-ROM drives only",
        ));
    }
    let cdrom = disk.device == DiskDevice::Cdrom;
    let driver = disk.driver.clone().unwrap_or_default();
    let cache = driver.cache.map(cache_mode);
    if driver.io == Some(DiskIo::Native) && !cache.as_ref().is_some_and(|c| c.direct) {
        return Err(ctx.refuse(
            format!("{what} with <driver io='native'>"),
            "native I/O needs cache='none' or cache='directsync'",
        ));
    }
    let options = NodeOptions {
        cache,
        aio: driver.io.map(|io| match io {
            DiskIo::Threads => "threads",
            DiskIo::Native => "native",
            DiskIo::IoUring => "io_uring",
        }),
        discard: driver.discard.map(|d| match d {
            DiskDiscard::Unmap => "unmap",
            DiskDiscard::Ignore => "ignore",
        }),
    };
    let (path, block) = path_of(&disk.source);
    let overlay = ctx
        .settings
        .disk_overlays
        .get(index)
        .and_then(|o| o.as_deref());
    let Some(path) = path else {
        if disk.backing_store.is_some() || overlay.is_some() {
            return Err(ctx.refuse(
                format!("{what} without <source>"),
                "an empty drive has no backing image or overlay",
            ));
        }
        return Ok(None);
    };
    if disk.transient && overlay.is_none() {
        return Err(ctx.refuse(
            format!("{what} with <transient/>"),
            "the driver prepared no overlay for it",
        ));
    }
    // libvirt's default too: a raw image cannot name other files.
    let format = driver.format.unwrap_or(ImageFormat::Raw);
    check_format(ctx, what, format)?;
    let mut layers = vec![Layer {
        path,
        block,
        format,
    }];
    let (below, ends) = backing_layers(ctx, what, disk.backing_store.as_ref())?;
    layers.extend(below);
    for layer in &layers[1..] {
        check_format(ctx, &format!("{what}: <backingStore>"), layer.format)?;
    }
    if let Some(raw) = layers[..layers.len() - 1]
        .iter()
        .find(|l| l.format == ImageFormat::Raw)
    {
        return Err(ctx.refuse(
            format!("{what}: <backingStore> under '{}'", raw.path.display()),
            "a raw image has no backing image",
        ));
    }
    let top = disk_node_name(index);
    let name = |k: usize| {
        if k == 0 {
            top.clone()
        } else {
            format!("{top}-b{k}")
        }
    };
    // Bottom first: a node's backing must exist when it is opened.
    let last = layers.len() - 1;
    for (k, layer) in layers.iter().enumerate().rev() {
        let backing = if k < last {
            Some(json!(name(k + 1)))
        } else if ends && layer.format == ImageFormat::Qcow2 {
            Some(Value::Null)
        } else {
            None
        };
        let read_only = k > 0 || disk.readonly || cdrom || overlay.is_some();
        push_layer(args, layer, &name(k), read_only, backing, &options, cdrom);
    }
    let Some(overlay) = overlay else {
        return Ok(Some(top));
    };
    let node = format!("{top}-overlay");
    let layer = Layer {
        path: overlay,
        block: false,
        format: ImageFormat::Qcow2,
    };
    push_layer(
        args,
        &layer,
        &node,
        false,
        Some(json!(top)),
        &options,
        false,
    );
    Ok(Some(node))
}

/// Every `<disk>`: its node graph and its device.
pub(super) fn disks(args: &mut Args, ctx: &mut Ctx<'_>, buses: &Buses) -> Result<(), CommandError> {
    let mut taken = HashSet::new();
    for (index, disk) in ctx.def.devices.disks.iter().enumerate() {
        let what = format!("<disk> with target '{}'", disk.target_dev);
        let cdrom = disk.device == DiskDevice::Cdrom;
        let bus = bus_of(disk).ok_or_else(|| {
            ctx.refuse(
                what.clone(),
                "its target names no bus; add <target bus='virtio'> (or sata, scsi, ide)",
            )
        })?;
        let target_index = target_index(&disk.target_dev);
        let (model, place) = match bus {
            DiskBus::Virtio if cdrom => {
                return Err(ctx.refuse(
                    format!("{what} on bus 'virtio'"),
                    "a CD-ROM drive sits on bus 'sata', 'scsi' or 'ide'",
                ));
            }
            DiskBus::Virtio => (
                match disk.model {
                    None | Some(VirtioModel::Virtio) => "virtio-blk-pci",
                    Some(VirtioModel::VirtioTransitional) => "virtio-blk-pci-transitional",
                    Some(VirtioModel::VirtioNonTransitional) => "virtio-blk-pci-non-transitional",
                },
                String::new(),
            ),
            DiskBus::Sata => {
                let (controller, port) = match drive_address(disk) {
                    Some((controller, _, _, unit)) => (controller, unit),
                    None => {
                        let i = target_index.unwrap_or(0);
                        (i / AHCI_PORTS, i % AHCI_PORTS)
                    }
                };
                let Some(bus) = u32::try_from(controller)
                    .ok()
                    .and_then(|c| buses.sata.get(&c))
                else {
                    return Err(ctx.refuse(
                        format!("{what} on SATA controller {controller}"),
                        "there is no such SATA controller",
                    ));
                };
                if port >= AHCI_PORTS {
                    return Err(ctx.refuse(
                        format!("{what} on SATA port {port}"),
                        "an AHCI controller has ports 0 to 5",
                    ));
                }
                let model = if cdrom { "ide-cd" } else { "ide-hd" };
                (model, format!(",bus={bus}.{port}"))
            }
            DiskBus::Ide => {
                if ctx.chipset != Chipset::I440fx {
                    return Err(ctx.refuse(
                        format!("{what} on bus 'ide'"),
                        "only the i440fx ('pc') machine has IDE; use bus='sata'",
                    ));
                }
                let (controller, bus, unit) = match drive_address(disk) {
                    Some((controller, bus, _, unit)) => (controller, bus, unit),
                    None => {
                        let i = target_index.unwrap_or(0);
                        (0, i / 2, i % 2)
                    }
                };
                if controller != 0 || bus > 1 || unit > 1 {
                    return Err(ctx.refuse(
                        format!("{what} on IDE controller {controller} bus {bus} unit {unit}"),
                        "the built-in IDE controller has buses 0 and 1 with units 0 and 1",
                    ));
                }
                let model = if cdrom { "ide-cd" } else { "ide-hd" };
                (model, format!(",bus=ide.{bus},unit={unit}"))
            }
            DiskBus::Scsi => {
                let (controller, target, lun) = match drive_address(disk) {
                    Some((controller, _, target, unit)) => (controller, target, unit),
                    None => (0, 0, target_index.unwrap_or(0)),
                };
                let Some(bus) = u32::try_from(controller)
                    .ok()
                    .and_then(|c| buses.scsi.get(&c))
                else {
                    return Err(ctx.refuse(
                        format!("{what} on SCSI controller {controller}"),
                        "there is no such SCSI controller",
                    ));
                };
                let model = if cdrom { "scsi-cd" } else { "scsi-hd" };
                (
                    model,
                    format!(",bus={bus}.0,channel=0,scsi-id={target},lun={lun}"),
                )
            }
            other => {
                return Err(ctx.refuse(
                    format!("{what} on bus '{other}'"),
                    "disks run on buses virtio, sata, scsi and ide",
                ));
            }
        };
        if !place.is_empty() && !taken.insert(place.clone()) {
            return Err(ctx.refuse(
                what,
                "another disk sits at the same place; give them distinct targets or addresses",
            ));
        }
        if disk.readonly && !cdrom && model == "ide-hd" {
            return Err(ctx.refuse(
                format!("{what} with <readonly/>"),
                "qemu's IDE and SATA disks cannot be read-only; use bus='virtio' or 'scsi'",
            ));
        }
        ctx.refuse_kept(&format!("{what}: "), &disk.kept)?;
        if let Some(driver) = &disk.driver {
            if let Some((name, value)) = driver.kept_attrs.first() {
                return Err(ctx.refuse(
                    format!("{what} with <driver {name}='{value}'>"),
                    "lxvirt keeps it but does not run it",
                ));
            }
            ctx.refuse_kept(&format!("{what}: <driver>"), &driver.kept)?;
        }
        let queues = disk.driver.as_ref().and_then(|d| d.queues);
        let virtio = model.starts_with("virtio-blk");
        if let (Some(m), false) = (disk.model, virtio) {
            return Err(ctx.refuse(
                format!("{what} with model='{m}'"),
                "a disk's model is a virtio variant; use bus='virtio' or leave model out",
            ));
        }
        if queues.is_some() && !virtio {
            return Err(ctx.refuse(
                format!("{what} with <driver queues>"),
                "request queues are a virtio disk's; use bus='virtio' or leave queues out",
            ));
        }
        let node = disk_nodes(args, ctx, index, disk, &what)?;
        let id = ctx.id(
            disk.alias.as_deref(),
            format!("disk-{}", disk.target_dev),
            &what,
        )?;
        let mut device = format!("{model}{place}");
        if let Some(node) = node {
            device.push_str(&format!(",drive={node}"));
        }
        device.push_str(&format!(",id={id}"));
        if let Some(serial) = &disk.serial {
            device.push_str(&format!(",serial={}", escape(serial)));
        }
        if let Some(order) = disk.boot_order {
            device.push_str(&format!(",bootindex={order}"));
        }
        if disk.shareable {
            // Lets another qemu write the image too; its users share it
            // knowingly (a cluster file system).
            device.push_str(",share-rw=on");
        }
        if let Some(cache) = disk.driver.as_ref().and_then(|d| d.cache).map(cache_mode) {
            device.push_str(&format!(",write-cache={}", on_off(cache.write_cache)));
        }
        if let Some(queues) = queues {
            device.push_str(&format!(",num-queues={queues}"));
        }
        args.push2("-device", device);
    }
    Ok(())
}

/// `<loader>` and `<nvram>`: a ROM image (`-bios`), or flash images
/// given to the machine as `pflash0` (the code) and `pflash1` (the
/// variable store, which the driver copied from its template).
pub(super) fn firmware(
    args: &mut Args,
    machine: &mut String,
    ctx: &Ctx<'_>,
    os: &HvmOs,
) -> Result<(), CommandError> {
    let Some(loader) = &os.loader else {
        if os.firmware == Some(crate::domain::Firmware::Efi) {
            return Err(ctx.refuse(
                "<os firmware='efi'> without <loader>",
                "lxvirt does not choose firmware files; name them in <loader> and <nvram>",
            ));
        }
        return Ok(());
    };
    let Some(path) = &loader.path else {
        return Err(ctx.refuse(
            "<os><loader> without a path",
            "lxvirt does not choose firmware files; name the file in <loader>",
        ));
    };
    // libvirt reads a loader without type= as a ROM image too.
    if loader.loader_type != Some(LoaderType::Pflash) {
        if loader.secure == Some(true) {
            return Err(ctx.refuse(
                "<os><loader type='rom' secure='yes'>",
                "secure boot needs flash firmware (type='pflash')",
            ));
        }
        args.push2("-bios", path.as_os_str());
        return Ok(());
    }
    if ctx.chipset == Chipset::Other {
        return Err(ctx.refuse(
            "<os><loader type='pflash'>",
            "flash firmware runs on the q35 and i440fx machines",
        ));
    }
    // Read-only unless said otherwise: the code of split firmware must
    // not change; a combined image (code and variables) says readonly='no'.
    let read_only = loader.readonly != Some(false);
    let options = NodeOptions {
        cache: None,
        aio: None,
        discard: None,
    };
    let code = Layer {
        path,
        block: false,
        format: ImageFormat::Raw,
    };
    push_layer(args, &code, "pflash0", read_only, None, &options, false);
    machine.push_str(",pflash0=pflash0");
    let stateless = loader.stateless == Some(true);
    match os.nvram.as_ref().and_then(|n| n.path.as_deref()) {
        Some(_) if stateless => {
            return Err(ctx.refuse(
                "<os><loader stateless='yes'> with <nvram>",
                "stateless firmware keeps no variables; remove <nvram> or stateless",
            ));
        }
        Some(vars) => {
            let vars = Layer {
                path: vars,
                block: false,
                format: ImageFormat::Raw,
            };
            push_layer(args, &vars, "pflash1", false, None, &options, false);
            machine.push_str(",pflash1=pflash1");
        }
        // Stateless firmware runs from its code alone.
        None if read_only && !stateless => {
            return Err(ctx.refuse(
                "<os><loader type='pflash' readonly='yes'> without <nvram>",
                "read-only firmware code needs a variable store; add <nvram>PATH</nvram>",
            ));
        }
        None => {}
    }
    if loader.secure == Some(true) {
        if ctx.def.features.smm == Some(false) {
            return Err(ctx.refuse(
                "<os><loader secure='yes'> with <smm state='off'>",
                "secure boot needs SMM; use <smm state='on'/>",
            ));
        }
        if ctx.def.features.smm.is_none() {
            machine.push_str(",smm=on");
        }
        // Only code running in SMM may then write the flash.
        args.push2("-global", "driver=cfi.pflash01,property=secure,value=on");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::Value;

    use super::super::tests::{line_with, refusal, settings, value, values, vm, with_devices};
    use super::super::{Accel, Settings};

    fn nodes(args: &[String]) -> Vec<Value> {
        values(args, "-blockdev")
            .into_iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    fn node<'a>(nodes: &'a [Value], name: &str) -> &'a Value {
        nodes
            .iter()
            .find(|n| n["node-name"] == name)
            .unwrap_or_else(|| panic!("{name} in {nodes:#?}"))
    }

    const CHAIN: &str = "<disk type='file' device='disk'>\
        <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>\
        <source file='/img/top.qcow2'/>\
        <backingStore type='file'><format type='qcow2'/><source file='/img/mid.qcow2'/>\
          <backingStore type='block'><format type='raw'/><source dev='/dev/vg/base'/></backingStore>\
        </backingStore>\
        <target dev='vda' bus='virtio'/><boot order='2'/><serial>a,b</serial></disk>";

    #[test]
    fn a_backing_chain_is_a_node_graph_bottom_first() {
        let args = line_with(&with_devices("q35", CHAIN), &settings(Accel::Kvm));
        let nodes = nodes(&args);
        let names: Vec<&str> = nodes
            .iter()
            .map(|n| n["node-name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "disk0-b2-file",
                "disk0-b2",
                "disk0-b1-file",
                "disk0-b1",
                "disk0-file",
                "disk0"
            ]
        );
        let base = node(&nodes, "disk0-b2-file");
        assert_eq!(base["driver"], "host_device");
        assert_eq!(base["filename"], "/dev/vg/base");
        assert_eq!(base["aio"], "native");
        assert_eq!(node(&nodes, "disk0-b2")["driver"], "raw");
        assert!(node(&nodes, "disk0-b2").get("backing").is_none());
        assert_eq!(node(&nodes, "disk0-b1")["backing"], "disk0-b2");
        assert_eq!(node(&nodes, "disk0")["backing"], "disk0-b1");
        assert_eq!(node(&nodes, "disk0")["driver"], "qcow2");
        for n in &nodes {
            let top = n["node-name"].as_str().unwrap().starts_with("disk0-b");
            assert_eq!(n["read-only"], top, "{n}");
            assert_eq!(n["cache"]["direct"], true, "{n}");
            assert_eq!(n["discard"], "unmap", "{n}");
        }
        assert_eq!(
            value(&args, "-device"),
            "virtio-blk-pci,drive=disk0,id=disk-vda,serial=a,,b,bootindex=2,write-cache=on"
        );
    }

    #[test]
    fn the_chain_ends_where_the_definition_says() {
        let open = "<disk type='file'><driver type='qcow2'/><source file='/a.qcow2'/>\
            <target dev='vda'/></disk>";
        let args = line_with(&with_devices("q35", open), &settings(Accel::Kvm));
        // qemu follows the image's header.
        assert!(node(&nodes(&args), "disk0").get("backing").is_none());
        let closed = "<disk type='file'><driver type='qcow2'/><source file='/a.qcow2'/>\
            <backingStore/><target dev='vda'/></disk>";
        let args = line_with(&with_devices("q35", closed), &settings(Accel::Kvm));
        assert_eq!(node(&nodes(&args), "disk0")["backing"], Value::Null);
        // Without <driver type> an image is raw.
        let raw = "<disk type='file'><source file='/a.img'/><target dev='vda'/></disk>";
        let args = line_with(&with_devices("q35", raw), &settings(Accel::Kvm));
        assert_eq!(node(&nodes(&args), "disk0")["driver"], "raw");
    }

    #[test]
    fn a_transient_disk_writes_to_the_overlay_over_its_read_only_chain() {
        let def = with_devices(
            "q35",
            "<disk type='file'><driver type='raw'/><source file='/a.img'/><target dev='vdb'/><transient/></disk>",
        );
        assert!(
            refusal(&def, &settings(Accel::Kvm))
                .contains("<disk> with target 'vdb' with <transient/> cannot run yet (the driver prepared no overlay for it)")
        );
        let mut with_overlay = settings(Accel::Kvm);
        with_overlay.disk_overlays = vec![Some("/run/vm/vdb.qcow2".into())];
        let args = line_with(&def, &with_overlay);
        let nodes = nodes(&args);
        assert_eq!(node(&nodes, "disk0")["read-only"], true);
        let overlay = node(&nodes, "disk0-overlay");
        assert_eq!(overlay["driver"], "qcow2");
        assert_eq!(overlay["backing"], "disk0");
        assert_eq!(overlay["read-only"], false);
        assert_eq!(
            node(&nodes, "disk0-overlay-file")["filename"],
            "/run/vm/vdb.qcow2"
        );
        assert_eq!(
            value(&args, "-device"),
            "virtio-blk-pci,drive=disk0-overlay,id=disk-vdb"
        );
    }

    #[test]
    fn disks_sit_on_their_bus() {
        let def = with_devices(
            "pc-q35-7.2",
            "<disk type='file' device='cdrom'><target dev='sdb' bus='sata'/><readonly/></disk>\
             <disk type='file'><source file='/d.img'/><target dev='sdz' bus='sata'/>\
               <address type='drive' controller='0' bus='0' target='0' unit='3'/></disk>\
             <disk type='file'><source file='/s.img'/><target dev='sdc' bus='scsi'/>\
               <shareable/><alias name='ua-s'/></disk>\
             <disk type='block' device='cdrom'><source dev='/dev/sr0'/><target dev='sdd' bus='scsi'/></disk>",
        );
        let args = line_with(&def, &settings(Accel::Kvm));
        assert_eq!(
            values(&args, "-device"),
            [
                // Added: a SCSI disk needs a controller.
                "virtio-scsi-pci,id=scsi0",
                // An empty drive has no node.
                "ide-cd,bus=ide.1,id=disk-sdb",
                "ide-hd,bus=ide.3,drive=disk1,id=disk-sdz",
                "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=2,drive=disk2,id=ua-s,share-rw=on",
                "scsi-cd,bus=scsi0.0,channel=0,scsi-id=0,lun=3,drive=disk3,id=disk-sdd",
            ]
        );
        assert_eq!(node(&nodes(&args), "disk3-file")["driver"], "host_cdrom");

        let ide = vm(
            "<vcpu>1</vcpu><os><type machine='pc'>hvm</type></os><devices>\
             <disk type='file'><source file='/a.img'/><target dev='hda'/></disk>\
             <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>\
             <disk type='file'><source file='/b.img'/><target dev='sda' bus='sata'/></disk></devices>",
        );
        assert_eq!(
            values(&line_with(&ide, &settings(Accel::Kvm)), "-device"),
            [
                "ich9-ahci,id=sata0",
                "ide-hd,bus=ide.0,unit=0,drive=disk0,id=disk-hda",
                "ide-cd,bus=ide.1,unit=0,id=disk-hdc",
                "ide-hd,bus=sata0.0,drive=disk2,id=disk-sda",
            ]
        );
    }

    #[test]
    fn disks_that_cannot_run_are_refused_naming_the_target() {
        let s = settings(Accel::Kvm);
        for (machine, disk, expected) in [
            (
                "q35",
                "<disk type='file'><source file='/a'/><target dev='sda' bus='usb'/></disk>",
                "<disk> with target 'sda' on bus 'usb' cannot run yet",
            ),
            (
                "q35",
                "<disk type='file'><source file='/a'/><target dev='xvda'/></disk>",
                "<disk> with target 'xvda' cannot run yet (its target names no bus",
            ),
            (
                "q35",
                "<disk type='file'><source file='/a'/><target dev='hda' bus='ide'/></disk>",
                "<disk> with target 'hda' on bus 'ide' cannot run yet (only the i440fx",
            ),
            (
                "q35",
                "<disk type='file' device='cdrom'><target dev='vdc' bus='virtio'/></disk>",
                "<disk> with target 'vdc' on bus 'virtio'",
            ),
            (
                "q35",
                "<disk type='file'><source file='/a'/><target dev='sda' bus='sata'/><readonly/></disk>",
                "<disk> with target 'sda' with <readonly/>",
            ),
            (
                "q35",
                "<disk type='file'><driver type='vmdk'/><source file='/a'/><target dev='vda'/></disk>",
                "<disk> with target 'vda' in format 'vmdk'",
            ),
            (
                "q35",
                "<disk type='file'><driver type='raw' io='native'/><source file='/a'/><target dev='vda'/></disk>",
                "<disk> with target 'vda' with <driver io='native'>",
            ),
            (
                "q35",
                "<disk type='file'><driver type='qcow2'/><source file='/a'/>\
                 <backingStore type='file'><source file='/b'/></backingStore><target dev='vda'/></disk>",
                "<disk> with target 'vda': <backingStore> of '/b'",
            ),
            (
                "q35",
                "<disk type='file'><driver type='qcow2'/><source file='/a'/>\
                 <backingStore type='file'><format type='raw'/><source file='/b'/>\
                 <backingStore type='file'><format type='raw'/><source file='/c'/></backingStore>\
                 </backingStore><target dev='vda'/></disk>",
                "<disk> with target 'vda': <backingStore> under '/b'",
            ),
            (
                "q35",
                "<disk type='file'><source file='/a'/><target dev='sda' bus='sata'/></disk>\
                 <disk type='file'><source file='/b'/><target dev='sdb' bus='sata'/>\
                 <address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>",
                "<disk> with target 'sdb' cannot run yet (another disk sits at the same place",
            ),
            (
                "q35",
                "<disk type='file'><source file='/a'/><target dev='vda'/><alias name='1bad'/></disk>",
                "<disk> with target 'vda' with <alias name='1bad'>",
            ),
        ] {
            let error = refusal(&with_devices(machine, disk), &s);
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn flash_firmware_and_its_variable_store() {
        let def = vm("<vcpu>1</vcpu><os><type machine='q35'>hvm</type>\
             <loader readonly='yes' secure='yes' type='pflash'>/fw/CODE.secboot.fd</loader>\
             <nvram template='/fw/VARS.fd'>/var/lib/vm/VARS.fd</nvram></os>");
        let args = line_with(&def, &settings(Accel::Kvm));
        assert_eq!(
            value(&args, "-machine"),
            "q35,accel=kvm,acpi=off,pflash0=pflash0,pflash1=pflash1,smm=on"
        );
        let nodes = nodes(&args);
        assert_eq!(
            node(&nodes, "pflash0-file")["filename"],
            "/fw/CODE.secboot.fd"
        );
        assert_eq!(node(&nodes, "pflash0")["read-only"], true);
        assert_eq!(
            node(&nodes, "pflash1-file")["filename"],
            "/var/lib/vm/VARS.fd"
        );
        assert_eq!(node(&nodes, "pflash1")["read-only"], false);
        assert_eq!(
            value(&args, "-global"),
            "driver=cfi.pflash01,property=secure,value=on"
        );

        let rom = vm("<vcpu>1</vcpu><os><type machine='pc'>hvm</type>\
             <loader type='rom'>/fw/bios.bin</loader></os>");
        assert_eq!(
            value(&line_with(&rom, &settings(Accel::Kvm)), "-bios"),
            "/fw/bios.bin"
        );

        for (os, expected) in [
            (
                "<loader readonly='yes' type='pflash'>/fw/CODE.fd</loader>",
                "<os><loader type='pflash' readonly='yes'> without <nvram>",
            ),
            (
                "<loader readonly='yes' secure='yes' type='pflash'>/fw/C.fd</loader><nvram>/v.fd</nvram>",
                "<os><loader secure='yes'> with <smm state='off'>",
            ),
        ] {
            let def = vm(&format!(
                "<vcpu>1</vcpu><os><type machine='q35'>hvm</type>{os}</os>\
                 <features><smm state='off'/></features>"
            ));
            let error = refusal(&def, &settings(Accel::Kvm));
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let efi = vm("<vcpu>1</vcpu><os firmware='efi'><type machine='q35'>hvm</type></os>");
        assert!(
            refusal(&efi, &Settings::new(Accel::Kvm, "/q".into()))
                .contains("<os firmware='efi'> without <loader>")
        );
    }
}
