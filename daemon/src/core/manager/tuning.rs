//! Live tuning: the memory, CPU scheduler and block I/O parameters of a domain — of
//! its running instance (its cgroup, through its driver), of its
//! persistent definition, or both, as libvirt's `AFFECT_*` flags say.
//!
//! As for device changes, a live change is in flight in the lifecycle
//! table (`Devices`) until the driver answers, and the new definitions
//! are checked whole (formatted and parsed again) before anything is
//! written; the driver writes only the values that change and puts back
//! the old ones if the kernel refuses one, so nothing is half applied.

use std::path::PathBuf;

use uuid::Uuid;

use super::{Internal, Manager, Reply};
use crate::core::lifecycle::{Operation, Report};
use crate::core::types::{AffectFlags, CoreError, Seq};
use crate::domain::DomainDef;
use crate::driver::{BoxFuture, Request, Response};

/// `<memtune>` values to set, in bytes; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryParams {
    pub hard_limit: Option<u64>,
    pub soft_limit: Option<u64>,
    pub swap_hard_limit: Option<u64>,
}

/// `<cputune>` values to set; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerParams {
    pub shares: Option<u64>,
    /// Microseconds.
    pub period: Option<u64>,
    /// Microseconds per period; -1 is unlimited.
    pub quota: Option<i64>,
}

/// `<blkiotune>` values to set: the weight, and per device (by its path)
/// the values given, 0 removing one; those not given stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioParams {
    pub weight: Option<u32>,
    pub devices: Vec<(PathBuf, BlkioField, u64)>,
}

/// A per-device value of `<blkiotune><device>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkioField {
    Weight,
    ReadBytesSec,
    WriteBytesSec,
    ReadIopsSec,
    WriteIopsSec,
}

/// `<numatune><memory>` values to set: the host nodes the domain's
/// memory comes from (`cpuset.mems`), and the policy, which a running
/// instance cannot change (its pages are placed already).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumaParams {
    pub nodeset: Option<crate::domain::CpuSet>,
    pub mode: Option<crate::domain::NumaMode>,
}

/// A change of a domain's tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tuning {
    Memory(MemoryParams),
    Scheduler(SchedulerParams),
    Blkio(BlkioParams),
    Numa(NumaParams),
    /// `<currentMemory>`, bytes: a container's memory limit (unless
    /// `<memtune><hard_limit>` sets one), a VM's balloon target.
    CurrentMemory(u64),
    /// `<memory>`, bytes: the maximum, in the definition only.
    MaxMemory(u64),
    /// `<vcpu cpuset>`: the host CPUs the domain runs on (`cpuset.cpus`);
    /// `None` removes the pinning.
    Cpuset(Option<crate::domain::CpuSet>),
    /// `<lxvirt:pids max>` (containers); `None`: the daemon's setting.
    Pids(Option<u64>),
}

