//! The part of a domain's cgroup that every driver derives the same way
//! from its definition: where it lives and the tuning elements. What
//! differs stays with the driver: the memory limit (a container's
//! `<memory>` bounds it, a VM's bounds only its guest) and the devices.

use std::path::Path;

use super::{BlkioDeviceLimit, CgroupSpec, DeviceRule};
use crate::domain::DomainDef;

/// The cgroup of `def` below each hierarchy's root: its partition (or
/// `default_partition`), then `lxvirt-NAME`; with `<memtune>` soft and
/// swap limits, `<cputune>`, the `<vcpu cpuset>`, `<numatune>`,
/// `<blkiotune>` (each device's numbers from `device_numbers`, which
/// names the device in its error) and the domain's `<lxvirt:pids max>`,
/// else `pids_max` (the daemon's setting). No hard memory limit and no
/// device rule.
pub fn tuning<E>(
    def: &DomainDef,
    default_partition: &Path,
    pids_max: Option<u64>,
    device_numbers: impl Fn(&Path) -> Result<(u32, u32), E>,
) -> Result<CgroupSpec, E> {
    let partition = def.partition.as_deref().unwrap_or(default_partition);
    let partition = partition.strip_prefix("/").unwrap_or(partition);
    let memtune = def.memtune.clone().unwrap_or_default();
    let cputune = def.cputune.clone().unwrap_or_default();
    let mut blkio_devices = Vec::new();
    if let Some(blkio) = &def.blkiotune {
        for device in &blkio.devices {
            let (major, minor) = device_numbers(&device.path)?;
            blkio_devices.push(BlkioDeviceLimit {
                major,
                minor,
                weight: device.weight,
                read_bytes_sec: device.read_bytes_sec,
                write_bytes_sec: device.write_bytes_sec,
                read_iops_sec: device.read_iops_sec,
                write_iops_sec: device.write_iops_sec,
            });
        }
    }
    Ok(CgroupSpec {
        path: partition.join(format!("lxvirt-{}", def.name())),
        memory_limit: memtune.hard_limit,
        memory_soft_limit: memtune.soft_limit,
        memory_swap_limit: memtune.swap_hard_limit,
        cpu_shares: cputune.shares,
        cpu_period: cputune.period,
        cpu_quota: cputune.quota,
        cpuset_cpus: def.vcpu.cpuset.as_ref().map(ToString::to_string),
        cpuset_mems: def
            .numatune
            .as_ref()
            .and_then(|n| n.memory.as_ref())
            .map(|m| m.nodeset.to_string()),
        blkio_weight: def.blkiotune.as_ref().and_then(|b| b.weight),
        blkio_devices,
        pids_max: def.pids_max.or(pids_max),
        delegated: None,
        devices: Vec::new(),
    })
}

/// What every domain's processes may open: null, zero, full, random,
/// urandom, tty, console, ptmx and the pty slaves.
pub fn base_device_rules() -> Vec<DeviceRule> {
    let char_dev = |major, minor: Option<u32>| DeviceRule {
        kind: 'c',
        major: Some(major),
        minor,
        access: "rwm".into(),
    };
    vec![
        char_dev(1, Some(3)),
        char_dev(1, Some(5)),
        char_dev(1, Some(7)),
        char_dev(1, Some(8)),
        char_dev(1, Some(9)),
        char_dev(5, Some(0)),
        char_dev(5, Some(1)),
        char_dev(5, Some(2)),
        char_dev(136, None),
    ]
}
