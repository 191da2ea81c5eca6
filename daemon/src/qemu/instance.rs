//! The QEMU driver behind the core's seam ([`crate::driver::Driver`]).
//!
//! A start turns the definition into a command line ([`super::command`]),
//! makes the domain's cgroup, and starts qemu paused as the domain's own
//! uid ([`super::process`]); once QMP answers, the driver keeps one
//! connection to it, watches its events and sends `cont`. The core
//! watches the qemu process itself: when it is gone, so is the VM.
//!
//! Why a VM ended is written to an exit record beside its files as soon
//! as the driver knows it — the core asked (shutdown, destroy), or the
//! guest powered off, rebooted with `on_reboot='destroy'`, or panicked —
//! so that a daemon restarted in between still reads it. qemu runs with
//! `-no-shutdown`: a guest's power-off leaves qemu stopped rather than
//! gone, and the driver quits it once the reason is recorded (also when
//! the power-off happened while no lxvirtd ran: the state QMP reports at
//! reconnection says so). A qemu that ends with no reason recorded
//! crashed.
//!
//! Files, in the run directory: `qemu/NAME/` (mode 0700, owned by the
//! VM's uid: QMP socket, pidfile, serial logs), and root's `qemu/NAME.log`
//! (qemu's own output) and `qemu/NAME.exit`.
//!
//! Each VM's qemu runs as the first id of the block of host ids the core's
//! allocator gives the domain (the block a container's user namespace
//! would map): a uid of its own, never shared with another VM or a
//! container, so one VM's qemu cannot open another's files even without
//! SELinux. libvirt's single `libvirt-qemu` user gives no such separation.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::command::{self, Accel, CommandError, Settings};
use super::disks;
use super::link::{ExitRecord, Files, Link, QMP_TIMEOUT, Requested};
use super::process::{self, Launch, ProcessError};
use super::qmp::QmpError;
use super::tap;
use crate::cgroup::{CgroupError, CgroupSpec, Cgroups, DeviceRule};
use crate::domain::{DeviceDef, DomainDef, DomainType, Os};
use crate::driver::{
    BoxFuture, DomainStats, Driver, Ended, Error, ErrorKind, Request, Response, Runtime,
    ShutdownMode, StartRequest, Started,
};
use crate::error_chain::error_chain;
use crate::persist;
use crate::security::FileLabeler;
use crate::service::systemd::{
    self, Machine, MachineClass, PartitionError, Placement, SystemdError, SystemdHost,
};
use crate::sys::process::{
    Placeholder, exited, find_process, pidfd_kill, pidfd_open, start_time, wait_exit,
};

/// What the QEMU driver needs.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The daemon's run directory; guests' files go under `qemu/`.
    pub run_dir: PathBuf,
    /// The emulator when a definition names no `<emulator>`.
    pub emulator: PathBuf,
    /// The partition of a domain that names none.
    pub default_partition: PathBuf,
    pub pids_max: Option<u64>,
    /// `None` when the host has no usable hierarchy: starts are refused.
    pub cgroups: Option<Arc<Cgroups>>,
    /// Why `type='kvm'` cannot run here; `None` when it can.
    pub kvm_unavailable: Option<String>,
    /// On a systemd host with the unified hierarchy: each VM in a
    /// delegated scope, registered with machined as class `vm`.
    pub systemd: Option<Arc<SystemdHost>>,
}

impl QemuConfig {
    /// Debian's emulator for x86 guests.
    pub const DEFAULT_EMULATOR: &str = "/usr/bin/qemu-system-x86_64";
}

/// How long qemu has to exit after SIGTERM before it gets SIGKILL (as
/// libvirt waits).
const TERM_GRACE: Duration = Duration::from_secs(10);

/// Why the QEMU driver could not do what was asked; each names the domain.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("domain '{domain}': KVM is not usable on this host: {why}")]
    KvmUnavailable { domain: String, why: String },
    #[error(
        "domain '{domain}': this host has no usable cgroup hierarchy; mount cgroup v1 controllers or cgroup2 at /sys/fs/cgroup"
    )]
    NoCgroups { domain: String },
    #[error(
        "domain '{domain}': its emulator {emulator} is not installed (Debian: apt install qemu-system-x86), or fix <emulator>"
    )]
    NoEmulator { domain: String, emulator: PathBuf },
    #[error("domain '{domain}': it has SELinux labels but the host cannot set file labels")]
    NoLabeler { domain: String },
    #[error("domain '{domain}': cannot label {path} {label}")]
    Label {
        domain: String,
        path: PathBuf,
        label: String,
        #[source]
        source: std::io::Error,
    },
    #[error("domain '{domain}': no host ids were allocated for its qemu (an lxvirtd bug)")]
    NoIds { domain: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("domain '{domain}': cannot use {element} {path}; fix the path")]
    MissingFile {
        domain: String,
        element: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "domain '{domain}': <memory> of {asked} KiB is more than this host's {host} KiB; lower it"
    )]
    TooMuchMemory {
        domain: String,
        asked: u64,
        host: u64,
    },
    #[error("domain '{domain}': cannot prepare {path}")]
    Files {
        domain: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("domain '{domain}': {source}")]
    Partition {
        domain: String,
        source: PartitionError,
    },
    #[error("domain '{domain}': cannot start its systemd scope")]
    Scope {
        domain: String,
        #[source]
        source: ScopeError,
    },
    #[error("domain '{domain}': cannot make its cgroup")]
    Cgroup {
        domain: String,
        #[source]
        source: CgroupError,
    },
    #[error("domain '{domain}': cannot start qemu (see {log})")]
    Launch {
        domain: String,
        log: PathBuf,
        #[source]
        source: ProcessError,
    },
    #[error("domain '{domain}': qemu does not answer on QMP")]
    Qmp {
        domain: String,
        #[source]
        source: QmpError,
    },
    #[error("domain '{domain}': qemu did not answer QMP within {} s", QMP_TIMEOUT.as_secs())]
    QmpTimeout { domain: String },
    #[error(
        "domain '{domain}': {emulator} has no machine type '{machine}'; use one that `{emulator} -machine help` lists, such as q35 or pc"
    )]
    UnknownMachine {
        domain: String,
        emulator: PathBuf,
        machine: String,
    },
    #[error(
        "domain '{domain}': its disk {path} is written by running domain '{holder}'; add <shareable/> to both or stop '{holder}'"
    )]
    DiskInUse {
        domain: String,
        path: PathBuf,
        holder: String,
    },
    #[error("domain '{domain}'")]
    Disk {
        domain: String,
        #[source]
        source: disks::DiskError,
    },
    #[error("domain '{domain}'")]
    Tap {
        domain: String,
        #[source]
        source: tap::TapError,
    },
    #[error("domain '{domain}': an internal task failed")]
    Task {
        domain: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("domain '{domain}': its qemu is gone")]
    Gone { domain: String },
    #[error("domain '{domain}': it has no serial console {index}")]
    NoConsole { domain: String, index: u32 },
    #[error("domain '{domain}': cannot open its console {path}")]
    OpenConsole {
        domain: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("domain '{domain}': {what} is not supported for virtual machines yet")]
    NotSupported { domain: String, what: &'static str },
    #[error(
        "domain '{domain}' has no guest agent channel; add <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel> and run qemu-ga in the guest"
    )]
    NoAgentChannel { domain: String },
    #[error(
        "domain '{domain}': enter's option '{option}' is not supported for virtual machines: the guest agent's guest-exec has none (use sh -c)"
    )]
    EnterOption {
        domain: String,
        option: &'static str,
    },
    #[error(
        "domain '{domain}': the command's stdin holds more than {} KiB, which the guest agent takes at once; pass a file inside the guest instead",
        super::guest_exec::MAX_INPUT / 1024
    )]
    InputTooLarge { domain: String },
    #[error("domain '{domain}': cannot read the command's stdin")]
    Input {
        domain: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] super::agent::AgentError),
    #[error("domain '{domain}': interface {interface} cannot change live")]
    InterfaceUpdate {
        domain: String,
        interface: String,
        #[source]
        source: tap::UpdateError,
    },
}

