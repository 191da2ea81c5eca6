//! The seam between the core and the drivers that run domains.
//!
//! This module holds only the interface, so that both sides depend on it
//! and neither on the other: `core` uses it, `lxc` implements it. The core owns every domain's state, the lifecycle table, the store,
//! events, `on_*` actions, and the allocators of labels and ids. A driver
//! turns a definition (labels and ids already resolved) into a running
//! instance and carries the core's requests to it; it keeps no domain
//! state of its own beyond what lets it find an instance again. The LXC
//! driver (a monitor per container) is the first implementation; the
//! manager's unit tests use a driver of their own.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::domain::{DomainDef, DomainType, InterfaceSource};
use crate::security::{FileLabeler, Prepared as PreparedLabels};
use crate::storage::RootMount;

/// A future a driver hands back to the core; `'static` so the core can
/// run it off its own task.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Everything a driver needs to start an instance.
#[derive(Debug)]
pub struct StartRequest {
    /// The instance's definition, with its live labels and id block.
    pub def: DomainDef,
    /// What the security driver prepared for it.
    pub labels: PreparedLabels,
    /// Sets file labels where the host has a security driver that uses
    /// them; the driver labels the instance's own files with it.
    pub labeler: Option<FileLabeler>,
    /// The host's label for shared read-only content (image layers).
    pub content_label: Option<String>,
    /// The prepared root of an image-rooted domain.
    pub image_root: Option<RootMount>,
    /// Init pids of the running domains, by name (for sharing namespaces).
    pub running_inits: HashMap<String, i32>,
    /// The active networks its `type='network'` interfaces use, by name.
    pub networks: HashMap<String, NetworkPort>,
}

/// The definition a driver runs: each `type='network'` interface plugged
/// into its network's bridge, as a `type='bridge'` one. One the core gave
/// no port for stays as it is (the driver refuses it).
pub fn plug_networks(def: &DomainDef, networks: &HashMap<String, NetworkPort>) -> DomainDef {
    let mut plugged = def.clone();
    plugged.change_interfaces(
        |interface| port_of(interface, networks).is_some(),
        |_, interface| {
            if let Some(port) = port_of(interface, networks) {
                interface.source = InterfaceSource::Bridge {
                    bridge: port.bridge.clone(),
                };
            }
        },
    );
    plugged
}

/// The port of a `type='network'` interface among `networks`.
fn port_of<'n>(
    interface: &crate::domain::Interface,
    networks: &'n HashMap<String, NetworkPort>,
) -> Option<&'n NetworkPort> {
    match &interface.source {
        InterfaceSource::Network { network, .. } => networks.get(network),
        _ => None,
    }
}

/// Where an interface on a virtual network plugs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPort {
    /// The network's bridge.
    pub bridge: String,
    /// The device group its host end is made in, when the network filters
    /// its ports (by that group: a port it does not know yet passes
    /// nothing).
    pub group: Option<u32>,
    /// The network has IPv6 addresses: its ports get IPv6 link-local
    /// addresses and autoconfiguration (without, they get none).
    pub ipv6: bool,
}

/// What the core remembers of a running instance, in its live status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// The instance's first process (a container's init).
    pub init_pid: i32,
    /// The process the core watches: when it is gone, so is the instance.
    pub monitor_pid: i32,
    /// With the pid, identifies the watched process across pid reuse.
    pub monitor_start_time: u64,
    /// Seconds since the epoch.
    pub started_at: u64,
    /// The instance's cgroup below each hierarchy root.
    pub cgroup_path: PathBuf,
    /// The memory limit applied to the cgroup, bytes.
    pub memory_limit: Option<u64>,
}