impl Tuning {
    fn what(&self) -> &'static str {
        match self {
            Tuning::Memory(_) => "memory parameters",
            Tuning::Scheduler(_) => "scheduler parameters",
            Tuning::Blkio(_) => "block I/O parameters",
            Tuning::Numa(_) => "NUMA parameters",
            Tuning::CurrentMemory(_) => "current memory",
            Tuning::MaxMemory(_) => "maximum memory",
            Tuning::Cpuset(_) => "CPU set",
            Tuning::Pids(_) => "task limit",
        }
    }

    /// `def` with the new values.
    pub fn apply(&self, def: &mut DomainDef) {
        match self {
            Tuning::Memory(params) => {
                let memtune = def.memtune.get_or_insert_with(Default::default);
                set(&mut memtune.hard_limit, params.hard_limit);
                set(&mut memtune.soft_limit, params.soft_limit);
                set(&mut memtune.swap_hard_limit, params.swap_hard_limit);
            }
            Tuning::Scheduler(params) => {
                let cputune = def.cputune.get_or_insert_with(Default::default);
                set(&mut cputune.shares, params.shares);
                set(&mut cputune.period, params.period);
                set(&mut cputune.quota, params.quota);
            }
            Tuning::Blkio(params) => {
                let blkio = def.blkiotune.get_or_insert_with(Default::default);
                set(&mut blkio.weight, params.weight);
                for (path, field, value) in &params.devices {
                    let index = match blkio.devices.iter().position(|d| d.path == *path) {
                        Some(index) => index,
                        None => {
                            blkio.devices.push(crate::domain::BlkioDevice {
                                path: path.clone(),
                                weight: None,
                                read_bytes_sec: None,
                                write_bytes_sec: None,
                                read_iops_sec: None,
                                write_iops_sec: None,
                            });
                            blkio.devices.len() - 1
                        }
                    };
                    let device = &mut blkio.devices[index];
                    let value = (*value != 0).then_some(*value);
                    match field {
                        // Out of u32's range: the range check refuses it.
                        BlkioField::Weight => {
                            device.weight = value.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
                        }
                        BlkioField::ReadBytesSec => device.read_bytes_sec = value,
                        BlkioField::WriteBytesSec => device.write_bytes_sec = value,
                        BlkioField::ReadIopsSec => device.read_iops_sec = value,
                        BlkioField::WriteIopsSec => device.write_iops_sec = value,
                    }
                }
                blkio.devices.retain(|d| {
                    d.weight.is_some()
                        || d.read_bytes_sec.is_some()
                        || d.write_bytes_sec.is_some()
                        || d.read_iops_sec.is_some()
                        || d.write_iops_sec.is_some()
                });
                if blkio.weight.is_none() && blkio.devices.is_empty() {
                    def.blkiotune = None;
                }
            }
            Tuning::CurrentMemory(bytes) => def.current_memory = *bytes,
            Tuning::MaxMemory(bytes) => {
                def.memory = *bytes;
                def.current_memory = def.current_memory.min(*bytes);
            }
            Tuning::Cpuset(cpuset) => def.vcpu.cpuset = cpuset.clone(),
            Tuning::Pids(max) => def.pids_max = *max,
            Tuning::Numa(params) => {
                let numatune = def.numatune.get_or_insert_with(|| crate::domain::NumaTune {
                    memory: None,
                    memnodes: Vec::new(),
                });
                let memory = match (&mut numatune.memory, &params.nodeset) {
                    (Some(memory), _) => memory,
                    (None, Some(nodeset)) => numatune.memory.insert(crate::domain::NumaMemory {
                        mode: crate::domain::NumaMode::Strict,
                        nodeset: nodeset.clone(),
                    }),
                    // A mode without nodes: nothing to apply it to.
                    (None, None) => return,
                };
                if let Some(nodeset) = &params.nodeset {
                    memory.nodeset = nodeset.clone();
                }
                if let Some(mode) = params.mode {
                    memory.mode = mode;
                }
            }
        }
    }
}

fn set<T>(field: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *field = value;
    }
}

/// A finished live tuning, back on the manager's task.
#[derive(Debug)]
pub(super) struct Tuned {
    uuid: Uuid,
    domain: String,
    generation: u64,
    /// What changed, for the log.
    what: &'static str,
    /// The live definition the instance now runs with.
    live: Box<DomainDef>,
    /// The persistent definition to save once the live change is done.
    config: Option<Box<DomainDef>>,
    result: Result<Response, CoreError>,
    reply: Reply<Seq>,
}

/// What a tuning request starts.
enum Begun {
    /// The definition alone: saved at once.
    Config(Box<DomainDef>),
    /// The driver's work on the instance, then what [`Tuned`] finishes.
    Live {
        work: BoxFuture<Result<Response, crate::driver::Error>>,
        domain: String,
        generation: u64,
        live: Box<DomainDef>,
        config: Option<Box<DomainDef>>,
    },
}