impl From<QemuError> for Error {
    fn from(error: QemuError) -> Error {
        let kind = match &error {
            QemuError::KvmUnavailable { .. } | QemuError::NoEmulator { .. } => {
                ErrorKind::Unavailable
            }
            QemuError::NoLabeler { .. } => ErrorKind::SecurityUnavailable,
            QemuError::Command(CommandError::NotSupported { .. })
            | QemuError::NotSupported { .. }
            | QemuError::NoAgentChannel { .. }
            | QemuError::EnterOption { .. }
            | QemuError::UnknownMachine { .. }
            | QemuError::Partition { .. } => ErrorKind::NotSupported,
            QemuError::Command(CommandError::NotVm { .. }) => ErrorKind::Unavailable,
            QemuError::DiskInUse { .. } => ErrorKind::InvalidState,
            QemuError::InterfaceUpdate {
                source: tap::UpdateError::Refused(_),
                ..
            } => ErrorKind::NotSupported,
            _ => ErrorKind::Failed,
        };
        Error::new(kind, error)
    }
}

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuDriver {
    config: Arc<QemuConfig>,
    links: Arc<Mutex<HashMap<String, Arc<Link>>>>,
    /// The writable, unshared disk images of running VMs, by VM.
    in_use: Arc<Mutex<HashMap<PathBuf, String>>>,
    /// The machine types of each emulator used, asked once.
    machines: Arc<Mutex<HashMap<PathBuf, Arc<Vec<String>>>>>,
}

impl QemuDriver {
    pub fn new(config: QemuConfig) -> QemuDriver {
        QemuDriver {
            config: Arc::new(config),
            links: Arc::default(),
            in_use: Arc::default(),
            machines: Arc::default(),
        }
    }

    fn files(&self, name: &str) -> Files {
        Files::new(&self.config.run_dir, name)
    }