/// A started instance.
pub struct Started {
    /// Without `started_at`, which the core sets.
    pub runtime: Runtime,
    /// Completes when the instance is gone.
    pub exited: BoxFuture<()>,
    /// Called once the core has recorded the instance (its live status
    /// file), before the start is answered. Until then a driver may undo
    /// the start should the daemon die: a start nobody recorded would run
    /// unmanaged. Dropped uncalled (the start turned stale), it undoes it.
    pub on_recorded: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// How a shutdown (or the stop of a reboot) asks the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// The driver's usual way: a container's init as its kind wants it
    /// (SIGRTMIN+3 for systemd, `/run/initctl` for sysvinit, else
    /// SIGTERM), a VM the ACPI power button.
    #[default]
    Default,
    /// The ACPI power button (VMs).
    PowerButton,
    /// The QEMU guest agent's `guest-shutdown` (VMs with an agent channel).
    Agent,
    /// SIGTERM to init (containers).
    Signal,
    /// A runlevel 0 request on the container's `/run/initctl` (sysvinit).
    Initctl,
    /// SIGRTMIN+3 to init, which systemd takes as `halt` (containers).
    Systemd,
}

impl ShutdownMode {
    /// Every mode by its name (virsh's `--mode` words).
    pub const NAMED: [(&'static str, ShutdownMode); 6] = [
        ("default", ShutdownMode::Default),
        ("acpi", ShutdownMode::PowerButton),
        ("agent", ShutdownMode::Agent),
        ("signal", ShutdownMode::Signal),
        ("initctl", ShutdownMode::Initctl),
        ("systemd", ShutdownMode::Systemd),
    ];

    /// The mode named `name` (empty: the default).
    pub fn from_name(name: &str) -> Option<ShutdownMode> {
        if name.is_empty() {
            return Some(ShutdownMode::Default);
        }
        Self::NAMED
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, mode)| *mode)
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMED
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("default", |(name, _)| name)
    }
}

/// What a running instance is asked.
#[derive(Debug)]
pub enum Request {
    /// Ask it to stop (as `mode` says); forcibly after `grace`.
    Shutdown {
        grace: std::time::Duration,
        mode: ShutdownMode,
    },
    /// Stop it now.
    Destroy,
    /// Reset it in place (only to drivers whose `resets_in_place`).
    Reset,
    Freeze,
    Thaw,
    /// A descriptor relayed to console `index`.
    Console {
        index: u32,
    },
    /// Run a command inside with `stdio` as its stdin, stdout and stderr.
    Enter {
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        noseclabel: bool,
        /// stdin, stdout and stderr; `None`: a new terminal of the
        /// instance's own, the command's controlling terminal.
        stdio: Option<[OwnedFd; 3]>,
    },
    Stats,
    /// The instance's network interfaces as it sees them.
    Interfaces,
    /// Plug an interface into the running instance (its MAC and host-side
    /// name are set); `port` is where a `type='network'` one plugs in.
    AttachInterface {
        /// The running definition, without the interface.
        live: Box<DomainDef>,
        interface: Box<crate::domain::Interface>,
        port: Option<NetworkPort>,
    },
    /// Unplug an interface the instance has (as its live definition says).
    DetachInterface {
        /// The running definition, with the interface.
        live: Box<DomainDef>,
        interface: Box<crate::domain::Interface>,
    },
    /// Add a disk, filesystem or host device to the running instance,
    /// whose live definition becomes `live` (which has it).
    AttachDevice {
        live: Box<DomainDef>,
        device: Box<crate::domain::DeviceDef>,
    },
    /// Remove a disk, filesystem or host device (as the live definition
    /// has it) from the running instance, whose live definition becomes
    /// `live` (which lacks it).
    DetachDevice {
        live: Box<DomainDef>,
        device: Box<crate::domain::DeviceDef>,
    },
    /// Change a disk, filesystem or host device of the running instance
    /// from `old` to `new` (the same device, named alike); its live
    /// definition becomes `live`.
    UpdateDevice {
        live: Box<DomainDef>,
        old: Box<crate::domain::DeviceDef>,
        new: Box<crate::domain::DeviceDef>,
    },
    /// Send `signal` to the process the instance numbers `pid` (in its own
    /// pid namespace).
    Signal {
        pid: i64,
        signal: i32,
    },
    /// Apply the tuning of `new` (its `<memtune>`, `<cputune>`) to the
    /// running instance, which runs with `old`'s; all of it or none.
    Tune {
        old: Box<DomainDef>,
        new: Box<DomainDef>,
    },
}

