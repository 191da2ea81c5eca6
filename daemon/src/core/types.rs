//! What the core tells its front ends: summaries, events, errors.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use uuid::Uuid;

use super::lifecycle::{InvalidState, Reason, State};
#[cfg(doc)]
use super::store::Definition;
use super::store::StoreError;
use crate::domain::{DomainError, DomainType};

/// The flag words of `GetXML` and `Undefine`, part of the D-Bus contract.
pub use lxvirt_api::{AffectFlags, UndefineFlags, XmlFlags};

/// A command started inside a domain.
#[derive(Debug)]
pub struct Entered {
    /// A host pid for a container, the guest's for a VM.
    pub pid: i32,
    /// Yields one JSON line with the exit status when it ends.
    pub exit: OwnedFd,
    /// The master of its terminal, when it was given one.
    pub terminal: Option<OwnedFd>,
}

/// Sequence number of an [`Event`]; replies to mutating commands carry the
/// number of the last event they caused, so a front end can wait until it
/// has published that event before it answers its client.
pub type Seq = u64;

/// What clients see of a domain without asking for its XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    pub uuid: Uuid,
    pub name: String,
    pub domain_type: DomainType,
    pub persistent: bool,
    pub autostart: bool,
    pub state: State,
    pub reason: Reason,
    /// Host pid of init while the domain runs.
    pub init_pid: Option<i32>,
    /// When the running instance started (seconds since the epoch).
    pub start_time: Option<u64>,
    /// The SELinux process label of the running instance, if confined.
    pub security_label: Option<String>,
    /// How its ids map: `auto` (a user namespace with ids lxvirt
    /// allocates), `host` (none) or `idmap` (`<idmap>`): the running
    /// instance's, else what its next start gets.
    pub user_namespace: &'static str,
    /// The running instance's block of host ids (first, count), mode auto.
    pub host_ids: Option<(u32, u32)>,
}

/// What clients see of a network without asking for its XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSummary {
    pub uuid: Uuid,
    pub name: String,
    /// Whether it runs: its bridge, rules and DHCP/DNS server are up.
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
    /// The bridge's name (given, or picked at define time).
    pub bridge: String,
}

/// Where interface addresses come from (libvirt's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The DHCP leases of the domain's networks.
    Lease,
    /// The instance's own view (a container's namespace; a VM's agent).
    Agent,
}

/// The addresses of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddresses {
    /// Its name: inside for `Agent`, host side for `Lease`.
    pub name: String,
    pub mac: String,
    pub addresses: Vec<(std::net::IpAddr, u8)>,
}

/// A lifecycle event, as published in the Domain's lifecycle signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Defined {
        updated: bool,
    },
    Undefined,
    Started,
    /// Started again by a reboot (a request or init's own `reboot(2)`).
    Rebooted,
    /// A VM's machine was reset in place (its qemu stays).
    Reset,
    Stopped(Reason),
    Suspended,
    Resumed,
    /// Init crashed and `on_crash='preserve'` kept the domain as crashed.
    Crashed,
}

impl Lifecycle {
    /// The event's name and its detail.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Lifecycle::Defined { updated: false } => ("defined", "added"),
            Lifecycle::Defined { updated: true } => ("defined", "updated"),
            Lifecycle::Undefined => ("undefined", "removed"),
            Lifecycle::Started => ("started", "booted"),
            Lifecycle::Rebooted => ("rebooted", "restarted"),
            Lifecycle::Reset => ("rebooted", "reset"),
            Lifecycle::Stopped(reason) => ("stopped", reason.as_str()),
            Lifecycle::Suspended => ("suspended", "paused"),
            Lifecycle::Resumed => ("resumed", "unpaused"),
            Lifecycle::Crashed => ("crashed", "preserved"),
        }
    }
}

/// Something that changed in the manager's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: Seq,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A domain appeared or one of its summary fields changed.
    Changed {
        summary: DomainSummary,
        lifecycle: Option<Lifecycle>,
    },
    /// A domain is gone.
    Removed { uuid: Uuid, lifecycle: Lifecycle },
    /// A network appeared or one of its summary fields changed.
    NetworkChanged {
        summary: NetworkSummary,
        lifecycle: Option<Lifecycle>,
    },
    /// A network is gone.
    NetworkRemoved { uuid: Uuid, lifecycle: Lifecycle },
}

/// How a client names a domain or a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Name(String),
    Uuid(Uuid),
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Name(name) => write!(f, "'{name}'"),
            Lookup::Uuid(uuid) => write!(f, "with uuid {uuid}"),
        }
    }
}

pub use crate::driver::DomainStats;