    /// The link to the running VM whose qemu is `pid`, made (with the
    /// record an earlier daemon left) when this daemon has none yet.
    fn link(&self, name: &str, pid: i32) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(links.entry(name.to_owned()).or_insert_with(|| {
            let files = self.files(name);
            let record = persist::read_versioned_if_present(&files.exit)
                .ok()
                .flatten()
                .unwrap_or_default();
            // An earlier daemon's VM: it still holds its disks.
            let held = disks::exclusive_in(&files.disks);
            if !held.is_empty() {
                let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
                for path in held {
                    in_use.insert(path, name.to_owned());
                }
            }
            Arc::new(Link::new(name, pid, files, record))
        }))
    }

    /// Refuses a machine type the emulator does not have, before anything
    /// is made for it (qemu's own message would not name it). When the
    /// emulator cannot be asked, qemu's start says what is wrong.
    fn check_machine(&self, plan: &Plan) -> Result<(), QemuError> {
        let known = {
            let cached = self
                .machines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&plan.emulator)
                .cloned();
            match cached {
                Some(known) => known,
                None => match super::host::machine_types(&plan.emulator) {
                    Ok(types) => {
                        let types = Arc::new(types);
                        self.machines
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(plan.emulator.clone(), Arc::clone(&types));
                        types
                    }
                    Err(_) => return Ok(()),
                },
            }
        };
        if known.contains(&plan.machine) {
            Ok(())
        } else {
            Err(QemuError::UnknownMachine {
                domain: plan.domain.clone(),
                emulator: plan.emulator.clone(),
                machine: plan.machine.clone(),
            })
        }
    }

    fn drop_link(&self, name: &str) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// What this host lacks to run `def` at all: a usable KVM for
    /// `type='kvm'`, the emulator. Returns the emulator and accelerator.
    fn host_refuses(&self, def: &DomainDef) -> Result<(PathBuf, Accel), QemuError> {
        let domain = def.name().to_owned();
        let accel = match def.domain_type {
            DomainType::Kvm => {
                if let Some(why) = &self.config.kvm_unavailable {
                    return Err(QemuError::KvmUnavailable {
                        domain,
                        why: why.clone(),
                    });
                }
                Accel::Kvm
            }
            _ => Accel::Tcg,
        };
        let emulator = def
            .devices
            .emulator
            .clone()
            .unwrap_or_else(|| self.config.emulator.clone());
        if !emulator.exists() {
            return Err(QemuError::NoEmulator { domain, emulator });
        }
        Ok((emulator, accel))
    }

    /// Everything of a start decided on the core's task: checks and the
    /// command line.
    fn plan(&self, request: &StartRequest) -> Result<Plan, QemuError> {
        let def = &request.def;
        let domain = def.name().to_owned();
        let (emulator, accel) = self.host_refuses(def)?;
        let cgroups = self
            .config
            .cgroups
            .clone()
            .ok_or_else(|| QemuError::NoCgroups {
                domain: domain.clone(),
            })?;
        let labels = match (&request.labels.spec, request.labeler) {
            (None, _) => None,
            (Some(spec), Some(labeler)) => Some(VmLabels {
                process: spec.process_label.clone(),
                image: spec.image_label.clone(),
                content: request.content_label.clone(),
                labeler,
                boot_files: boot_files(def),
            }),
            (Some(_), None) => return Err(QemuError::NoLabeler { domain }),
        };
        // Each interface on a network is a port of its bridge.
        let plugged = crate::driver::plug_networks(def, &request.networks);
        let taps = def
            .devices
            .interfaces
            .iter()
            .enumerate()
            .map(|(index, original)| {
                let port = match &original.source {
                    crate::domain::InterfaceSource::Network { network, .. } => {
                        request.networks.get(network)
                    }
                    _ => None,
                };
                tap::plan(&plugged, index, port).map_err(|what| QemuError::NotSupported {
                    domain: domain.clone(),
                    what,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (uid, _) = def
            .userns
            .and_then(|u| u.allocated)
            .ok_or_else(|| QemuError::NoIds {
                domain: domain.clone(),
            })?;
        check_files(def)?;
        check_memory(def)?;
        let files = self.files(&domain);
        let machine = match &def.os {
            Os::Hvm(os) => command::machine_type(os).to_owned(),
            Os::Exe(_) => String::new(),
        };
        let disk_files = disks::files_of(def);
        self.check_exclusive(&domain, &disk_files)?;
        let mut settings = Settings::new(accel, files.qmp.clone());
        settings.serial_logs = Some(files.dir.clone());
        settings.vnc_socket = Some(files.dir.join("vnc.sock"));
        // The guest agent's channel has a socket of a known name: the
        // driver finds it from the name alone (after a daemon restart too).
        let agent_channel = agent_channel(def);
        settings.channel_sockets = (0..def.devices.channels.len())
            .map(|i| {
                Some(if Some(i) == agent_channel {
                    files.agent.clone()
                } else {
                    files.dir.join(format!("channel{i}.sock"))
                })
            })
            .collect();
        let mut overlays = Vec::new();
        settings.disk_overlays =
            def.devices
                .disks
                .iter()
                .enumerate()
                .map(|(index, disk)| {
                    let base = match &disk.source {
                        crate::domain::DiskSource::File(p)
                        | crate::domain::DiskSource::Block(p) => p.clone(),
                        crate::domain::DiskSource::Kept(_) => None,
                    };
                    let base = base.filter(|_| disk.transient)?;
                    let overlay = disks::overlay_path(&files.dir, index);
                    let format = disk
                        .driver
                        .as_ref()
                        .and_then(|d| d.format)
                        .unwrap_or(crate::domain::ImageFormat::Raw);
                    overlays.push(Overlay {
                        disk: disk.target_dev.clone(),
                        base,
                        format,
                        path: overlay.clone(),
                    });
                    Some(overlay)
                })
                .collect();
        // Checked now with stand-in descriptors; the line qemu gets is
        // made with the taps' own.
        settings.tap_fds = taps.iter().map(|_| Some(0)).collect();
        command::command_line(&plugged, &settings)?;
        let mut cgroup = crate::cgroup::domain::tuning(
            def,
            &self.config.default_partition,
            self.config.pids_max,
            |path| device_numbers(&domain, path),
        )?;
        cgroup.devices = device_rules(accel);
        let placement = match &self.config.systemd {
            Some(_) => {
                let partition = def
                    .partition
                    .as_deref()
                    .unwrap_or(&self.config.default_partition);
                let placement = systemd::placement(&domain, partition).map_err(|source| {
                    QemuError::Partition {
                        domain: domain.clone(),
                        source,
                    }
                })?;
                cgroup.path = placement.cgroup.join(crate::cgroup::PAYLOAD);
                cgroup.delegated = Some(placement.cgroup.clone());
                Some(placement)
            }
            None => None,
        };
        // Held from now (the core's task decides starts one at a time)
        // until `release`, which a failed start gets too.
        self.hold_disks(
            &domain,
            disk_files
                .iter()
                .filter(|f| f.writable && !f.shareable)
                .map(|f| f.path.clone())
                .collect(),
        );
        Ok(Plan {
            domain,
            files,
            emulator,
            machine,
            def: plugged,
            settings,
            taps,
            uid,
            cgroups,
            cgroup,
            placement,
            labels,
            disk_files,
            overlays,
        })
    }

    /// Refuses a writable disk image another running VM writes (unless
    /// both say `<shareable/>`).
    fn check_exclusive(&self, domain: &str, files: &[disks::DiskFile]) -> Result<(), QemuError> {
        let in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        for file in files.iter().filter(|f| f.writable && !f.shareable) {
            if let Some(holder) = in_use.get(&file.path).filter(|h| *h != domain) {
                return Err(QemuError::DiskInUse {
                    domain: domain.to_owned(),
                    path: file.path.clone(),
                    holder: holder.clone(),
                });
            }
        }
        Ok(())
    }

    /// Records (or forgets) the images `domain` writes alone.
    fn hold_disks(&self, domain: &str, paths: Vec<PathBuf>) {
        let mut in_use = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        in_use.retain(|_, holder| holder != domain);
        for path in paths {
            in_use.insert(path, domain.to_owned());
        }
    }
}

/// A `<transient/>` disk's overlay, made before qemu starts.
#[derive(Debug, Clone)]
struct Overlay {
    disk: String,
    base: PathBuf,
    format: crate::domain::ImageFormat,
    path: PathBuf,
}

/// A start, decided.
struct Plan {
    domain: String,
    files: Files,
    emulator: PathBuf,
    machine: String,
    /// The definition as qemu runs it (interfaces plugged).
    def: DomainDef,
    settings: Settings,
    taps: Vec<tap::TapPlan>,
    uid: u32,
    cgroups: Arc<Cgroups>,
    cgroup: CgroupSpec,
    /// Its scope, on a systemd host.
    placement: Option<Placement>,
    labels: Option<VmLabels>,
    disk_files: Vec<disks::DiskFile>,
    overlays: Vec<Overlay>,
}

/// The files qemu reads to boot, besides its disks.
fn boot_files(def: &DomainDef) -> Vec<PathBuf> {
    match &def.os {
        Os::Hvm(os) => [&os.kernel, &os.initrd]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        Os::Exe(_) => Vec::new(),
    }
}

/// The files a guest boots from must be there (qemu would say so too,
/// but after a cgroup and a process were made for nothing).
fn check_files(def: &DomainDef) -> Result<(), QemuError> {
    let Os::Hvm(os) = &def.os else {
        return Ok(());
    };
    let files = [
        ("<os><kernel>", os.kernel.as_ref()),
        ("<os><initrd>", os.initrd.as_ref()),
    ];
    for (element, path) in files {
        if let Some(path) = path
            && let Err(source) = std::fs::metadata(path)
        {
            return Err(QemuError::MissingFile {
                domain: def.name().to_owned(),
                element,
                path: path.clone(),
                source,
            });
        }
    }
    Ok(())
}

/// A guest may not be given more memory than the host has.
fn check_memory(def: &DomainDef) -> Result<(), QemuError> {
    let asked = def.memory.div_ceil(1024);
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    match host {
        Some(host) if asked > host => Err(QemuError::TooMuchMemory {
            domain: def.name().to_owned(),
            asked,
            host,
        }),
        _ => Ok(()),
    }
}

fn device_numbers(domain: &str, path: &Path) -> Result<(u32, u32), QemuError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|source| QemuError::MissingFile {
        domain: domain.to_owned(),
        element: "<blkiotune><device>",
        path: path.to_owned(),
        source,
    })?;
    let rdev = meta.rdev();
    Ok((
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    ))
}

/// What qemu may open: the base devices, and /dev/kvm when it uses KVM.
fn device_rules(accel: Accel) -> Vec<DeviceRule> {
    let mut rules = crate::cgroup::domain::base_device_rules();
    if accel == Accel::Kvm {
        rules.push(DeviceRule {
            kind: 'c',
            major: Some(10),
            minor: Some(232),
            access: "rwm".into(),
        });
    }
    rules
}

/// Starts qemu for `plan` and lets the guest run; on error nothing of it
/// is left.
async fn start(driver: QemuDriver, plan: Plan) -> Result<Started, QemuError> {
    let domain = plan.domain.clone();
    let checker = driver.clone();
    let scope = match (&driver.config.systemd, &plan.placement) {
        (Some(systemd), Some(placement)) => Some(
            hold_scope(systemd, &plan.cgroups, placement, &domain)
                .await
                .map_err(|source| QemuError::Scope {
                    domain: domain.clone(),
                    source,
                })?,
        ),
        _ => None,
    };
    let launched = tokio::task::spawn_blocking(move || {
        checker.check_machine(&plan)?;
        let started = launch(&plan)?;
        Ok::<_, QemuError>((plan, started))
    })
    .await
    .map_err(|source| QemuError::Task {
        domain: domain.clone(),
        source,
    });
    // qemu is in the scope now (or nothing is): the placeholder goes.
    if let Some(scope) = scope {
        scope.release();
    }
    let (plan, (pid, pidfd)) = launched??;
    if let Some(systemd) = &driver.config.systemd {
        let ifindices = systemd::ifindices(plan.taps.iter().map(|t| t.name.as_str()));
        let machine = Machine {
            name: &domain,
            uuid: plan.def.uuid,
            class: MachineClass::Vm,
            leader: pid.as_raw().unsigned_abs(),
            root_directory: "",
            ifindices: &ifindices,
        };
        if let Err(error) = systemd.register_machine(&machine).await {
            // The VM runs; only machinectl does not list it.
            tracing::warn!(domain = %domain, error = %error_chain(&error), "cannot register the VM with systemd-machined");
        }
    }
    let link = driver.link(&domain, pid.as_raw());
    let has_balloon = plan
        .def
        .devices
        .memballoon
        .as_ref()
        .is_some_and(|b| b.model != crate::domain::MemballoonModel::None);
    let balloon = (has_balloon && plan.def.current_memory < plan.def.memory)
        .then_some(plan.def.current_memory);
    let links_down: Vec<String> = (plan.def.devices.interfaces.iter().enumerate())
        .filter(|(_, i)| i.link_state == Some(crate::domain::LinkState::Down))
        .map(|(index, i)| tap::nic_id(i, index))
        .collect();
    let running = async {
        let qmp = link.qmp().await?;
        // <link state='down'>: no carrier from the guest's first moment.
        for id in &links_down {
            link.bounded(qmp.set_link(id, false)).await?;
        }
        // <currentMemory>: what the guest is left with from the start.
        if let Some(bytes) = balloon
            && let Err(error) = qmp.balloon(bytes).await
        {
            tracing::warn!(domain = %domain, error = %error_chain(&error), "cannot set <currentMemory> through the balloon");
        }
        link.bounded(qmp.cont()).await
    };
    if let Err(error) = running.await {
        let _ = pidfd_kill(pidfd.as_fd(), Signal::SIGKILL);
        wait_exit(pidfd).await;
        driver.drop_link(&domain);
        remove_cgroup(&plan.cgroups, &plan.cgroup.path);
        release_shaping(&domain, &plan.def);
        return Err(error);
    }
    let unrecorded = UnrecordedVm(pidfd.try_clone().ok());
    Ok(Started {
        runtime: Runtime {
            init_pid: pid.as_raw(),
            monitor_pid: pid.as_raw(),
            monitor_start_time: start_time(pid).unwrap_or(0),
            started_at: 0,
            cgroup_path: plan.cgroup.path.clone(),
            memory_limit: plan.cgroup.memory_limit,
        },
        exited: Box::pin(wait_exit(pidfd)),
        // Should the daemon die before recording it, qemu has no pipe
        // whose end would tell it: the next daemon ends it
        // (`end_unrecorded`).
        on_recorded: Some(Box::new(move || unrecorded.recorded())),
    })
}

/// A started qemu until the core has recorded it: dropped unrecorded (a
/// start gone stale, a live status that could not be written) it kills
/// qemu, as a container's monitor ends its container when its stdin
/// closes before the confirmation.
struct UnrecordedVm(Option<OwnedFd>);

impl UnrecordedVm {
    fn recorded(mut self) {
        self.0 = None;
    }
}

impl Drop for UnrecordedVm {
    fn drop(&mut self) {
        if let Some(pidfd) = self.0.take() {
            let _ = pidfd_kill(pidfd.as_fd(), Signal::SIGKILL);
        }
    }
}

/// How long a scope's placeholder may live unattended: far beyond a start.
const PLACEHOLDER_LIFETIME_SECS: u32 = 120;

/// Why a VM's scope could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("cannot fork a placeholder process for it")]
    Placeholder(#[source] nix::Error),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error("cannot move its placeholder aside")]
    Supervisor(#[source] CgroupError),
}

/// A VM's scope, started around a placeholder until qemu is in it.
struct HeldScope {
    placeholder: Placeholder,
    cgroups: Arc<Cgroups>,
    delegated: PathBuf,
}

impl HeldScope {
    /// Kills the placeholder and removes its cgroup: the scope lives on
    /// with qemu, or ends with nothing in it.
    fn release(self) {
        drop(self.placeholder);
        self.cgroups.remove_supervisor(&self.delegated);
    }
}

/// Starts the VM's scope around a placeholder (a scope starts with a
/// process, and qemu must not run outside its cgroup) and moves the
/// placeholder out of the scope's top, so that the VM's cgroup can take
/// controllers below it.
async fn hold_scope(
    systemd: &SystemdHost,
    cgroups: &Arc<Cgroups>,
    placement: &Placement,
    domain: &str,
) -> Result<HeldScope, ScopeError> {
    let placeholder =
        Placeholder::spawn(PLACEHOLDER_LIFETIME_SECS).map_err(ScopeError::Placeholder)?;
    let description = format!("lxvirt VM {domain}");
    systemd
        .start_scope(placement, placeholder.pid(), &description)
        .await?;
    let held = HeldScope {
        placeholder,
        cgroups: cgroups.clone(),
        delegated: placement.cgroup.clone(),
    };
    cgroups
        .enter_supervisor(&held.delegated, held.placeholder.pid())
        .map_err(ScopeError::Supervisor)?;
    Ok(held)
}

/// The blocking part of a start: files (labelled), cgroup, qemu up and
/// paused.
fn launch(plan: &Plan) -> Result<(Pid, OwnedFd), QemuError> {
    let Plan {
        domain,
        files,
        uid,
        cgroups,
        cgroup: spec,
        labels,
        ..
    } = plan;
    let files_error = |path: &Path| {
        let domain = domain.to_owned();
        let path = path.to_owned();
        move |source| QemuError::Files {
            domain,
            path,
            source,
        }
    };
    // A previous run's sockets and logs go: the uid may differ.
    match std::fs::remove_dir_all(&files.dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(files_error(&files.dir)(e));
        }
        _ => {}
    }
    let _ = std::fs::remove_file(&files.exit);
    if let Some(base) = files.dir.parent() {
        std::fs::create_dir_all(base).map_err(files_error(base))?;
    }
    process::guest_dir(&files.dir, *uid, *uid).map_err(files_error(&files.dir))?;
    if let Some(labels) = labels {
        labels.apply(domain, files)?;
    }
    let disk_error = |source| QemuError::Disk {
        domain: domain.to_owned(),
        source,
    };
    for overlay in &plan.overlays {
        disks::make_overlay(
            &overlay.disk,
            &overlay.base,
            overlay.format,
            &overlay.path,
            *uid,
        )
        .map_err(disk_error)?;
        if let Some(labels) = labels {
            (labels.labeler)(&overlay.path, &labels.image).map_err(|source| QemuError::Label {
                domain: domain.to_owned(),
                path: overlay.path.clone(),
                label: labels.image.clone(),
                source,
            })?;
        }
    }
    let disk_labels = labels.as_ref().and_then(|l| {
        Some(disks::DiskLabels {
            image: l.image.clone(),
            content: l.content.clone()?,
            labeler: l.labeler,
        })
    });
    disks::give(&plan.disk_files, *uid, disk_labels.as_ref(), &files.disks).map_err(disk_error)?;
    // A cgroup left by a VM whose end nobody collected goes first.
    if let Ok(stale) = cgroups.open(&spec.path)
        && stale.exists()
    {
        let _ = stale.kill_all();
        let _ = stale.remove();
    }
    let taps = make_taps(domain, &plan.taps).and_then(|taps| run_qemu(plan, &taps));
    if taps.is_err() {
        release_shaping(domain, &plan.def);
    }
    taps
}

/// qemu started on the taps `taps` (the rest of [`launch`]).
fn run_qemu(plan: &Plan, taps: &[OwnedFd]) -> Result<(Pid, OwnedFd), QemuError> {
    let Plan {
        domain,
        files,
        emulator,
        uid,
        cgroups,
        cgroup: spec,
        labels,
        ..
    } = plan;
    let mut settings = plan.settings.clone();
    settings.tap_fds = taps.iter().map(|fd| Some(fd.as_raw_fd())).collect();
    let args = command::command_line(&plan.def, &settings)?;
    let cgroup = cgroups.create(spec).map_err(|source| QemuError::Cgroup {
        domain: domain.to_owned(),
        source,
    })?;
    let launch = Launch {
        emulator: emulator.clone(),
        args,
        uid: *uid,
        gid: *uid,
        cgroup_procs: cgroup.procs_files(),
        pidfile: files.pidfile.clone(),
        log: files.log.clone(),
        exec_label: labels.as_ref().map(|l| l.process.clone()),
        keep_fds: taps.iter().map(|fd| fd.as_raw_fd()).collect(),
    };
    let started = process::launch(&launch, &files.qmp).and_then(|pid| {
        pidfd_open(pid)
            .map(|fd| (pid, fd))
            .map_err(|e| ProcessError::Failed {
                status: "gone at once".into(),
                said: e.to_string(),
            })
    });
    started.map_err(|source| {
        let _ = cgroup.kill_all();
        let _ = cgroup.remove();
        disks::give_back(&files.disks);
        QemuError::Launch {
            domain: domain.to_owned(),
            log: files.log.clone(),
            source,
        }
    })
}

/// Deletes the ifb devices of `def`'s shaped interfaces (they outlive
/// the taps), logging what cannot be.
fn release_shaping(domain: &str, def: &DomainDef) {
    for problem in crate::net::shaping::release_ifbs(def) {
        tracing::warn!(domain = %domain, problem, "ifb device not deleted");
    }
}

/// The taps of a VM's interfaces, made and set up; no tap is left when
/// one fails (they go with their descriptors), the ifb devices of their
/// shaping are ([`release_shaping`]).
fn make_taps(domain: &str, plans: &[tap::TapPlan]) -> Result<Vec<OwnedFd>, QemuError> {
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    let tap_error = |source| QemuError::Tap {
        domain: domain.to_owned(),
        source,
    };
    let links = crate::net::link::Netlink::open().map_err(|source| {
        tap_error(tap::TapError::Netlink {
            name: String::new(),
            step: "cannot open a netlink socket",
            source,
        })
    })?;
    plans
        .iter()
        .map(|plan| tap::make(&links, plan).map_err(tap_error))
        .collect()
}

/// A confined VM's labels and what they go on.
#[derive(Debug, Clone)]
struct VmLabels {
    /// qemu's process context.
    process: String,
    /// Its own files' context (with its pair).
    image: String,
    /// Read-only content shared between VMs (kernels, initrds).
    content: Option<String>,
    labeler: FileLabeler,
    /// Files qemu only reads: `<kernel>`, `<initrd>`.
    boot_files: Vec<PathBuf>,
}

impl VmLabels {
    /// Labels qemu's directory and log with its image label, and the
    /// files it boots from with the shared content label (kept after the
    /// VM stops, as image layers keep theirs: other VMs may use them).
    fn apply(&self, domain: &str, files: &Files) -> Result<(), QemuError> {
        let label = |path: &Path, label: &str| {
            (self.labeler)(path, label).map_err(|source| QemuError::Label {
                domain: domain.to_owned(),
                path: path.to_owned(),
                label: label.to_owned(),
                source,
            })
        };
        label(&files.dir, &self.image)?;
        // qemu writes its output through descriptors lxvirtd opened.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.log)
            .map_err(|source| QemuError::Files {
                domain: domain.to_owned(),
                path: files.log.clone(),
                source,
            })?;
        label(&files.log, &self.image)?;
        if let Some(content) = &self.content {
            for file in &self.boot_files {
                if crate::sys::linux::file_label(file).ok().as_deref() != Some(content.as_str()) {
                    label(file, content)?;
                }
            }
        }
        Ok(())
    }
}

fn remove_cgroup(cgroups: &Cgroups, path: &Path) -> Option<String> {
    let cgroup = cgroups.open(path).ok()?;
    if !cgroup.exists() {
        return None;
    }
    let _ = cgroup.kill_all();
    cgroup
        .remove()
        .err()
        .map(|e| format!("cannot remove the VM's cgroup: {}", error_chain(&e)))
}

/// The qemu that wrote `pidfile` and still runs (a pidfile whose pid a
/// process of another command line took is not it), with a pidfd.
fn running_qemu(pidfile: &Path) -> Option<(Pid, OwnedFd)> {
    let pid = process::read_pidfile(pidfile).ok()?;
    let pidfd = pidfd_open(pid).ok()?;
    // Checked after the pidfd is open: the pid cannot change hands since.
    process::has_argument(pid.as_raw(), &pidfile.to_string_lossy()).then_some((pid, pidfd))
}

/// The cgroup (`machine/lxvirt-NAME`) lxvirt placed `pid` in, as /proc
/// shows it; `None` when it sits elsewhere (a systemd scope, which ends
/// with its last process).
fn cgroup_of(pid: Pid, name: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let leaf = format!("lxvirt-{name}");
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|f| f == leaf.as_str())
        })
        .map(|path| PathBuf::from(path.trim_start_matches('/')))
}