/// A network interface as the instance sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestInterface {
    pub name: String,
    pub mac: Option<String>,
    /// Addresses with their prefixes (not loopback's).
    pub addresses: Vec<(std::net::IpAddr, u8)>,
    /// Counters from the instance's side.
    pub counters: InterfaceCounters,
}

/// Traffic counters of one interface, from the instance's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A driver's answer to a [`Request`].
#[derive(Debug)]
pub enum Response {
    Done,
    Console(OwnedFd),
    /// The command runs as `pid` (a host pid for a container, the guest's
    /// pid for a VM); `exit` yields one [`EnterExit`] line when it ends.
    Entered {
        pid: i32,
        exit: OwnedFd,
        /// The terminal's master, when the request asked for one.
        terminal: Option<OwnedFd>,
    },
    Stats(DomainStats),
    Interfaces(Vec<GuestInterface>),
    /// An interface was plugged in under this name inside.
    Attached {
        guest_name: String,
    },
}

/// How an entered command ended: the one JSON line a driver writes to the
/// exit pipe of [`Response::Entered`] (`{"exited":{"code":0}}`,
/// `{"signaled":{"signal":9}}`), which clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnterExit {
    Exited { code: i32 },
    Signaled { signal: i32 },
}

impl EnterExit {
    /// The line written to the exit pipe, newline included.
    pub fn line(&self) -> Vec<u8> {
        // Two plain variants of integers: serializing cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// How an instance ended, as its driver found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped as the core asked.
    Destroyed,
    Shutdown,
    /// It powered off (or its init exited) by itself.
    PoweredOff,
    /// It asked to be rebooted.
    Rebooted,
    /// It died abnormally.
    Crashed,
    /// Whatever watched it is gone without a word; the driver cleaned up
    /// what it could.
    Vanished,
    /// It ended and was cleaned up, but how cannot be read (the problems
    /// say why): no lifecycle action is taken.
    Unknown,
}

/// An instance that ended, with the problems met while cleaning up after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    /// One line each, for the log: the instance is gone either way.
    pub problems: Vec<String>,
}

/// Resource use of a running instance, from its cgroup, and what else
/// its driver counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainStats {
    pub memory_bytes: Option<u64>,
    pub memory_limit: Option<u64>,
    pub cpu_time_ns: Option<u64>,
    pub pids: Option<u64>,
    /// Named counters of the driver's own (a VM's `balloon.current`,
    /// `block.vda.rd.bytes`, `net.vnet0.rx.bytes`, …).
    pub extra: Vec<(String, u64)>,
}

/// What kind of failure a driver met, for the core's typed errors: the
/// kind decides the D-Bus error name, the source the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The definition asks for something this driver cannot do (yet).
    NotSupported,
    /// The driver cannot run this domain on this host.
    Unavailable,
    /// Something the definition needs is not in the right state (a domain
    /// whose namespaces it shares is not running).
    InvalidState,
    /// A security driver is needed and unavailable.
    SecurityUnavailable,
    /// The request names something the instance does not have (a
    /// process, a device).
    InvalidArgument,
    /// Anything else: I/O, a process that died, a bug.
    Failed,
}