/// Why the core refused or failed a command.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("no domain {0}; see 'lxvirt list --all'")]
    NoSuchDomain(Lookup),
    #[error("no network {0}; see 'lxvirt net-list --all'")]
    NoSuchNetwork(Lookup),
    #[error("invalid domain XML")]
    InvalidXml(#[from] DomainError),
    #[error("invalid network XML")]
    InvalidNetworkXml(#[source] DomainError),
    /// `kind`: domain or network, as in [`Definition::KIND`].
    #[error(
        "{kind} '{name}' already exists with uuid {existing}; keep that uuid or choose another name"
    )]
    NameTaken {
        kind: &'static str,
        name: String,
        existing: Uuid,
    },
    #[error("uuid {uuid} is already used by {kind} '{other}'; remove <uuid> or choose another one")]
    UuidTaken {
        kind: &'static str,
        uuid: Uuid,
        other: String,
    },
    #[error("{kind} '{name}': its file {path} could not be loaded; fix or remove that file first")]
    Blocked {
        kind: &'static str,
        name: String,
        path: PathBuf,
    },
    #[error(
        "network '{network}': bridge '{bridge}' is already used by network '{other}'; choose another <bridge name=> or remove it to have one picked"
    )]
    BridgeTaken {
        network: String,
        bridge: String,
        other: String,
    },
    #[error(
        "network '{network}': subnet {subnet} overlaps {other_subnet} of network '{other}'; choose a subnet that neither network uses"
    )]
    SubnetOverlap {
        network: String,
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error(transparent)]
    InvalidState(#[from] InvalidState),
    #[error("domain '{domain}' is not running: cannot {operation}; start it first")]
    NotRunning {
        domain: String,
        operation: &'static str,
    },
    #[error(
        "domain '{domain}' has no interface '{device}'; see 'lxvirt domiflist {domain}' (a name inside, a host-side name or a MAC)"
    )]
    NoSuchInterface { domain: String, device: String },
    #[error("domain '{domain}': cannot change the {which} definition's {what}: {problem}")]
    TuningRefused {
        domain: String,
        which: &'static str,
        what: &'static str,
        problem: String,
    },
    #[error("domain '{domain}': cannot change the {which} definition's devices: {problem}")]
    DeviceRefused {
        domain: String,
        which: &'static str,
        problem: String,
    },
    #[error("network '{network}' {problem}")]
    NetworkState {
        network: String,
        problem: &'static str,
    },
    #[error(
        "network '{network}' is in use by running domains: {}; stop them first, or destroy it with --force (they lose their connection)",
        domains.join(", ")
    )]
    NetworkInUse {
        network: String,
        domains: Vec<String>,
    },
    #[error("domain '{domain}': its interface #{index} uses network '{network}', which {problem}")]
    NetworkUnavailable {
        domain: String,
        index: usize,
        network: String,
        /// What is wrong and what to do.
        problem: String,
    },
    #[error("domain '{domain}': its interface #{index} cannot join network '{network}'")]
    PortRefused {
        domain: String,
        index: usize,
        network: String,
        #[source]
        source: Box<crate::net::virtual_network::NetworkError>,
    },
    #[error(transparent)]
    Network(#[from] crate::net::virtual_network::NetworkError),

    #[error(
        "domain '{0}' is transient; it cannot be undefined or marked for autostart, define it first"
    )]
    NotPersistent(String),
    #[error(
        "domain '{domain}': another operation ({operation}) is in progress; try again when it is done"
    )]
    Busy {
        domain: String,
        operation: &'static str,
    },
    #[error("domain '{domain}': the {driver} driver is not available on this host{hint}")]
    DriverUnavailable {
        domain: String,
        driver: &'static str,
        hint: &'static str,
    },
    /// The driver refused or failed; its errors name the domain, the step
    /// and the fix themselves, and their kind decides the D-Bus error.
    #[error(transparent)]
    Driver(#[from] crate::driver::Error),
    /// A start failed; every waiter but the first gets this copy of the
    /// error the first one got.
    #[error("domain '{domain}': the start failed: {message}")]
    StartFailed { domain: String, message: String },
    #[error("domain '{domain}' stopped while the request was carried out")]
    StoppedMeanwhile { domain: String },
    /// A started instance whose live status could not be written: undone,
    /// since a restarted daemon would not have found it.
    #[error(
        "domain '{domain}': the instance started but cannot be recorded in the run directory, so it was stopped again; make room in the run directory and start it again"
    )]
    LiveStatus {
        domain: String,
        #[source]
        source: crate::persist::PersistError,
    },
    /// The security driver refused or failed (the message names the domain).
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// No id block for the user namespace (the message names the domain).
    #[error(transparent)]
    Userns(#[from] crate::security::userns::UsernsError),
    #[error("invalid flags {0:#x}")]
    InvalidFlags(u32),
    #[error("{kind} '{name}': cannot save its definition")]
    Store {
        kind: &'static str,
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error(
        "nothing was applied: {} refused:\n{}\nfix them and run again",
        if .0.len() == 1 { "one document is".to_owned() } else { format!("{} documents are", .0.len()) },
        .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n")
    )]
    ApplyRefused(Vec<super::manager::Refusal>),
    #[error("domain '{domain}': its driver keeps no console output")]
    NoConsoleLog { domain: String },
    #[error("domain '{domain}': cannot make the pipe for its log")]
    LogPipe {
        domain: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the root element is <{root}>; lxvirt applies <domain> and <network> documents")]
    NotADefinition { root: String },
    /// The image store cannot be used on this host.
    #[error(transparent)]
    StorageUnavailable(#[from] super::images::StorageUnavailable),
    /// An image operation failed (the store's error names the image).
    #[error(transparent)]
    Storage(Box<crate::storage::StorageError>),
    /// A domain's image or writable layer failed it.
    #[error("domain '{domain}': {action}")]
    DomainStorage {
        domain: String,
        action: String,
        #[source]
        source: Box<crate::storage::StorageError>,
    },
}

impl From<crate::storage::StorageError> for CoreError {
    fn from(error: crate::storage::StorageError) -> Self {
        CoreError::Storage(Box::new(error))
    }
}

impl From<super::lifecycle::Refusal> for CoreError {
    fn from(refusal: super::lifecycle::Refusal) -> Self {
        match refusal {
            super::lifecycle::Refusal::InvalidState(error) => CoreError::InvalidState(error),
            super::lifecycle::Refusal::Busy { domain, in_flight } => CoreError::Busy {
                domain,
                operation: in_flight,
            },
        }
    }
}