/// Which `<channel>` is the QEMU guest agent's.
fn agent_channel(def: &DomainDef) -> Option<usize> {
    def.devices
        .channels
        .iter()
        .position(|c| c.target_name.as_deref() == Some(super::agent::CHANNEL_NAME))
}

fn has_agent_channel(def: &DomainDef) -> bool {
    agent_channel(def).is_some()
}

impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn unavailable(&self, def: &DomainDef) -> Option<Error> {
        self.host_refuses(def).err().map(Error::from)
    }

    fn check_shutdown_mode(
        &self,
        def: &DomainDef,
        _runtime: Option<&Runtime>,
        mode: ShutdownMode,
    ) -> Result<(), Error> {
        match mode {
            ShutdownMode::Default | ShutdownMode::PowerButton => Ok(()),
            ShutdownMode::Agent if has_agent_channel(def) => Ok(()),
            ShutdownMode::Agent => Err(QemuError::NoAgentChannel {
                domain: def.name().to_owned(),
            }
            .into()),
            ShutdownMode::Signal | ShutdownMode::Initctl | ShutdownMode::Systemd => {
                Err(Error::mode_not_supported(
                    def.name.as_ref(),
                    mode,
                    "virtual machines",
                    "a VM's kernel is asked through its ACPI power button (mode 'acpi', the default) or its guest agent (mode 'agent')",
                ))
            }
        }
    }

    fn resets_in_place(&self) -> bool {
        true
    }

    fn start(&self, request: StartRequest) -> Result<BoxFuture<Result<Started, Error>>, Error> {
        let plan = self.plan(&request)?;
        let driver = self.clone();
        Ok(Box::pin(async move {
            start(driver, plan).await.map_err(Error::from)
        }))
    }

    fn reconnect(&self, name: &str, runtime: &Runtime) -> Option<BoxFuture<()>> {
        let pidfd = find_process(runtime.monitor_pid, runtime.monitor_start_time)?;
        // Listen again at once: a guest that powered off meanwhile waits
        // in qemu for its end to be recorded.
        let link = self.link(name, runtime.monitor_pid);
        tokio::spawn(async move {
            if let Err(error) = link.qmp().await {
                tracing::warn!(domain = %link.name, error = %error_chain(&error), "cannot reach qemu again");
            }
        });
        Some(Box::pin(wait_exit(pidfd)))
    }

    fn end_unrecorded(&self, recorded: &HashSet<String>) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.config.run_dir.join("qemu")) else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if recorded.contains(&name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let files = self.files(&name);
            let Some((pid, pidfd)) = running_qemu(&files.pidfile) else {
                continue;
            };
            let cgroup = cgroup_of(pid, &name);
            let _ = pidfd_kill(pidfd.as_fd(), Signal::SIGKILL);
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(5000u16));
            if let (Some(cgroups), Some(path)) = (&self.config.cgroups, cgroup)
                && let Ok(cgroup) = cgroups.open(&path)
            {
                let _ = cgroup.kill_and_wait(Duration::from_secs(5));
                let _ = cgroup.remove();
            }
            self.release(&name);
            ended.push(name);
        }
        ended
    }

    fn request(
        &self,
        name: &str,
        runtime: &Runtime,
        request: Request,
    ) -> BoxFuture<Result<Response, Error>> {
        let driver = self.clone();
        let link = self.link(name, runtime.monitor_pid);
        let runtime = runtime.clone();
        Box::pin(async move {
            driver
                .handle(&link, &runtime, request)
                .await
                .map_err(Error::from)
        })
    }

    fn collect_exit(&self, name: &str, runtime: &Runtime, live: &DomainDef) -> Ended {
        let files = self.files(name);
        let mut problems = Vec::new();
        let record = match persist::read_versioned_if_present::<ExitRecord>(&files.exit) {
            Ok(record) => record.unwrap_or_default(),
            Err(error) => {
                problems.push(error_chain(&error));
                ExitRecord::default()
            }
        };
        if let Some(cgroups) = &self.config.cgroups
            && let Some(problem) = remove_cgroup(cgroups, &runtime.cgroup_path)
        {
            problems.push(problem);
        }
        problems.extend(crate::net::shaping::release_ifbs(live));
        self.drop_link(name);
        self.release(name);
        Ended {
            exit: record.exit(),
            problems,
        }
    }

    fn release(&self, name: &str) {
        let files = self.files(name);
        for problem in disks::give_back(&files.disks) {
            tracing::warn!(domain = %name, problem, "disk image not given back");
        }
        self.hold_disks(name, Vec::new());
        // Transient disks' writes go with their overlays.
        if let Ok(entries) = std::fs::read_dir(&files.dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("transient-")
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_file(&files.exit);
        let _ = std::fs::remove_file(&files.qmp);
        let _ = std::fs::remove_file(&files.agent);
        let _ = std::fs::remove_file(&files.pidfile);
    }

    /// qemu's copy of the first serial port (neither capped nor rotated).
    fn console_log_files(&self, name: &str) -> Vec<std::path::PathBuf> {
        vec![self.files(name).dir.join("serial0.log")]
    }

    fn forget(&self, name: &str) {
        let files = self.files(name);
        let _ = std::fs::remove_dir_all(&files.dir);
        let _ = std::fs::remove_file(&files.log);
    }
}