impl Manager {
    pub(super) fn tune(
        &mut self,
        uuid: Uuid,
        tuning: Tuning,
        flags: AffectFlags,
        reply: Reply<Seq>,
    ) {
        match self.begin_tuning(uuid, &tuning, flags) {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(Begun::Config(def)) => {
                let name = def.name().to_owned();
                let saved = self.save_config(uuid, *def).map(|()| {
                    tracing::info!(domain = %name, what = tuning.what(), "tuning changed in the definition");
                    self.publish_change(uuid, None)
                });
                let _ = reply.send(saved);
            }
            Ok(Begun::Live {
                work,
                domain,
                generation,
                live,
                config,
            }) => {
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let result = work.await.map_err(CoreError::Driver);
                    let _ = internal.send(Internal::Tuned(Box::new(Tuned {
                        uuid,
                        domain,
                        generation,
                        what: tuning.what(),
                        live,
                        config,
                        result,
                        reply,
                    })));
                });
            }
        }
    }

    fn begin_tuning(
        &mut self,
        uuid: Uuid,
        tuning: &Tuning,
        flags: AffectFlags,
    ) -> Result<Begun, CoreError> {
        if flags.0 & !AffectFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let driver = self.driver_of(uuid)?;
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        let running = entry.runtime.is_some();
        let (live, config) = match flags.0 {
            AffectFlags::CURRENT => (running, !running),
            f => (f & AffectFlags::LIVE != 0, f & AffectFlags::CONFIG != 0),
        };
        if config && !entry.persistent {
            return Err(CoreError::NotPersistent(name));
        }
        let new_config = if config {
            let mut def = entry.def.clone();
            tuning.apply(&mut def);
            recheck(&def, &name, "persistent", tuning.what())?;
            Some(Box::new(def))
        } else {
            None
        };
        if !live {
            return new_config
                .map(Begun::Config)
                .ok_or(CoreError::InvalidFlags(flags.0));
        }
        entry.check(Operation::ChangeDevices)?;
        if let Tuning::MaxMemory(_) = tuning {
            return Err(CoreError::TuningRefused {
                domain: name,
                which: "running",
                what: tuning.what(),
                problem: "a running instance's maximum memory cannot change; change it in the definition (--config) and restart, or change its current memory (setmem)".into(),
            });
        }
        if let Tuning::Numa(NumaParams {
            mode: Some(mode), ..
        }) = tuning
        {
            let now = entry
                .live_def()
                .numatune
                .as_ref()
                .and_then(|n| n.memory.as_ref())
                .map_or(crate::domain::NumaMode::Strict, |m| m.mode);
            if *mode != now {
                return Err(CoreError::TuningRefused {
                    domain: name,
                    which: "running",
                    what: tuning.what(),
                    problem: format!(
                        "the memory policy of a running instance cannot change from '{}' to '{}'; change it in the definition (--config) and restart",
                        now.as_str(),
                        mode.as_str()
                    ),
                });
            }
        }
        let old = entry.live_def().clone();
        let mut new = old.clone();
        tuning.apply(&mut new);
        recheck(&new, &name, "running", tuning.what())?;
        entry.request(Operation::ChangeDevices)?;
        let runtime = entry.runtime.clone().ok_or(CoreError::NotRunning {
            domain: name.clone(),
            operation: "tune it",
        })?;
        let generation = entry.generation;
        let request = Request::Tune {
            old: Box::new(old),
            new: Box::new(new.clone()),
        };
        Ok(Begun::Live {
            work: driver.request(&name, &runtime, request),
            domain: name,
            generation,
            live: Box::new(new),
            config: new_config,
        })
    }

    pub(super) fn tuned(&mut self, done: Tuned) {
        let Tuned {
            uuid,
            domain,
            generation,
            what,
            live,
            config,
            result,
            reply,
        } = done;
        let Ok(entry) = self.entry_mut(uuid) else {
            let _ = reply.send(Err(CoreError::StoppedMeanwhile { domain }));
            return;
        };
        let name = entry.name().to_owned();
        if !(entry.generation == generation && entry.report(Report::DevicesChanged)) {
            let _ = reply.send(Err(CoreError::StoppedMeanwhile { domain: name }));
            return;
        }
        if let Err(error) = result {
            let _ = reply.send(Err(error));
            return;
        }
        tracing::info!(domain = %name, what, "tuning changed in the running instance");
        self.commit_live_change(uuid, *live, config, reply);
    }
}

/// The definition as it would be, checked as a new document would be
/// (ranges, the swap limit against the memory limit, …).
fn recheck(
    def: &DomainDef,
    domain: &str,
    which: &'static str,
    what: &'static str,
) -> Result<(), CoreError> {
    DomainDef::from_xml(&def.to_xml())
        .map(drop)
        .map_err(|error| CoreError::TuningRefused {
            domain: domain.to_owned(),
            which,
            what,
            problem: error.to_string(),
        })
}
