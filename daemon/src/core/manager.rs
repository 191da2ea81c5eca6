//! The manager task and its handle.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::lifecycle::{self, InvalidState, Operation, Reason, State};
use super::store::{Loaded, Store, StoreError};
use crate::domain::{DomainDef, DomainError, DomainType};

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
}

/// A lifecycle event, as published in the Domain's lifecycle signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Defined { updated: bool },
    Undefined,
}

impl Lifecycle {
    /// The event's name and its detail.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Lifecycle::Defined { updated: false } => ("defined", "added"),
            Lifecycle::Defined { updated: true } => ("defined", "updated"),
            Lifecycle::Undefined => ("undefined", "removed"),
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
}

/// Flags of `GetXML`, as libvirt numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XmlFlags(pub u32);

impl XmlFlags {
    /// Include security-sensitive data (accepted; lxvirt keeps none yet).
    pub const SECURE: u32 = 1;
    /// The persistent definition rather than the live one.
    pub const INACTIVE: u32 = 2;
    pub const ALL: u32 = Self::SECURE | Self::INACTIVE;

    pub fn inactive(self) -> bool {
        self.0 & Self::INACTIVE != 0
    }
}

/// How a client names a domain.
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

/// Why the core refused or failed a command.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("no domain {0}; see 'lxvirt list --all'")]
    NoSuchDomain(Lookup),
    #[error("invalid domain XML: {0}")]
    InvalidXml(#[from] DomainError),
    #[error(
        "domain '{name}' already exists with uuid {existing}; keep that uuid or choose another name"
    )]
    NameTaken { name: String, existing: Uuid },
    #[error("uuid {uuid} is already used by domain '{other}'; remove <uuid> or choose another one")]
    UuidTaken { uuid: Uuid, other: String },
    #[error("domain '{name}': its file {path} could not be loaded; fix or remove that file first")]
    Blocked { name: String, path: PathBuf },
    #[error(transparent)]
    InvalidState(#[from] InvalidState),
    #[error(
        "domain '{0}' is transient; it cannot be undefined or marked for autostart, define it first"
    )]
    NotPersistent(String),
    #[error("domain '{domain}': the {driver} driver is not available on this host{hint}")]
    DriverUnavailable {
        domain: String,
        driver: &'static str,
        hint: &'static str,
    },
    #[error("invalid flags {0:#x}")]
    InvalidFlags(u32),
    #[error("domain '{name}': cannot save its definition")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

type Reply<T> = oneshot::Sender<Result<T, CoreError>>;