impl QemuDriver {
    /// Changes the running VM's interface `old` to `new` (the core let
    /// only its `<link state>` and `<bandwidth>` differ); `live` is the
    /// live definition with `new` in its place. The guest's carrier is
    /// qemu's (`set_link`), the tap's link and shaping the host's.
    async fn update_interface(
        &self,
        link: &Arc<Link>,
        domain: &str,
        live: DomainDef,
        old: crate::domain::Interface,
        new: crate::domain::Interface,
    ) -> Result<Response, QemuError> {
        let index = (live.devices.interfaces.iter())
            .position(|i| i.mac.is_some() && i.mac == new.mac)
            .unwrap_or(0);
        let failed = |source| QemuError::InterfaceUpdate {
            domain: domain.to_owned(),
            interface: new
                .target_dev
                .clone()
                .unwrap_or_else(|| format!("#{}", index + 1)),
            source,
        };
        // The host's side first: what QMP refuses after it is undone, so
        // that a failed change leaves the interface as it was.
        let change_tap = |from: crate::domain::Interface, to: crate::domain::Interface| {
            let live = live.clone();
            async move {
                tokio::task::spawn_blocking(move || tap::update(&live, index, &from, &to))
                    .await
                    .map_err(|source| QemuError::Task {
                        domain: domain.to_owned(),
                        source,
                    })
            }
        };
        change_tap(old.clone(), new.clone())
            .await?
            .map_err(failed)?;
        if old.link_state != new.link_state {
            let up = new.link_state != Some(crate::domain::LinkState::Down);
            let carrier = async {
                let qmp = link.qmp().await?;
                link.bounded(qmp.set_link(&tap::nic_id(&new, index), up))
                    .await
            };
            if let Err(error) = carrier.await {
                if let Ok(Err(undo)) = change_tap(new.clone(), old.clone()).await {
                    tracing::warn!(domain = %domain, error = %error_chain(&undo), "cannot undo the tap's change");
                }
                return Err(error);
            }
        }
        Ok(Response::Done)
    }

