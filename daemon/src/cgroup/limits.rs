//! From a [`CgroupSpec`] to the list of interface-file writes that apply
//! it, on whichever cgroup version handles each controller. Pure: no I/O,
//! so every mapping is tested without a kernel.

use std::fmt::Write as _;

use super::bpf_devices::{self, Insn};
use super::hierarchy::Controller;
use super::{CgroupError, CgroupSpec, DeviceRule, Dir};

/// The domain elements named in errors.
pub(super) mod element {
    pub const MEMORY_LIMIT: &str = "<memtune><hard_limit>";
    pub const MEMORY_SOFT_LIMIT: &str = "<memtune><soft_limit>";
    pub const SWAP_LIMIT: &str = "<memtune><swap_hard_limit>";
    pub const CPU_SHARES: &str = "<cputune><shares>";
    pub const CPU_PERIOD: &str = "<cputune><period>";
    pub const CPU_QUOTA: &str = "<cputune><quota>";
    pub const CPUSET_CPUS: &str = "<vcpu cpuset>";
    pub const CPUSET_MEMS: &str = "<numatune><memory nodeset>";
    pub const BLKIO_WEIGHT: &str = "<blkiotune><weight>";
    pub const BLKIO_DEVICE: &str = "<blkiotune><device>";
    pub const PIDS: &str = "the task limit (pids.max)";
    pub const DEVICES: &str = "the device allow-list";
}

/// One write of a value to an interface file of one of the container's
/// directories. `files` lists alternatives: the first that exists is
/// written (`blkio.weight` is `blkio.bfq.weight` under BFQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Write {
    /// Index into the container's directories.
    pub dir: usize,
    pub files: &'static [&'static str],
    pub value: String,
    pub element: &'static str,
    /// Added to the error when none of `files` exists or the kernel
    /// refuses the value.
    pub hint: &'static str,
}

/// What applies a [`CgroupSpec`]: writes to interface files, in order,
/// and on cgroup2 the device program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    pub writes: Vec<Write>,
    /// The device allow-list as a `BPF_CGROUP_DEVICE` program, and the
    /// index of the (cgroup2) directory to attach it to; `None` where
    /// the v1 devices controller enforces the list.
    pub device_program: Option<(usize, Vec<Insn>)>,
}

/// What applies `spec` to `dirs`: every limit, and the device allow-list
/// through the v1 devices controller if a v1 hierarchy has it, else
/// through a device program on cgroup2.
pub(super) fn plan(spec: &CgroupSpec, dirs: &[Dir]) -> Result<Applied, CgroupError> {
    let mut plan = Plan {
        dirs,
        writes: Vec::new(),
    };
    plan.memory(spec)?;
    plan.cpu(spec)?;
    plan.cpuset(spec)?;
    plan.blkio(spec)?;
    if let Some(max) = spec.pids_max {
        let (dir, _) = plan.handler(Controller::Pids, element::PIDS)?;
        plan.push(dir, &["pids.max"], max.to_string(), element::PIDS);
    }
    let device_program = plan.devices(spec)?;
    Ok(Applied {
        writes: plan.writes,
        device_program,
    })
}

/// cgroup2's `cpu.weight` (1..10000) for v1 `cpu.shares` (2..262144),
/// mapped linearly as systemd does: the v1 default of 1024 shares becomes
/// weight 39 (the v2 default weight, 100, is about 2597 shares).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The CFS period both versions default to, microseconds.
const DEFAULT_CPU_PERIOD: u64 = 100_000;

struct Plan<'a> {
    dirs: &'a [Dir],
    writes: Vec<Write>,
}