/// A request to the manager task.
#[derive(Debug)]
pub enum Command {
    Define {
        xml: String,
        reply: Reply<(DomainSummary, Seq)>,
    },
    Undefine {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    SetAutostart {
        uuid: Uuid,
        enabled: bool,
        reply: Reply<Seq>,
    },
    Start {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    Lookup {
        lookup: Lookup,
        reply: Reply<DomainSummary>,
    },
    List {
        reply: oneshot::Sender<Vec<DomainSummary>>,
    },
    GetXml {
        uuid: Uuid,
        flags: XmlFlags,
        reply: Reply<String>,
    },
}

/// A domain as the manager holds it.
#[derive(Debug)]
struct Entry {
    /// The persistent definition (for a transient domain: the one it was created from).
    def: DomainDef,
    /// The definition the running instance uses, when it differs from `def`.
    live: Option<DomainDef>,
    persistent: bool,
    autostart: bool,
    state: State,
    reason: Reason,
}

impl Entry {
    fn summary(&self) -> DomainSummary {
        DomainSummary {
            uuid: self.def.uuid,
            name: self.def.name.to_string(),
            domain_type: self.def.domain_type,
            persistent: self.persistent,
            autostart: self.autostart,
            state: self.state,
            reason: self.reason,
        }
    }

    fn name(&self) -> &str {
        self.def.name.as_str()
    }
}

/// The owner of all domain state. Runs as one task; see [`Manager::spawn`].
#[derive(Debug)]
pub struct Manager {
    store: Store,
    domains: HashMap<Uuid, Entry>,
    names: HashMap<String, Uuid>,
    blocked: HashMap<String, PathBuf>,
    events: mpsc::UnboundedSender<Event>,
    seq: Seq,
}

/// A cheap, cloneable way to talk to the manager task.
#[derive(Debug, Clone)]
pub struct ManagerHandle {
    tx: mpsc::Sender<Command>,
}

/// Commands waiting for the manager; bounded so that a flood of clients
/// waits instead of growing memory without limit.
const COMMAND_QUEUE: usize = 256;

impl Manager {
    /// Builds the manager from what the store loaded. Problems in `loaded`
    /// are the caller's to report; their names stay blocked here.
    pub fn new(store: Store, loaded: Loaded, events: mpsc::UnboundedSender<Event>) -> Manager {
        let mut manager = Manager {
            store,
            domains: HashMap::new(),
            names: HashMap::new(),
            blocked: loaded.blocked,
            events,
            seq: 0,
        };
        for stored in loaded.domains {
            let entry = Entry {
                def: stored.def,
                live: None,
                persistent: true,
                autostart: stored.autostart,
                state: State::Shutoff,
                reason: Reason::Unknown,
            };
            manager
                .names
                .insert(entry.name().to_owned(), entry.def.uuid);
            manager.domains.insert(entry.def.uuid, entry);
        }
        manager
    }

    /// Summaries of every domain, for front ends that need the initial set.
    pub fn summaries(&self) -> Vec<DomainSummary> {
        let mut list: Vec<_> = self.domains.values().map(Entry::summary).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Starts the manager task; it ends when every handle is dropped.
    pub fn spawn(self) -> (ManagerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(self.run(rx));
        (ManagerHandle { tx }, task)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            self.handle(command);
        }
    }

    fn handle(&mut self, command: Command) {
        // A dropped reply channel means the client went away; nothing to do.
        match command {
            Command::Define { xml, reply } => {
                let _ = reply.send(self.define(&xml));
            }
            Command::Undefine { uuid, reply } => {
                let _ = reply.send(self.undefine(uuid));
            }
            Command::SetAutostart {
                uuid,
                enabled,
                reply,
            } => {
                let _ = reply.send(self.set_autostart(uuid, enabled));
            }
            Command::Start { uuid, reply } => {
                let _ = reply.send(self.start(uuid));
            }
            Command::Lookup { lookup, reply } => {
                let _ = reply.send(self.lookup(&lookup).map(Entry::summary));
            }
            Command::List { reply } => {
                let _ = reply.send(self.summaries());
            }
            Command::GetXml { uuid, flags, reply } => {
                let _ = reply.send(self.get_xml(uuid, flags));
            }
        }
    }

    fn publish(&mut self, kind: EventKind) -> Seq {
        self.seq += 1;
        // The receiver lives as long as the daemon; after it is gone nobody
        // is left to tell.
        let _ = self.events.send(Event {
            seq: self.seq,
            kind,
        });
        self.seq
    }

    fn lookup(&self, lookup: &Lookup) -> Result<&Entry, CoreError> {
        let uuid = match lookup {
            Lookup::Name(name) => self.names.get(name),
            Lookup::Uuid(uuid) => Some(uuid),
        };
        uuid.and_then(|u| self.domains.get(u))
            .ok_or_else(|| CoreError::NoSuchDomain(lookup.clone()))
    }

    fn entry_mut(&mut self, uuid: Uuid) -> Result<&mut Entry, CoreError> {
        self.domains
            .get_mut(&uuid)
            .ok_or(CoreError::NoSuchDomain(Lookup::Uuid(uuid)))
    }

    fn define(&mut self, xml: &str) -> Result<(DomainSummary, Seq), CoreError> {
        let mut def = DomainDef::from_xml(xml)?;
        let name = def.name.to_string();
        if let Some(path) = self.blocked.get(&name) {
            return Err(CoreError::Blocked {
                name,
                path: path.clone(),
            });
        }
        let existing = self.names.get(&name).copied();
        if let Some(existing) = existing {
            // A document without <uuid> updates the domain of that name, so
            // that applying the same file twice is idempotent.
            if !has_explicit_uuid(xml) {
                def.uuid = existing;
            }
            if def.uuid != existing {
                return Err(CoreError::NameTaken { name, existing });
            }
        } else if let Some(other) = self.domains.get(&def.uuid) {
            return Err(CoreError::UuidTaken {
                uuid: def.uuid,
                other: other.name().to_owned(),
            });
        }
        if let Some(entry) = existing.and_then(|u| self.domains.get(&u)) {
            lifecycle::check(&name, entry.state, Operation::Define)?;
        }
        self.store.save(&def).map_err(|source| CoreError::Store {
            name: name.clone(),
            source,
        })?;
        let updated = existing.is_some();
        let entry = match existing {
            Some(uuid) => {
                let entry = self.entry_mut(uuid)?;
                if entry.state.is_active() && entry.live.is_none() {
                    // The running instance keeps the definition it started with.
                    entry.live = Some(std::mem::replace(&mut entry.def, def));
                } else {
                    entry.def = def;
                }
                entry.persistent = true;
                entry
            }
            None => {
                let uuid = def.uuid;
                self.names.insert(name, uuid);
                self.domains.entry(uuid).or_insert(Entry {
                    def,
                    live: None,
                    persistent: true,
                    autostart: false,
                    state: State::Shutoff,
                    reason: Reason::Unknown,
                })
            }
        };
        let summary = entry.summary();
        let seq = self.publish(EventKind::Changed {
            summary: summary.clone(),
            lifecycle: Some(Lifecycle::Defined { updated }),
        });
        Ok((summary, seq))
    }

    fn undefine(&mut self, uuid: Uuid) -> Result<Seq, CoreError> {
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        if !entry.persistent {
            return Err(CoreError::NotPersistent(name));
        }
        lifecycle::check(&name, entry.state, Operation::Undefine)?;
        self.store
            .remove(&name)
            .map_err(|source| CoreError::Store {
                name: name.clone(),
                source,
            })?;
        let entry = self.entry_mut(uuid)?;
        if entry.state.is_active() {
            entry.persistent = false;
            entry.autostart = false;
            let summary = entry.summary();
            return Ok(self.publish(EventKind::Changed {
                summary,
                lifecycle: Some(Lifecycle::Undefined),
            }));
        }
        self.domains.remove(&uuid);
        self.names.remove(&name);
        Ok(self.publish(EventKind::Removed {
            uuid,
            lifecycle: Lifecycle::Undefined,
        }))
    }

    fn set_autostart(&mut self, uuid: Uuid, enabled: bool) -> Result<Seq, CoreError> {
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        if !entry.persistent {
            return Err(CoreError::NotPersistent(name));
        }
        if entry.autostart == enabled {
            return Ok(self.seq);
        }
        self.store
            .set_autostart(&name, enabled)
            .map_err(|source| CoreError::Store { name, source })?;
        let entry = self.entry_mut(uuid)?;
        entry.autostart = enabled;
        let summary = entry.summary();
        Ok(self.publish(EventKind::Changed {
            summary,
            lifecycle: None,
        }))
    }

    fn start(&mut self, uuid: Uuid) -> Result<Seq, CoreError> {
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        lifecycle::check(&name, entry.state, Operation::Start)?;
        let (driver, hint) = match entry.def.domain_type {
            DomainType::Lxc => ("lxc", "; this build of lxvirtd does not run containers yet"),
            _ => (
                "kvm",
                "; this build of lxvirtd stores and lists KVM domains but cannot run them yet",
            ),
        };
        Err(CoreError::DriverUnavailable {
            domain: name,
            driver,
            hint,
        })
    }

    fn get_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        if flags.0 & !XmlFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let entry = self.lookup(&Lookup::Uuid(uuid))?;
        // While running, the live definition is shown; the persistent one
        // (perhaps updated since the start) with INACTIVE.
        let def = if flags.inactive() {
            &entry.def
        } else {
            entry.live.as_ref().unwrap_or(&entry.def)
        };
        Ok(def.to_xml())
    }
}

/// Whether a document names its uuid (the parser generates one otherwise).
fn has_explicit_uuid(xml: &str) -> bool {
    crate::domain::xml::parse_str(xml)
        .map(|root| root.element("uuid").is_some())
        .unwrap_or(false)
}

impl ManagerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| CoreError::ShuttingDown)?;
        rx.await.map_err(|_| CoreError::ShuttingDown)
    }

    pub async fn define_xml(&self, xml: String) -> Result<(DomainSummary, Seq), CoreError> {
        self.ask(|reply| Command::Define { xml, reply }).await?
    }

    pub async fn undefine(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Undefine { uuid, reply }).await?
    }

    pub async fn set_autostart(&self, uuid: Uuid, enabled: bool) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::SetAutostart {
            uuid,
            enabled,
            reply,
        })
        .await?
    }

    pub async fn start(&self, uuid: Uuid) -> Result<Seq, CoreError> {
        self.ask(|reply| Command::Start { uuid, reply }).await?
    }

    pub async fn lookup(&self, lookup: Lookup) -> Result<DomainSummary, CoreError> {
        self.ask(|reply| Command::Lookup { lookup, reply }).await?
    }

    pub async fn list(&self) -> Result<Vec<DomainSummary>, CoreError> {
        self.ask(|reply| Command::List { reply }).await
    }

    pub async fn get_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        self.ask(|reply| Command::GetXml { uuid, flags, reply })
            .await?
    }
}