    async fn handle(
        &self,
        link: &Arc<Link>,
        runtime: &Runtime,
        request: Request,
    ) -> Result<Response, QemuError> {
        let domain = link.name.clone();
        match request {
            Request::Shutdown { grace, mode } => {
                link.note(|r| r.requested = Some(Requested::Shutdown));
                // Escalation is armed first: a guest that cannot be asked
                // (an agent that does not answer) still stops in time.
                self.terminate_after(&domain, runtime, grace)?;
                if mode == ShutdownMode::Agent {
                    let agent = link.agent().ok_or_else(|| QemuError::NoAgentChannel {
                        domain: domain.clone(),
                    })?;
                    agent
                        .shutdown(super::agent::ShutdownMode::Powerdown)
                        .await?;
                } else {
                    let qmp = link.qmp().await?;
                    link.bounded(qmp.system_powerdown()).await?;
                }
                Ok(Response::Done)
            }
            Request::Destroy => {
                link.note(|r| r.requested = Some(Requested::Destroy));
                self.terminate_after(&domain, runtime, Duration::ZERO)?;
                Ok(Response::Done)
            }
            Request::Reset => {
                let reboot_is_shutdown = process::has_argument(link.pid, "-no-reboot");
                link.reset_machine(reboot_is_shutdown).await?;
                tracing::info!(domain = %domain, "reset");
                Ok(Response::Done)
            }
            Request::Freeze | Request::Thaw => {
                let qmp = link.qmp().await?;
                if matches!(request, Request::Freeze) {
                    link.bounded(qmp.stop()).await?;
                } else {
                    link.bounded(qmp.cont()).await?;
                }
                Ok(Response::Done)
            }
            Request::Console { index } => {
                let qmp = link.qmp().await?;
                let chardevs = link.bounded(qmp.query_chardev()).await?;
                let label = format!("charserial{index}");
                let path = chardevs
                    .iter()
                    .find(|c| c.label == label)
                    .and_then(|c| c.pty_path())
                    .ok_or_else(|| QemuError::NoConsole {
                        domain: domain.clone(),
                        index,
                    })?
                    .to_owned();
                let fd = nix::fcntl::open(
                    &path,
                    nix::fcntl::OFlag::O_RDWR
                        | nix::fcntl::OFlag::O_NOCTTY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|source| QemuError::OpenConsole {
                    domain: domain.clone(),
                    path,
                    source,
                })?;
                Ok(Response::Console(fd))
            }
            Request::Stats => {
                let cgroups = self.config.cgroups.clone();
                let host = runtime.clone();
                let (stats, mut extra) = tokio::task::spawn_blocking(move || {
                    let stats =
                        cgroups.and_then(|c| c.open(&host.cgroup_path).ok().map(|c| c.stats()));
                    (stats, super::stats::tap_counters(host.monitor_pid))
                })
                .await
                .unwrap_or_default();
                extra.extend(super::stats::qmp_counters(link).await);
                Ok(Response::Stats(DomainStats {
                    memory_bytes: stats.as_ref().and_then(|s| s.memory_bytes),
                    memory_limit: runtime.memory_limit,
                    cpu_time_ns: stats.as_ref().and_then(|s| s.cpu_time_ns),
                    pids: stats.as_ref().and_then(|s| s.pids),
                    extra,
                }))
            }
            Request::Enter {
                argv,
                env,
                cwd,
                // guest-exec runs the command in qemu-ga's own context: a
                // VM's confinement is qemu's, on the host, and there is no
                // label of lxvirt's inside the guest to leave.
                noseclabel: _,
                stdio,
            } => {
                let agent = link.agent().ok_or(QemuError::NoAgentChannel {
                    domain: domain.clone(),
                })?;
                if cwd.is_some() {
                    return Err(QemuError::EnterOption {
                        domain,
                        option: "cwd",
                    });
                }
                // guest-exec has no terminal to give.
                let Some(stdio) = stdio else {
                    return Err(QemuError::EnterOption {
                        domain,
                        option: "tty",
                    });
                };
                let (pid, exit) =
                    super::guest_exec::enter(&domain, agent, argv, env, stdio).await?;
                Ok(Response::Entered {
                    pid,
                    exit,
                    terminal: None,
                })
            }
            Request::Interfaces => {
                let agent = link.agent().ok_or(QemuError::NoAgentChannel {
                    domain: domain.clone(),
                })?;
                let interfaces = agent.network_interfaces().await?;
                Ok(Response::Interfaces(
                    interfaces.into_iter().filter(|i| i.name != "lo").collect(),
                ))
            }
            Request::AttachInterface { .. } | Request::DetachInterface { .. } => {
                Err(QemuError::NotSupported {
                    domain,
                    what: "interface hotplug",
                })
            }
            Request::UpdateDevice { live, old, new } => {
                let (DeviceDef::Interface(old), DeviceDef::Interface(new)) = (*old, *new) else {
                    return Err(QemuError::NotSupported {
                        domain,
                        what: "a live change of disks and host devices",
                    });
                };
                self.update_interface(link, &domain, *live, old, new).await
            }
            Request::AttachDevice { .. } | Request::DetachDevice { .. } => {
                Err(QemuError::NotSupported {
                    domain,
                    what: "hotplug of disks and host devices",
                })
            }
            Request::Tune { old, new } => {
                // <currentMemory> of a VM is what its balloon leaves it.
                if old.current_memory != new.current_memory {
                    let has_balloon = (new.devices.memballoon.as_ref())
                        .is_some_and(|b| b.model != crate::domain::MemballoonModel::None);
                    if !has_balloon {
                        return Err(QemuError::NotSupported {
                            domain,
                            what: "a change of the current memory without a <memballoon>",
                        });
                    }
                    let qmp = link.qmp().await?;
                    link.bounded(qmp.balloon(new.current_memory)).await?;
                }
                let cgroups = self.config.cgroups.clone().ok_or(QemuError::NoCgroups {
                    domain: domain.clone(),
                })?;
                let config = self.config.clone();
                let path = runtime.cgroup_path.clone();
                let task_domain = domain.clone();
                tokio::task::spawn_blocking(move || {
                    let spec = |def: &DomainDef| {
                        crate::cgroup::domain::tuning(
                            def,
                            &config.default_partition,
                            config.pids_max,
                            |p| device_numbers(&domain, p),
                        )
                        .map(|mut spec| {
                            spec.path = path.clone();
                            spec
                        })
                    };
                    let (old, new) = (spec(&old)?, spec(&new)?);
                    cgroups
                        .retune(&old, &new)
                        .map(|()| Response::Done)
                        .map_err(|source| QemuError::Cgroup { domain, source })
                })
                .await
                .map_err(|source| QemuError::Task {
                    domain: task_domain,
                    source,
                })?
            }
            // A VM's processes are its kernel's: only the guest can signal
            // them (`lxvirt enter` through the guest agent runs kill).
            Request::Signal { .. } => Err(QemuError::NotSupported {
                domain,
                what: "a signal to a process (use 'lxvirt enter VM -- kill' with the guest agent)",
            }),
        }
    }

    /// SIGTERM to qemu after `grace` if it still runs, SIGKILL after
    /// [`TERM_GRACE`] more; in the background, the core watches the exit.
    fn terminate_after(
        &self,
        domain: &str,
        runtime: &Runtime,
        grace: Duration,
    ) -> Result<(), QemuError> {
        let pidfd =
            find_process(runtime.monitor_pid, runtime.monitor_start_time).ok_or_else(|| {
                QemuError::Gone {
                    domain: domain.to_owned(),
                }
            })?;
        let domain = domain.to_owned();
        tokio::spawn(async move {
            let exited = exited(&pidfd);
            tokio::pin!(exited);
            if tokio::time::timeout(grace, &mut exited).await.is_ok() {
                return;
            }
            tracing::debug!(domain = %domain, "SIGTERM to qemu");
            let _ = pidfd_kill(pidfd.as_fd(), Signal::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, &mut exited).await.is_ok() {
                return;
            }
            tracing::warn!(domain = %domain, "qemu ignored SIGTERM; SIGKILL");
            let _ = pidfd_kill(pidfd.as_fd(), Signal::SIGKILL);
        });
        Ok(())
    }
}
