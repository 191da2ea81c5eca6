//! cgroups for containers: the project's own small layer over cgroup v1,
//! v2 and the hybrid layout (v1 controllers plus a cgroup2 mount).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a container's cgroup should look like; resolved by the daemon from
/// `<memory>`, `<memtune>`, `<cputune>`, `<vcpu cpuset>`, `<numatune>`,
/// `<blkiotune>`, `<resource>` and the devices the container may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// Path of the container's cgroup below each hierarchy's root, such as
    /// `machine/lxvirt-web` (partition, then `lxvirt-NAME`).
    pub path: PathBuf,
    /// Hard memory limit, bytes.
    pub memory_limit: Option<u64>,
    /// Soft limit (v1 `memory.soft_limit_in_bytes`, v2 `memory.low`), bytes.
    pub memory_soft_limit: Option<u64>,
    /// Memory plus swap, bytes (libvirt's swap_hard_limit).
    pub memory_swap_limit: Option<u64>,
    /// Relative CPU weight in v1 shares (2..262144); converted for v2.
    pub cpu_shares: Option<u64>,
    /// CFS period and quota, microseconds; quota -1 means unlimited.
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    /// cpuset.cpus / cpuset.mems lists, such as `0-1,3`.
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Block I/O weight (100..1000) and per-device throttles.
    pub blkio_weight: Option<u32>,
    pub blkio_devices: Vec<BlkioDeviceLimit>,
    /// Maximum number of tasks.
    pub pids_max: Option<u64>,
    /// Device access allow-list; everything else is denied.
    pub devices: Vec<DeviceRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioDeviceLimit {
    pub major: u32,
    pub minor: u32,
    pub weight: Option<u32>,
    pub read_bytes_sec: Option<u64>,
    pub write_bytes_sec: Option<u64>,
    pub read_iops_sec: Option<u64>,
    pub write_iops_sec: Option<u64>,
}

/// One allow rule of the devices controller (`c 1:3 rwm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// 'c', 'b' or 'a' (all).
    pub kind: char,
    /// `None` is `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Some of "rwm".
    pub access: String,
}