impl Plan<'_> {
    /// The directory whose hierarchy handles `c`, and whether it is v2.
    fn handler(&self, c: Controller, element: &'static str) -> Result<(usize, bool), CgroupError> {
        self.dirs
            .iter()
            .position(|d| d.handles.contains(c))
            .map(|i| (i, self.dirs[i].v2))
            .ok_or_else(|| CgroupError::Unsupported {
                element,
                reason: format!(
                    "this host has no {c} controller (no v1 hierarchy has it and the cgroup2 root does not offer it)"
                ),
            })
    }

    fn push(
        &mut self,
        dir: usize,
        files: &'static [&'static str],
        value: String,
        element: &'static str,
    ) {
        self.push_hinted(dir, files, value, element, "");
    }

    fn push_hinted(
        &mut self,
        dir: usize,
        files: &'static [&'static str],
        value: String,
        element: &'static str,
        hint: &'static str,
    ) {
        self.writes.push(Write {
            dir,
            files,
            value,
            element,
            hint,
        });
    }

    fn memory(&mut self, spec: &CgroupSpec) -> Result<(), CgroupError> {
        if let Some(swap) = spec.memory_swap_limit {
            match spec.memory_limit {
                None => {
                    return Err(CgroupError::InvalidSpec {
                        element: element::SWAP_LIMIT,
                        reason: "it limits memory plus swap and needs <hard_limit>".into(),
                    });
                }
                Some(limit) if swap < limit => {
                    return Err(CgroupError::InvalidSpec {
                        element: element::SWAP_LIMIT,
                        reason: "it limits memory plus swap and must not be below <hard_limit>"
                            .into(),
                    });
                }
                Some(_) => {}
            }
        }
        const SWAP_HINT: &str = " (boot with swapaccount=1)";
        if let Some(limit) = spec.memory_limit {
            let (dir, v2) = self.handler(Controller::Memory, element::MEMORY_LIMIT)?;
            let file: &[&str] = if v2 {
                &["memory.max"]
            } else {
                &["memory.limit_in_bytes"]
            };
            self.push(dir, file, limit.to_string(), element::MEMORY_LIMIT);
        }
        if let Some(soft) = spec.memory_soft_limit {
            let (dir, v2) = self.handler(Controller::Memory, element::MEMORY_SOFT_LIMIT)?;
            let file: &[&str] = if v2 {
                &["memory.low"]
            } else {
                &["memory.soft_limit_in_bytes"]
            };
            self.push(dir, file, soft.to_string(), element::MEMORY_SOFT_LIMIT);
        }
        if let (Some(swap), Some(limit)) = (spec.memory_swap_limit, spec.memory_limit) {
            let (dir, v2) = self.handler(Controller::Memory, element::SWAP_LIMIT)?;
            if v2 {
                // cgroup2 limits swap alone.
                let value = (swap - limit).to_string();
                self.push_hinted(
                    dir,
                    &["memory.swap.max"],
                    value,
                    element::SWAP_LIMIT,
                    SWAP_HINT,
                );
            } else {
                self.push_hinted(
                    dir,
                    &["memory.memsw.limit_in_bytes"],
                    swap.to_string(),
                    element::SWAP_LIMIT,
                    SWAP_HINT,
                );
            }
        }
        Ok(())
    }

    fn cpu(&mut self, spec: &CgroupSpec) -> Result<(), CgroupError> {
        if let Some(shares) = spec.cpu_shares {
            let (dir, v2) = self.handler(Controller::Cpu, element::CPU_SHARES)?;
            if v2 {
                let weight = shares_to_weight(shares).to_string();
                self.push(dir, &["cpu.weight"], weight, element::CPU_SHARES);
            } else {
                self.push(
                    dir,
                    &["cpu.shares"],
                    shares.to_string(),
                    element::CPU_SHARES,
                );
            }
        }
        if spec.cpu_period.is_none() && spec.cpu_quota.is_none() {
            return Ok(());
        }
        let element = if spec.cpu_quota.is_some() {
            element::CPU_QUOTA
        } else {
            element::CPU_PERIOD
        };
        let (dir, v2) = self.handler(Controller::Cpu, element)?;
        if v2 {
            let period = spec.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD);
            let value = match spec.cpu_quota {
                Some(quota) if quota >= 0 => format!("{quota} {period}"),
                _ => format!("max {period}"),
            };
            self.push(dir, &["cpu.max"], value, element);
        } else {
            if let Some(period) = spec.cpu_period {
                let value = period.to_string();
                self.push(dir, &["cpu.cfs_period_us"], value, element::CPU_PERIOD);
            }
            if let Some(quota) = spec.cpu_quota {
                let value = quota.max(-1).to_string();
                self.push(dir, &["cpu.cfs_quota_us"], value, element::CPU_QUOTA);
            }
        }
        Ok(())
    }

    fn cpuset(&mut self, spec: &CgroupSpec) -> Result<(), CgroupError> {
        // The file names are the same on both versions.
        if let Some(cpus) = &spec.cpuset_cpus {
            let (dir, _) = self.handler(Controller::Cpuset, element::CPUSET_CPUS)?;
            self.push(dir, &["cpuset.cpus"], cpus.clone(), element::CPUSET_CPUS);
        }
        if let Some(mems) = &spec.cpuset_mems {
            let (dir, _) = self.handler(Controller::Cpuset, element::CPUSET_MEMS)?;
            self.push(dir, &["cpuset.mems"], mems.clone(), element::CPUSET_MEMS);
        }
        Ok(())
    }

    fn blkio(&mut self, spec: &CgroupSpec) -> Result<(), CgroupError> {
        const WEIGHT_HINT: &str = " (no I/O scheduler with weights: select bfq for the disk)";
        // cgroup2 takes a device's weight only where a weight-based
        // controller runs for it (EOPNOTSUPP otherwise).
        const DEVICE_WEIGHT_HINT: &str = " (a weight for one disk needs bfq as its I/O scheduler, \
             or on cgroup2 the io.cost controller enabled for it in /sys/fs/cgroup/io.cost.qos)";
        const V1_WEIGHT: &[&str] = &["blkio.weight", "blkio.bfq.weight"];
        const V1_WEIGHT_DEVICE: &[&str] = &["blkio.weight_device", "blkio.bfq.weight_device"];
        const V2_WEIGHT: &[&str] = &["io.weight", "io.bfq.weight"];
        if let Some(weight) = spec.blkio_weight {
            let (dir, v2) = self.handler(Controller::Blkio, element::BLKIO_WEIGHT)?;
            let (files, value) = if v2 {
                (V2_WEIGHT, format!("default {weight}"))
            } else {
                (V1_WEIGHT, weight.to_string())
            };
            self.push_hinted(dir, files, value, element::BLKIO_WEIGHT, WEIGHT_HINT);
        }
        if spec.blkio_devices.is_empty() {
            return Ok(());
        }
        let (dir, v2) = self.handler(Controller::Blkio, element::BLKIO_DEVICE)?;
        for device in &spec.blkio_devices {
            let id = format!("{}:{}", device.major, device.minor);
            if let Some(weight) = device.weight {
                let files = if v2 { V2_WEIGHT } else { V1_WEIGHT_DEVICE };
                let value = format!("{id} {weight}");
                self.push_hinted(dir, files, value, element::BLKIO_DEVICE, DEVICE_WEIGHT_HINT);
            }
            if v2 {
                let mut line = id.clone();
                for (key, value) in [
                    ("rbps", device.read_bytes_sec),
                    ("wbps", device.write_bytes_sec),
                    ("riops", device.read_iops_sec),
                    ("wiops", device.write_iops_sec),
                ] {
                    if let Some(value) = value {
                        // Writing to a String cannot fail.
                        let _ = write!(line, " {key}={value}");
                    }
                }
                if line.len() > id.len() {
                    self.push(dir, &["io.max"], line, element::BLKIO_DEVICE);
                }
            } else {
                let throttles: [(&'static [&'static str], Option<u64>); 4] = [
                    (&["blkio.throttle.read_bps_device"], device.read_bytes_sec),
                    (&["blkio.throttle.write_bps_device"], device.write_bytes_sec),
                    (&["blkio.throttle.read_iops_device"], device.read_iops_sec),
                    (&["blkio.throttle.write_iops_device"], device.write_iops_sec),
                ];
                for (file, value) in throttles {
                    if let Some(value) = value {
                        self.push(dir, file, format!("{id} {value}"), element::BLKIO_DEVICE);
                    }
                }
            }
        }
        Ok(())
    }

    /// On v1: deny everything, then allow each rule. On cgroup2: the
    /// program enforcing the rules, and where it goes.
    fn devices(&mut self, spec: &CgroupSpec) -> Result<Option<(usize, Vec<Insn>)>, CgroupError> {
        let lines = spec
            .devices
            .iter()
            .map(device_line)
            .collect::<Result<Vec<String>, CgroupError>>()?;
        if let Some(dir) = self
            .dirs
            .iter()
            .position(|d| !d.v2 && d.handles.contains(Controller::Devices))
        {
            self.push(dir, &["devices.deny"], "a".into(), element::DEVICES);
            for line in lines {
                self.push(dir, &["devices.allow"], line, element::DEVICES);
            }
            return Ok(None);
        }
        if let Some(dir) = self.dirs.iter().position(|d| d.v2) {
            return Ok(Some((dir, bpf_devices::compile(&spec.devices))));
        }
        Err(CgroupError::Unsupported {
            element: element::DEVICES,
            reason: "this host has no devices controller (mount its v1 hierarchy, or cgroup2)"
                .into(),
        })
    }
}

/// A rule as the v1 `devices.allow` file takes it: `c 1:3 rwm`, `a`.
pub(super) fn device_line(rule: &DeviceRule) -> Result<String, CgroupError> {
    let invalid = |reason: String| CgroupError::InvalidSpec {
        element: element::DEVICES,
        reason,
    };
    if !matches!(rule.kind, 'a' | 'b' | 'c') {
        return Err(invalid(format!(
            "device kind '{}' is none of 'a', 'b', 'c'",
            rule.kind
        )));
    }
    if rule.access.is_empty() || !rule.access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!(
            "device access '{}' is not made of 'r', 'w', 'm'",
            rule.access
        )));
    }
    if rule.kind == 'a' {
        return Ok("a".into());
    }
    let number = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
    Ok(format!(
        "{} {}:{} {}",
        rule.kind,
        number(rule.major),
        number(rule.minor),
        rule.access
    ))
}