/// A driver's error: its kind, and the driver's own error, whose message
/// names the domain, the step and the fix. It shows as that error (its
/// causes included), so the message does not change across the seam.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    pub fn new(
        kind: ErrorKind,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error {
            kind,
            inner: inner.into(),
        }
    }

    /// A failure with a message of its own.
    pub fn failed(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Failed, message.into())
    }

    /// A shutdown mode this kind of domain has no way to carry out.
    pub fn mode_not_supported(
        domain: &str,
        mode: ShutdownMode,
        kind: &'static str,
        hint: &'static str,
    ) -> Error {
        Error::new(
            ErrorKind::NotSupported,
            format!(
                "domain '{domain}': shutdown mode '{}' is not supported for {kind}; {hint}",
                mode.as_str()
            ),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// The drivers of a daemon, by the domain type each runs.
#[derive(Debug, Clone, Default)]
pub struct Drivers {
    by_type: Vec<(DomainType, Arc<dyn Driver>)>,
}

impl Drivers {
    /// Adds `driver` for domains of `domain_type`.
    pub fn with(mut self, domain_type: DomainType, driver: Arc<dyn Driver>) -> Drivers {
        self.by_type.retain(|(t, _)| *t != domain_type);
        self.by_type.push((domain_type, driver));
        self
    }

    pub fn get(&self, domain_type: DomainType) -> Option<&Arc<dyn Driver>> {
        self.by_type
            .iter()
            .find(|(t, _)| *t == domain_type)
            .map(|(_, d)| d)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Driver>> {
        self.by_type.iter().map(|(_, d)| d)
    }
}

/// A driver: runs the domains of one type.
pub trait Driver: Send + Sync + fmt::Debug {
    /// Its name in messages (`lxc`).
    fn name(&self) -> &'static str;

    /// Readies anything that makes the next start fast (called once the
    /// core runs, and cheap to call again).
    fn warm_up(&self) {}

    /// Why this host cannot run `def` with this driver at all (a `kvm`
    /// domain without a usable KVM), asked before anything is reserved
    /// for the start, so that this reason comes first.
    fn unavailable(&self, _def: &DomainDef) -> Option<Error> {
        None
    }

    /// Whether a running instance of `def` can be asked to shut down as
    /// `mode` says; asked before the request, so a refusal changes nothing.
    fn check_shutdown_mode(
        &self,
        def: &DomainDef,
        runtime: Option<&Runtime>,
        mode: ShutdownMode,
    ) -> Result<(), Error>;

    /// Whether the driver resets an instance in place ([`Request::Reset`]);
    /// otherwise the core resets it as an immediate stop and a restart.
    fn resets_in_place(&self) -> bool {
        false
    }

    /// Checks and converts `request` on the core's task (cheap, no side
    /// effects): an error refuses the start before anything happened.
    /// The returned future does the work; its error means nothing of the
    /// instance is left. The core may drop it unpolled (a start that fails
    /// before its launch: the record of its id block).
    fn start(&self, request: StartRequest) -> Result<BoxFuture<Result<Started, Error>>, Error>;

    /// Finds an instance that ran before the daemon restarted: `Some`
    /// with its exit future when it still runs.
    fn reconnect(&self, name: &str, runtime: &Runtime) -> Option<BoxFuture<()>>;

    /// Called once at start-up, after the core reconnected to every
    /// instance it has a record of (`recorded`, by name): ends whatever
    /// else of this driver's still runs — a start the last daemon died
    /// before recording, never answered — so that nothing runs unmanaged.
    /// Returns the names ended. Drivers whose instances end by themselves
    /// without a record (a container's monitor) need nothing here.
    fn end_unrecorded(&self, _recorded: &std::collections::HashSet<String>) -> Vec<String> {
        Vec::new()
    }

    /// Carries a request to the running instance `name`.
    fn request(
        &self,
        name: &str,
        runtime: &Runtime,
        request: Request,
    ) -> BoxFuture<Result<Response, Error>>;

    /// After the exit future completed: how the instance ended, with
    /// everything it held on the host released; `live` is the definition
    /// it ran with, devices plugged in meanwhile included.
    fn collect_exit(&self, name: &str, runtime: &Runtime, live: &DomainDef) -> Ended;

    /// Removes the files of a start that failed or of an instance whose
    /// remains were destroyed.
    fn release(&self, name: &str);

    /// Removes what the driver keeps of a domain that is undefined (logs).
    fn forget(&self, name: &str);

    /// The files that keep the console's output of `name`, oldest first;
    /// those that exist are what `logs` shows.
    fn console_log_files(&self, _name: &str) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}
