//! The manager task: the single owner of every domain's state.
//!
//! Commands arrive on a channel and are applied one at a time. Work that
//! waits on a container (launching its monitor, a shutdown, a freeze) runs
//! in a spawned task that reports back on an internal channel, so the
//! manager never blocks on one domain while others wait.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::images::ImageStore;
use super::lifecycle::{self, Operation, Reason, State};
use super::live::LiveStatus;
use super::store::{Loaded, Store};
use super::types::{
    CoreError, DomainStats, DomainSummary, Event, EventKind, Lifecycle, Lookup, Seq, UndefineFlags,
    XmlFlags,
};
use crate::cgroup::Cgroups;
use crate::domain::{DomainDef, DomainType, LifecycleAction, Userns, UsernsMode};
use crate::lxc::convert::{self, ConvertSettings};
use crate::lxc::driver::{self, LxcDriver, Started};
use crate::lxc::protocol::{InitExit, Reply as MonitorReply, Request, Requested};
use crate::lxc::spec::{ContainerSpec, RootFs};
use crate::security::userns::{self, IdRanges};
use crate::security::{self, Security, SecurityConfig, SecurityReport};
use crate::storage::{CommitReport, IdShift, ImageId, RootMount};

pub(super) type Reply<T> = oneshot::Sender<Result<T, CoreError>>;

/// A request to the manager task.
#[derive(Debug)]
pub enum Command {
    Define {
        xml: String,
        reply: Reply<(DomainSummary, Seq)>,
    },
    /// Define a transient domain and start it.
    Create {
        xml: String,
        reply: Reply<(Uuid, Seq)>,
    },
    Undefine {
        uuid: Uuid,
        flags: UndefineFlags,
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
    Shutdown {
        uuid: Uuid,
        grace: Duration,
        reply: Reply<Seq>,
    },
    Destroy {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    Reboot {
        uuid: Uuid,
        grace: Duration,
        reply: Reply<Seq>,
    },
    Suspend {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    Resume {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    OpenConsole {
        uuid: Uuid,
        index: u32,
        reply: Reply<OwnedFd>,
    },
    Enter {
        uuid: Uuid,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        noseclabel: bool,
        stdio: [OwnedFd; 3],
        reply: Reply<(i32, OwnedFd)>,
    },
    GetStats {
        uuid: Uuid,
        reply: Reply<DomainStats>,
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
    /// Start every autostart domain (once per host boot).
    Autostart,
    /// Copy a stopped or paused domain's writable layer into a new image.
    Commit {
        uuid: Uuid,
        name: String,
        reply: Reply<CommitReport>,
    },
    /// Remove an image that no domain uses (by definition or by layer).
    RemoveImage {
        reference: String,
        reply: Reply<Vec<ImageId>>,
    },
}

/// Reports from the manager's own tasks.
#[derive(Debug)]
enum Internal {
    Launched {
        uuid: Uuid,
        generation: u64,
        spec: Box<ContainerSpec>,
        result: Result<Started, CoreError>,
    },
    MonitorExited {
        uuid: Uuid,
        generation: u64,
    },
    Frozen {
        uuid: Uuid,
        generation: u64,
        frozen: bool,
        result: Result<(), CoreError>,
        reply: Reply<Seq>,
    },
    /// The writable layer of an image-rooted domain is ready (or not).
    Prepared {
        uuid: Uuid,
        generation: u64,
        def: Box<DomainDef>,
        result: Result<RootMount, CoreError>,
    },
    /// A writable layer removal has finished.
    LayerRemoved {
        domain: String,
    },
    /// A commit has finished.
    Committed {
        uuid: Uuid,
        result: Result<CommitReport, CoreError>,
        reply: Reply<CommitReport>,
    },
}

/// A running instance.
#[derive(Debug)]
struct Runtime {
    init_pid: i32,
    monitor_pid: i32,
    monitor_start_time: u64,
    started_at: u64,
    cgroup_path: PathBuf,
    memory_limit: Option<u64>,
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
    runtime: Option<Runtime>,
    /// A start in flight (only one at a time).
    starting: bool,
    /// Bumped at each start, so reports about an older instance are ignored.
    generation: u64,
    /// Replied when the running instance stops.
    stop_waiters: Vec<Reply<Seq>>,
    /// Replied when the domain runs again after a reboot.
    start_waiters: Vec<Reply<Seq>>,
    /// Start again once the instance stops (a requested reboot).
    restart_after_exit: bool,
    /// A commit of the writable layer in flight: start and resume wait.
    committing: bool,
    /// Keep the writable layer when the (transient) domain goes away: it
    /// was undefined with `UndefineFlags::KEEP_WRITABLE_LAYER` while active.
    keep_writable: bool,
}

impl Entry {
    fn new(def: DomainDef, persistent: bool, autostart: bool) -> Entry {
        Entry {
            def,
            live: None,
            persistent,
            autostart,
            state: State::Shutoff,
            reason: Reason::Unknown,
            runtime: None,
            starting: false,
            generation: 0,
            stop_waiters: Vec::new(),
            start_waiters: Vec::new(),
            restart_after_exit: false,
            committing: false,
            keep_writable: false,
        }
    }

    fn summary(&self, default_userns: UsernsMode) -> DomainSummary {
        let active = matches!(self.state, State::Running | State::Paused);
        let ids_def = if active { self.live_def() } else { &self.def };
        DomainSummary {
            uuid: self.def.uuid,
            name: self.def.name.to_string(),
            domain_type: self.def.domain_type,
            persistent: self.persistent,
            autostart: self.autostart,
            state: self.state,
            reason: self.reason,
            init_pid: self.runtime.as_ref().map(|r| r.init_pid),
            start_time: self.runtime.as_ref().map(|r| r.started_at),
            security_label: match self.state {
                State::Running | State::Paused => {
                    security::process_label(self.live_def()).map(str::to_owned)
                }
                _ => None,
            },
            user_namespace: if ids_def.idmap.is_some() {
                "idmap"
            } else {
                ids_def.userns.map_or(default_userns, |u| u.mode).as_str()
            },
            host_ids: ids_def.userns.and_then(|u| u.allocated).filter(|_| active),
        }
    }

    fn name(&self) -> &str {
        self.def.name.as_str()
    }

    /// The definition of the running instance.
    fn live_def(&self) -> &DomainDef {
        self.live.as_ref().unwrap_or(&self.def)
    }

    fn check(&self, operation: Operation) -> Result<State, CoreError> {
        if self.starting {
            return Err(CoreError::Busy {
                domain: self.name().to_owned(),
                operation: "start",
            });
        }
        if self.committing {
            // Nothing may run in the container while its layer is copied.
            return Err(CoreError::Busy {
                domain: self.name().to_owned(),
                operation: "commit",
            });
        }
        Ok(lifecycle::check(self.name(), self.state, operation)?)
    }
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub run_dir: PathBuf,
    pub monitor_exe: PathBuf,
    pub pids_max: Option<u64>,
    /// The cgroup partition of domains without `<resource><partition>`.
    pub default_partition: PathBuf,
    pub security: SecurityConfig,
    /// The image store, for domains whose root is an image.
    pub images: ImageStore,
    /// How domains without `<idmap>` or `<lxvirt:userns>` run.
    pub default_userns: UsernsMode,
}

/// The owner of all domain state. Runs as one task; see [`Manager::spawn`].
#[derive(Debug)]
pub struct Manager {
    store: Store,
    config: ManagerConfig,
    driver: LxcDriver,
    cgroups: Option<Arc<Cgroups>>,
    /// The security driver; only the manager task generates, reserves and
    /// releases labels.
    security: Security,
    /// The id blocks of user namespaces; only the manager task assigns,
    /// reserves and releases them.
    id_ranges: IdRanges,
    domains: HashMap<Uuid, Entry>,
    names: HashMap<String, Uuid>,
    blocked: HashMap<String, PathBuf>,
    events: mpsc::UnboundedSender<Event>,
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: Option<mpsc::UnboundedReceiver<Internal>>,
    /// Monitors found running at start-up, to watch once the task runs.
    recovered: Vec<(Uuid, OwnedFd)>,
    /// Domains whose writable layer is being removed: they cannot start
    /// until it is gone, or the start would reuse the layer going away.
    removing_layers: HashSet<String>,
    seq: Seq,
}

/// A cheap, cloneable way to talk to the manager task.
#[derive(Debug, Clone)]
pub struct ManagerHandle {
    pub(super) tx: mpsc::Sender<Command>,
}

/// Commands waiting for the manager; bounded so that a flood of clients
/// waits instead of growing memory without limit.
const COMMAND_QUEUE: usize = 256;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Manager {
    /// Builds the manager from what the store loaded and what runs. Problems
    /// in `loaded` are the caller's to report; their names stay blocked.
    pub fn new(
        store: Store,
        loaded: Loaded,
        config: ManagerConfig,
        id_ranges: IdRanges,
        events: mpsc::UnboundedSender<Event>,
    ) -> Manager {
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let driver = LxcDriver::new(config.run_dir.clone(), config.monitor_exe.clone());
        let cgroups = match Cgroups::detect() {
            Ok(c) => Some(Arc::new(c)),
            Err(error) => {
                tracing::warn!(error = %error, "no usable cgroup hierarchy: containers cannot start");
                None
            }
        };
        let security = Security::detect(&config.security);
        let mut manager = Manager {
            store,
            config,
            driver,
            cgroups,
            security,
            id_ranges,
            domains: HashMap::new(),
            names: HashMap::new(),
            blocked: loaded.blocked,
            events,
            internal,
            internal_rx: Some(internal_rx),
            recovered: Vec::new(),
            removing_layers: HashSet::new(),
            seq: 0,
        };
        for stored in loaded.domains {
            let entry = Entry::new(stored.def, true, stored.autostart);
            manager.insert(entry);
        }
        manager.recover();
        manager
    }

    /// What the security layer found on this host, for the capabilities.
    pub fn security_report(&self) -> &SecurityReport {
        self.security.report()
    }

    fn insert(&mut self, entry: Entry) {
        self.names.insert(entry.name().to_owned(), entry.def.uuid);
        self.domains.insert(entry.def.uuid, entry);
    }

    /// Finds the containers that ran before this daemon started: alive ones
    /// are running again, gone ones get their exit applied.
    fn recover(&mut self) {
        for path in LiveStatus::scan(&self.config.run_dir) {
            let status = match LiveStatus::load(&path) {
                Ok(status) => status,
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error_chain(&error), "ignoring a live status file");
                    continue;
                }
            };
            let live_def = match DomainDef::from_xml(&status.live_xml) {
                Ok(def) => def,
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error, "ignoring a live status file with an unreadable definition");
                    continue;
                }
            };
            if let Err(error) = self.security.reserve_running(&live_def) {
                // Two running containers share a level: they are not
                // separated from each other. Say so loudly; stopping one
                // of them is the fix.
                tracing::error!(domain = %status.name, error = %error_chain(&error), "cannot reserve the security label of a running container");
            }
            if let Some(Userns {
                allocated: Some((start, _)),
                ..
            }) = live_def.userns
                && let Err(error) =
                    self.id_ranges
                        .reserve(status.uuid, &status.name, start, status.persistent)
            {
                // As with labels: two containers share host ids, so they
                // are not separated from each other. Stopping one fixes it.
                tracing::error!(domain = %status.name, error = %error_chain(&error), "cannot reserve the host ids of a running container");
            }
            if !self.domains.contains_key(&status.uuid) {
                // A transient domain, or one undefined while it ran.
                self.insert(Entry::new(live_def.clone(), false, false));
            }
            let Some(entry) = self.domains.get_mut(&status.uuid) else {
                continue;
            };
            if entry.def != live_def {
                entry.live = Some(live_def);
            }
            entry.generation += 1;
            entry.runtime = Some(Runtime {
                init_pid: status.init_pid,
                monitor_pid: status.monitor_pid,
                monitor_start_time: status.monitor_start_time,
                started_at: status.started_at,
                cgroup_path: status.cgroup_path.clone(),
                memory_limit: status.memory_limit,
            });
            match driver::find_process(status.monitor_pid, status.monitor_start_time) {
                Some(pidfd) => {
                    entry.state = if status.paused {
                        State::Paused
                    } else {
                        State::Running
                    };
                    entry.reason = if status.paused {
                        Reason::User
                    } else {
                        Reason::Reconnected
                    };
                    tracing::info!(domain = %status.name, pid = status.init_pid, "reconnected to a running container");
                    self.recovered.push((status.uuid, pidfd));
                }
                None => {
                    // It ended while no daemon watched: apply its exit now.
                    entry.state = State::Running;
                    let uuid = status.uuid;
                    let generation = entry.generation;
                    let _ = self
                        .internal
                        .send(Internal::MonitorExited { uuid, generation });
                }
            }
        }
    }

    /// Summaries of every domain, for front ends that need the initial set.
    pub fn summaries(&self) -> Vec<DomainSummary> {
        let default_userns = self.config.default_userns;
        let mut list: Vec<_> = self
            .domains
            .values()
            .map(|e| e.summary(default_userns))
            .collect();
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
        let Some(mut internal_rx) = self.internal_rx.take() else {
            return;
        };
        self.driver.prepare_spare();
        for (uuid, pidfd) in std::mem::take(&mut self.recovered) {
            let generation = self.domains.get(&uuid).map_or(0, |e| e.generation);
            self.watch(uuid, generation, pidfd);
        }
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                Some(report) = internal_rx.recv() => self.handle_internal(report),
            }
        }
    }

    fn handle(&mut self, command: Command) {
        // A dropped reply channel means the client went away; nothing to do.
        match command {
            Command::Define { xml, reply } => {
                let _ = reply.send(self.define(&xml));
            }
            Command::Create { xml, reply } => self.create(&xml, reply),
            Command::Undefine { uuid, flags, reply } => {
                let _ = reply.send(self.undefine(uuid, flags));
            }
            Command::SetAutostart {
                uuid,
                enabled,
                reply,
            } => {
                let _ = reply.send(self.set_autostart(uuid, enabled));
            }
            Command::Start { uuid, reply } => {
                if let Err(error) = self.start(uuid, Some(reply)) {
                    // `start` replied already; the edge logs it once.
                    tracing::error!(error = %error_chain(&error), "start refused");
                }
            }
            Command::Shutdown { uuid, grace, reply } => self.stop(uuid, Some(grace), false, reply),
            Command::Destroy { uuid, reply } => self.stop(uuid, None, false, reply),
            Command::Reboot { uuid, grace, reply } => self.stop(uuid, Some(grace), true, reply),
            Command::Suspend { uuid, reply } => self.freeze(uuid, true, reply),
            Command::Resume { uuid, reply } => self.freeze(uuid, false, reply),
            Command::OpenConsole { uuid, index, reply } => self.open_console(uuid, index, reply),
            Command::Enter {
                uuid,
                argv,
                env,
                cwd,
                noseclabel,
                stdio,
                reply,
            } => self.enter(uuid, argv, env, cwd, noseclabel, stdio, reply),
            Command::GetStats { uuid, reply } => self.stats(uuid, reply),
            Command::Lookup { lookup, reply } => {
                let default_userns = self.config.default_userns;
                let _ = reply.send(self.lookup(&lookup).map(|e| e.summary(default_userns)));
            }
            Command::List { reply } => {
                let _ = reply.send(self.summaries());
            }
            Command::GetXml { uuid, flags, reply } => {
                let _ = reply.send(self.get_xml(uuid, flags));
            }
            Command::Autostart => self.autostart(),
            Command::Commit { uuid, name, reply } => self.commit(uuid, name, reply),
            Command::RemoveImage { reference, reply } => self.remove_image(reference, reply),
        }
    }

    fn handle_internal(&mut self, report: Internal) {
        match report {
            Internal::Launched {
                uuid,
                generation,
                spec,
                result,
            } => self.launched(uuid, generation, &spec, result),
            Internal::MonitorExited { uuid, generation } => self.exited(uuid, generation),
            Internal::Frozen {
                uuid,
                generation,
                frozen,
                result,
                reply,
            } => self.frozen(uuid, generation, frozen, result, reply),
            Internal::Prepared {
                uuid,
                generation,
                def,
                result,
            } => self.prepared(uuid, generation, *def, result),
            Internal::LayerRemoved { domain } => {
                self.removing_layers.remove(&domain);
            }
            Internal::Committed {
                uuid,
                result,
                reply,
            } => {
                if let Some(entry) = self.domains.get_mut(&uuid) {
                    entry.committing = false;
                }
                let _ = reply.send(result);
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

    fn publish_change(&mut self, uuid: Uuid, lifecycle: Option<Lifecycle>) -> Seq {
        match self.domains.get(&uuid) {
            Some(entry) => {
                let summary = entry.summary(self.config.default_userns);
                self.publish(EventKind::Changed { summary, lifecycle })
            }
            None => self.seq,
        }
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

    // ---- definitions ------------------------------------------------------

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
        let uuid = def.uuid;
        match existing {
            Some(uuid) => {
                let entry = self.entry_mut(uuid)?;
                if (entry.state.is_active() || entry.starting) && entry.live.is_none() {
                    // The running instance keeps the definition it started with.
                    entry.live = Some(std::mem::replace(&mut entry.def, def));
                } else {
                    entry.def = def;
                }
                entry.persistent = true;
                self.keep_ids(uuid, true);
            }
            None => self.insert(Entry::new(def, true, false)),
        }
        tracing::info!(domain = %name_for_log(&self.domains, uuid), updated, "defined");
        let seq = self.publish_change(uuid, Some(Lifecycle::Defined { updated }));
        let summary = self
            .lookup(&Lookup::Uuid(uuid))?
            .summary(self.config.default_userns);
        Ok((summary, seq))
    }

    fn create(&mut self, xml: &str, reply: Reply<(Uuid, Seq)>) {
        let def = match DomainDef::from_xml(xml) {
            Ok(def) => def,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let name = def.name.to_string();
        if let Some(&existing) = self.names.get(&name) {
            let _ = reply.send(Err(CoreError::NameTaken { name, existing }));
            return;
        }
        if let Some(other) = self.domains.get(&def.uuid) {
            let _ = reply.send(Err(CoreError::UuidTaken {
                uuid: def.uuid,
                other: other.name().to_owned(),
            }));
            return;
        }
        let uuid = def.uuid;
        self.insert(Entry::new(def, false, false));
        self.publish_change(uuid, Some(Lifecycle::Defined { updated: false }));
        // Answer once the start has finished, either way; a transient
        // domain that fails to start is forgotten again.
        let (start_reply, started) = oneshot::channel();
        if self.start(uuid, Some(start_reply)).is_err()
            && !self.domains.get(&uuid).is_some_and(|e| e.starting)
        {
            self.remove(uuid, Lifecycle::Stopped(Reason::Failed));
        }
        tokio::spawn(async move {
            let result = match started.await {
                Ok(result) => result.map(|seq| (uuid, seq)),
                Err(_) => Err(CoreError::ShuttingDown),
            };
            let _ = reply.send(result);
        });
    }

    fn undefine(&mut self, uuid: Uuid, flags: UndefineFlags) -> Result<Seq, CoreError> {
        if flags.0 & !UndefineFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        if !entry.persistent {
            return Err(CoreError::NotPersistent(name));
        }
        lifecycle::check(&name, entry.state, Operation::Undefine)?;
        if entry.committing {
            // The commit reads the writable layer this would remove.
            return Err(CoreError::Busy {
                domain: name,
                operation: "commit",
            });
        }
        self.store
            .remove(&name)
            .map_err(|source| CoreError::Store {
                name: name.clone(),
                source,
            })?;
        tracing::info!(domain = %name, "undefined");
        let entry = self.entry_mut(uuid)?;
        if entry.state.is_active() || entry.starting {
            // Transient now: its writable layer and ids go when it stops.
            entry.persistent = false;
            entry.autostart = false;
            entry.keep_writable = flags.keep_writable_layer();
            self.keep_ids(uuid, false);
            return Ok(self.publish_change(uuid, Some(Lifecycle::Undefined)));
        }
        entry.keep_writable = flags.keep_writable_layer();
        // Its monitor's log goes with the definition.
        let _ = std::fs::remove_file(self.driver.files(&name).log);
        Ok(self.remove(uuid, Lifecycle::Undefined))
    }

    /// How the instance about to start maps its ids, written into its live
    /// definition: `<idmap>` as given; else the domain's `<lxvirt:userns>`
    /// or the daemon's default, with the domain's block of host ids for
    /// mode='auto' (kept while a persistent domain is defined).
    fn resolve_userns(&mut self, uuid: Uuid, def: &mut DomainDef) -> Result<(), CoreError> {
        if def.domain_type != DomainType::Lxc || def.idmap.is_some() {
            return Ok(());
        }
        let mode = def.userns.map_or(self.config.default_userns, |u| u.mode);
        let allocated = match mode {
            UsernsMode::Host => None,
            UsernsMode::Auto => {
                let persistent = self.domains.get(&uuid).is_some_and(|e| e.persistent);
                let start = self.id_ranges.assign(uuid, def.name(), persistent)?;
                Some((start, userns::BLOCK))
            }
        };
        def.userns = Some(Userns { mode, allocated });
        Ok(())
    }

    /// Whether a domain's id block outlives its instance.
    fn keep_ids(&mut self, uuid: Uuid, persistent: bool) {
        if let Err(error) = self.id_ranges.set_persistent(&uuid, persistent) {
            tracing::warn!(domain = %name_for_log(&self.domains, uuid), error = %error_chain(&error), "cannot record its host ids");
        }
    }

    /// Forgets a domain; its writable layer goes too unless it was kept.
    fn remove(&mut self, uuid: Uuid, lifecycle: Lifecycle) -> Seq {
        if let Some(entry) = self.domains.remove(&uuid) {
            self.names.remove(entry.name());
            if let Err(error) = self.id_ranges.release(&uuid) {
                tracing::warn!(domain = %entry.name(), error = %error_chain(&error), "cannot record the release of its host ids");
            }
            if !entry.keep_writable {
                self.remove_writable_layer(entry.name());
            }
        }
        self.publish(EventKind::Removed { uuid, lifecycle })
    }

    /// Removes a domain's writable layer, if the store has one, off the
    /// manager task; the domain cannot start again until it is gone.
    fn remove_writable_layer(&mut self, domain: &str) {
        let Ok(store) = self.config.images.get() else {
            return;
        };
        let domain = domain.to_owned();
        self.removing_layers.insert(domain.clone());
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            match store.remove_writable(&domain) {
                Ok(true) => tracing::info!(domain = %domain, "removed the writable layer"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(domain = %domain, error = %error_chain(&error), "cannot remove the writable layer")
                }
            }
            let _ = internal.send(Internal::LayerRemoved { domain });
        });
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
        self.entry_mut(uuid)?.autostart = enabled;
        Ok(self.publish_change(uuid, None))
    }

    fn get_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        if flags.0 & !XmlFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let entry = self.lookup(&Lookup::Uuid(uuid))?;
        // While running, the live definition is shown; the persistent one
        // (perhaps updated since the start) with INACTIVE.
        if flags.inactive() {
            Ok(entry.def.to_xml())
        } else if entry.state.is_active() {
            Ok(entry.live_def().to_live_xml())
        } else {
            Ok(entry.def.to_xml())
        }
    }

    // ---- start ------------------------------------------------------------

    fn autostart(&mut self) {
        let marker = self.config.run_dir.join("autostarted");
        if marker.exists() {
            // Once per host boot (the run directory is a tmpfs): a daemon
            // restart must not start what the user stopped since.
            return;
        }
        let _ = std::fs::write(&marker, b"");
        let mut todo: Vec<(String, Uuid)> = self
            .domains
            .values()
            .filter(|e| e.autostart && e.state == State::Shutoff && !e.starting)
            .map(|e| (e.name().to_owned(), e.def.uuid))
            .collect();
        todo.sort();
        for (name, uuid) in todo {
            tracing::info!(domain = %name, "autostarting");
            if let Err(error) = self.start(uuid, None) {
                tracing::error!(domain = %name, error = %error_chain(&error), "autostart failed");
            }
        }
    }

    /// Begins a start; the reply (if any) is sent when it is done. An error
    /// is also sent to the reply before being returned.
    fn start(&mut self, uuid: Uuid, reply: Option<Reply<Seq>>) -> Result<(), CoreError> {
        let result = self.begin_start(uuid);
        match result {
            Ok(()) => {
                if let (Some(reply), Some(entry)) = (reply, self.domains.get_mut(&uuid)) {
                    entry.start_waiters.push(reply);
                }
                Ok(())
            }
            Err(error) => {
                let message = error_chain(&error);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
                Err(CoreError::Failed {
                    domain: self
                        .domains
                        .get(&uuid)
                        .map_or_else(|| uuid.to_string(), |e| e.name().to_owned()),
                    message,
                })
            }
        }
    }

    fn begin_start(&mut self, uuid: Uuid) -> Result<(), CoreError> {
        let have_cgroups = self.cgroups.is_some();
        let entry = self.entry_mut(uuid)?;
        entry.check(Operation::Start)?;
        let name = entry.name().to_owned();
        if entry.def.domain_type != DomainType::Lxc {
            return Err(CoreError::DriverUnavailable {
                domain: name,
                driver: "kvm",
                hint: "; this build of lxvirtd stores and lists KVM domains but cannot run them yet",
            });
        }
        if entry.def.devices.consoles.is_empty() {
            return Err(CoreError::Failed {
                domain: name,
                message: "a container needs a <console type='pty'/> in <devices>; add one".into(),
            });
        }
        // A start uses the persistent definition (the live copy goes); a
        // restart (reboot, on_reboot/on_crash='restart') the live one.
        let restarting = entry.restart_after_exit;
        let def = if restarting {
            entry.live_def().clone()
        } else {
            entry.def.clone()
        };
        if !have_cgroups {
            return Err(CoreError::Failed {
                domain: name,
                message: "this host has no usable cgroup hierarchy; mount cgroup v1 controllers or cgroup2 at /sys/fs/cgroup".into(),
            });
        }
        let Some(image) = def.root_image().map(str::to_owned) else {
            return self.launch(uuid, def, None);
        };
        // The root is an image: its writable layer is made (or found)
        // first, off this task; the launch continues in `prepared`.
        let store = self.config.images.get()?;
        if self.removing_layers.contains(&name) {
            return Err(CoreError::Busy {
                domain: name,
                operation: "removal of its old writable layer",
            });
        }
        let entry = self.entry_mut(uuid)?;
        entry.starting = true;
        entry.generation += 1;
        let generation = entry.generation;
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            let result = store
                .prepare(&image, &name)
                .map_err(|source| CoreError::DomainStorage {
                    domain: name,
                    action: format!(
                        "cannot use image '{image}' as its root; see 'lxvirt image list'"
                    ),
                    source: Box::new(source),
                });
            let _ = internal.send(Internal::Prepared {
                uuid,
                generation,
                def: Box::new(def),
                result,
            });
        });
        Ok(())
    }

    /// Continues an image-rooted start once its writable layer is ready.
    fn prepared(
        &mut self,
        uuid: Uuid,
        generation: u64,
        def: DomainDef,
        result: Result<RootMount, CoreError>,
    ) {
        if self
            .domains
            .get(&uuid)
            .is_none_or(|e| e.generation != generation)
        {
            return;
        }
        if let Err(error) = result.and_then(|root| self.launch(uuid, def, Some(root))) {
            self.start_failed(uuid, error);
        }
    }

    /// Converts `def` and launches the container; the result comes back as
    /// `Launched`. `image_root` is the prepared root of an image domain.
    fn launch(
        &mut self,
        uuid: Uuid,
        def: DomainDef,
        image_root: Option<RootMount>,
    ) -> Result<(), CoreError> {
        let running_inits: HashMap<String, i32> = self
            .domains
            .values()
            .filter_map(|e| {
                e.runtime
                    .as_ref()
                    .map(|r| (e.name().to_owned(), r.init_pid))
            })
            .collect();
        let settings = ConvertSettings {
            run_dir: self.config.run_dir.clone(),
            pids_max: self.config.pids_max,
            default_partition: self.config.default_partition.clone(),
        };
        // Fresh labels and ids for this instance.
        let mut def = def;
        def.clear_live_labels();
        self.resolve_userns(uuid, &mut def)?;
        let mut spec = convert::container_spec(
            &def,
            &settings,
            &|other| running_inits.get(other).copied(),
            image_root.as_ref(),
        )?;
        // Last, so that nothing after it can fail: the labels stay
        // reserved until the instance stops or its launch fails.
        let mut live = def;
        let prepared = self.security.prepare(&live)?;
        live.seclabel = Some(prepared.seclabel);
        spec.security = prepared.spec;
        let content_label = self
            .security
            .report()
            .host
            .as_ref()
            .map(|h| h.base.content.clone());
        let relabel = self
            .security
            .file_labeler()
            .map(|labeler| (relabel_jobs(&spec, content_label.as_deref()), labeler));
        let entry = self.entry_mut(uuid)?;
        // The running instance's definition, with its labels.
        entry.live = Some(live);
        if !entry.starting {
            // An image domain counted this start when it began preparing.
            entry.starting = true;
            entry.generation += 1;
        }
        let generation = entry.generation;
        let driver = self.driver.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let begin = std::time::Instant::now();
            let relabelled = match relabel {
                Some((jobs, labeler)) if !jobs.is_empty() => {
                    let domain = spec.name.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut count = 0;
                        for job in jobs {
                            // An image layer is labelled once; its
                            // directory's label, set last, says it is done.
                            let done = job.once.then(|| job.root.parent()).flatten();
                            if let Some(done) = done
                                && crate::storage::selinux_label(done).as_deref()
                                    == Some(job.label.as_str())
                            {
                                continue;
                            }
                            count += security::relabel::relabel_tree(
                                &domain,
                                &job.root,
                                &job.label,
                                &mut |p, l| labeler(p, l),
                            )?;
                            if let Some(done) = done {
                                labeler(done, &job.label).map_err(|source| {
                                    security::SecurityError::RelabelWrite {
                                        domain: domain.clone(),
                                        path: done.to_owned(),
                                        source,
                                    }
                                })?;
                            }
                        }
                        Ok(count)
                    })
                    .await
                    .unwrap_or_else(|join| {
                        Err(security::SecurityError::RelabelWrite {
                            domain: spec.name.clone(),
                            path: PathBuf::new(),
                            source: std::io::Error::other(join.to_string()),
                        })
                    })
                    .map(|count| {
                        tracing::debug!(domain = %spec.name, files = count, "relabelled the root directory");
                    })
                    .map_err(CoreError::Security)
                }
                _ => Ok(()),
            };
            let result = match relabelled {
                Ok(()) => driver.start(&spec).await.map_err(CoreError::Driver),
                Err(error) => Err(error),
            };
            tracing::debug!(domain = %spec.name, elapsed_us = begin.elapsed().as_micros() as u64, "monitor reported");
            let _ = internal.send(Internal::Launched {
                uuid,
                generation,
                spec: Box::new(spec),
                result,
            });
        });
        Ok(())
    }

    fn launched(
        &mut self,
        uuid: Uuid,
        generation: u64,
        spec: &ContainerSpec,
        result: Result<Started, CoreError>,
    ) {
        let run_dir = self.config.run_dir.clone();
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        match result {
            Ok(started) => {
                entry.starting = false;
                let waiters = std::mem::take(&mut entry.start_waiters);
                let rebooted = std::mem::take(&mut entry.restart_after_exit);
                let runtime = Runtime {
                    init_pid: started.init_pid,
                    monitor_pid: started.monitor_pid,
                    monitor_start_time: started.monitor_start_time,
                    started_at: now_secs(),
                    cgroup_path: spec.cgroup.path.clone(),
                    memory_limit: spec.cgroup.memory_limit,
                };
                let status = LiveStatus {
                    version: super::live::LIVE_STATUS_VERSION,
                    uuid,
                    name: entry.name().to_owned(),
                    persistent: entry.persistent,
                    // With the labels, which a restarted daemon reserves again.
                    live_xml: entry.live_def().to_live_xml(),
                    init_pid: runtime.init_pid,
                    monitor_pid: runtime.monitor_pid,
                    monitor_start_time: runtime.monitor_start_time,
                    started_at: runtime.started_at,
                    cgroup_path: runtime.cgroup_path.clone(),
                    memory_limit: runtime.memory_limit,
                    paused: false,
                    rebooted,
                };
                if let Err(error) = status.save(&run_dir) {
                    // The container runs; only a daemon restart would lose it.
                    tracing::warn!(domain = %entry.name(), error = %error_chain(&error), "cannot record the live status");
                }
                entry.runtime = Some(runtime);
                entry.state = State::Running;
                entry.reason = if rebooted {
                    Reason::Rebooted
                } else {
                    Reason::Booted
                };
                tracing::info!(domain = %entry.name(), pid = started.init_pid, "started");
                self.watch(uuid, generation, started.monitor_pidfd);
                let lifecycle = if rebooted {
                    Lifecycle::Rebooted
                } else {
                    Lifecycle::Started
                };
                let seq = self.publish_change(uuid, Some(lifecycle));
                for waiter in waiters {
                    let _ = waiter.send(Ok(seq));
                }
            }
            Err(error) => self.start_failed(uuid, error),
        }
    }

    /// A start in flight failed: the domain is shut off again (a transient
    /// one goes away) and everyone waiting for the start gets the error.
    fn start_failed(&mut self, uuid: Uuid, error: CoreError) {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        entry.starting = false;
        entry.restart_after_exit = false;
        let waiters = std::mem::take(&mut entry.start_waiters);
        entry.state = State::Shutoff;
        entry.reason = Reason::Failed;
        let name = entry.name().to_owned();
        tracing::error!(domain = %name, error = %error_chain(&error), "start failed");
        let transient = !entry.persistent;
        entry.live = None;
        self.security.release(&name);
        self.driver.remove_files(&name);
        if transient {
            self.remove(uuid, Lifecycle::Stopped(Reason::Failed));
        } else {
            self.publish_change(uuid, Some(Lifecycle::Stopped(Reason::Failed)));
        }
        let message = error_chain(&error);
        let mut waiters = waiters.into_iter();
        if let Some(first) = waiters.next() {
            let _ = first.send(Err(error));
        }
        for waiter in waiters {
            let _ = waiter.send(Err(CoreError::Failed {
                domain: name.clone(),
                message: message.clone(),
            }));
        }
    }

    /// Watches a monitor; its exit comes back as `MonitorExited`.
    fn watch(&self, uuid: Uuid, generation: u64, pidfd: OwnedFd) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            driver::wait_exit(pidfd).await;
            let _ = internal.send(Internal::MonitorExited { uuid, generation });
        });
    }

    // ---- stop -------------------------------------------------------------

    /// Shutdown (grace given), destroy (no grace), or reboot.
    fn stop(&mut self, uuid: Uuid, grace: Option<Duration>, reboot: bool, reply: Reply<Seq>) {
        let operation = match (grace, reboot) {
            (_, true) => Operation::Reboot,
            (Some(_), false) => Operation::Shutdown,
            (None, false) => Operation::Destroy,
        };
        let entry = match self
            .entry_mut(uuid)
            .and_then(|e| e.check(operation).map(|_| e))
        {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let name = entry.name().to_owned();
        if entry.state == State::Crashed {
            // Preserved remains: the processes are gone already.
            entry.state = State::Shutoff;
            entry.reason = Reason::Destroyed;
            entry.runtime = None;
            self.driver.remove_files(&name);
            let seq = self.finish_stopped(uuid, Reason::Destroyed);
            let _ = reply.send(Ok(seq));
            return;
        }
        if reboot {
            entry.restart_after_exit = true;
            entry.start_waiters.push(reply);
        } else {
            entry.stop_waiters.push(reply);
        }
        let init_pid = entry.runtime.as_ref().map(|r| r.init_pid);
        let request = match grace {
            Some(grace) => Request::Shutdown {
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            },
            None => Request::Destroy,
        };
        let driver = self.driver.clone();
        tokio::spawn(async move {
            if let Err(error) = driver.request(&name, request, Vec::new()).await {
                // The monitor is unreachable: kill init directly; the exit
                // watcher finishes the job either way.
                tracing::warn!(domain = %name, error = %error_chain(&error), "monitor unreachable, killing init");
                if let Some(pid) = init_pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        });
    }

    fn exited(&mut self, uuid: Uuid, generation: u64) {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        if entry.generation != generation || entry.runtime.is_none() {
            return;
        }
        let name = entry.name().to_owned();
        let record = self.driver.take_exit_record(&name);
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        let def = entry.live_def();
        let (reason, action) = match &record {
            None => (Reason::Crashed, def.on_crash),
            Some(record) => match (record.requested, record.init) {
                (Some(Requested::Destroy), _) => (Reason::Destroyed, LifecycleAction::Destroy),
                (Some(Requested::Shutdown), _) => (Reason::Shutdown, LifecycleAction::Destroy),
                // reboot(2) in a PID namespace ends its init with SIGHUP
                // (restart) or SIGINT (halt, power off).
                (None, InitExit::Signaled { signal }) if signal == libc::SIGHUP => {
                    (Reason::Shutdown, def.on_reboot)
                }
                (None, InitExit::Signaled { signal }) if signal == libc::SIGINT => {
                    (Reason::Shutdown, def.on_poweroff)
                }
                (None, InitExit::Exited { .. }) => (Reason::Shutdown, def.on_poweroff),
                (None, InitExit::Signaled { .. }) => (Reason::Crashed, def.on_crash),
            },
        };
        if let Some(record) = &record {
            for problem in &record.cleanup_errors {
                tracing::warn!(domain = %name, problem = %problem, "cleanup after the container left something");
            }
        } else {
            tracing::warn!(domain = %name, "the monitor vanished without an exit record");
            self.cleanup_cgroup(uuid);
        }
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        let restart = entry.restart_after_exit
            || matches!(
                action,
                LifecycleAction::Restart
                    | LifecycleAction::RenameRestart
                    | LifecycleAction::CoredumpRestart
            );
        tracing::info!(domain = %name, reason = %reason, restart, "stopped");
        entry.runtime = None;
        // The pair is free for the next start; files keep their labels.
        self.security.release(&name);
        self.driver.remove_files(&name);
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        if action == LifecycleAction::Preserve && !entry.restart_after_exit {
            entry.state = State::Crashed;
            entry.reason = Reason::Crashed;
            let seq = self.publish_change(uuid, Some(Lifecycle::Crashed));
            self.reply_stop_waiters(uuid, seq);
            return;
        }
        if restart {
            entry.state = State::Shutoff;
            entry.reason = reason;
            entry.restart_after_exit = true;
            let seq = self.publish_change(uuid, Some(Lifecycle::Stopped(reason)));
            self.reply_stop_waiters(uuid, seq);
            if let Err(error) = self.start(uuid, None) {
                tracing::error!(domain = %name, error = %error_chain(&error), "restart failed");
                let waiters = self
                    .domains
                    .get_mut(&uuid)
                    .map(|e| std::mem::take(&mut e.start_waiters))
                    .unwrap_or_default();
                for waiter in waiters {
                    let _ = waiter.send(Err(CoreError::Failed {
                        domain: name.clone(),
                        message: error_chain(&error),
                    }));
                }
            }
            return;
        }
        self.finish_stopped(uuid, reason);
    }

    /// Marks a domain shut off (removing a transient one) and answers
    /// everyone waiting for that.
    fn finish_stopped(&mut self, uuid: Uuid, reason: Reason) -> Seq {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return self.seq;
        };
        entry.state = State::Shutoff;
        entry.reason = reason;
        entry.live = None;
        let waiters: Vec<_> = std::mem::take(&mut entry.stop_waiters)
            .into_iter()
            .chain(std::mem::take(&mut entry.start_waiters))
            .collect();
        let seq = if entry.persistent {
            self.publish_change(uuid, Some(Lifecycle::Stopped(reason)))
        } else {
            self.remove(uuid, Lifecycle::Stopped(reason))
        };
        for waiter in waiters {
            let _ = waiter.send(Ok(seq));
        }
        seq
    }

    fn reply_stop_waiters(&mut self, uuid: Uuid, seq: Seq) {
        if let Some(entry) = self.domains.get_mut(&uuid) {
            for waiter in std::mem::take(&mut entry.stop_waiters) {
                let _ = waiter.send(Ok(seq));
            }
        }
    }

    /// Removes a container's cgroup when its monitor could not.
    fn cleanup_cgroup(&self, uuid: Uuid) {
        let (Some(cgroups), Some(entry)) = (&self.cgroups, self.domains.get(&uuid)) else {
            return;
        };
        let Some(runtime) = &entry.runtime else {
            return;
        };
        if let Ok(cgroup) = cgroups.open(&runtime.cgroup_path) {
            let _ = cgroup.kill_all();
            if let Err(error) = cgroup.remove() {
                tracing::warn!(domain = %entry.name(), error = %error_chain(&error), "cannot remove the cgroup of a vanished container");
            }
        }
    }

    // ---- pause ------------------------------------------------------------

    fn freeze(&mut self, uuid: Uuid, freeze: bool, reply: Reply<Seq>) {
        let operation = if freeze {
            Operation::Suspend
        } else {
            Operation::Resume
        };
        let cgroups = self.cgroups.clone();
        let entry = match self
            .entry_mut(uuid)
            .and_then(|e| e.check(operation).map(|_| e))
        {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let name = entry.name().to_owned();
        let generation = entry.generation;
        let (Some(cgroups), Some(runtime)) = (cgroups, entry.runtime.as_ref()) else {
            let _ = reply.send(Err(CoreError::Failed {
                domain: name,
                message: "no cgroup to freeze".into(),
            }));
            return;
        };
        let path = runtime.cgroup_path.clone();
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            let result = cgroups
                .open(&path)
                .and_then(|cgroup| {
                    if freeze {
                        cgroup.freeze()
                    } else {
                        cgroup.thaw()
                    }
                })
                .map_err(|e| CoreError::Failed {
                    domain: name,
                    message: error_chain(&e),
                });
            let _ = internal.send(Internal::Frozen {
                uuid,
                generation,
                frozen: freeze,
                result,
                reply,
            });
        });
    }

    fn frozen(
        &mut self,
        uuid: Uuid,
        generation: u64,
        frozen: bool,
        result: Result<(), CoreError>,
        reply: Reply<Seq>,
    ) {
        let run_dir = self.config.run_dir.clone();
        let Some(entry) = self.domains.get_mut(&uuid) else {
            let _ = reply.send(Err(CoreError::NoSuchDomain(Lookup::Uuid(uuid))));
            return;
        };
        if let Err(error) = result {
            let _ = reply.send(Err(error));
            return;
        }
        if entry.generation != generation || entry.runtime.is_none() {
            let _ = reply.send(Err(CoreError::Failed {
                domain: entry.name().to_owned(),
                message: "the container stopped meanwhile".into(),
            }));
            return;
        }
        let (state, reason, lifecycle) = if frozen {
            (State::Paused, Reason::User, Lifecycle::Suspended)
        } else {
            (State::Running, Reason::Unpaused, Lifecycle::Resumed)
        };
        entry.state = state;
        entry.reason = reason;
        tracing::info!(domain = %entry.name(), state = %state, "{}", if frozen { "suspended" } else { "resumed" });
        let path = LiveStatus::path(&run_dir, entry.name());
        if let Ok(mut status) = LiveStatus::load(&path) {
            status.paused = frozen;
            let _ = status.save(&run_dir);
        }
        let seq = self.publish_change(uuid, Some(lifecycle));
        let _ = reply.send(Ok(seq));
    }

    // ---- console, enter, stats ---------------------------------------------

    /// Sends `request` to the monitor of a domain whose state allows
    /// `operation`; `answer` turns the monitor's reply into the result.
    fn ask_monitor<T: Send + 'static>(
        &mut self,
        uuid: Uuid,
        operation: Operation,
        request: Request,
        fds: Vec<OwnedFd>,
        reply: Reply<T>,
        answer: impl FnOnce(String, MonitorReply, Vec<OwnedFd>) -> Result<T, CoreError> + Send + 'static,
    ) {
        let name = match self
            .entry_mut(uuid)
            .and_then(|e| e.check(operation).map(|_| e.name().to_owned()))
        {
            Ok(name) => name,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let driver = self.driver.clone();
        tokio::spawn(async move {
            let result = driver
                .request(&name, request, fds)
                .await
                .map_err(CoreError::Driver)
                .and_then(|(monitor_reply, fds)| answer(name, monitor_reply, fds));
            let _ = reply.send(result);
        });
    }

    fn open_console(&mut self, uuid: Uuid, index: u32, reply: Reply<OwnedFd>) {
        let request = Request::Console { index };
        self.ask_monitor(
            uuid,
            Operation::OpenConsole,
            request,
            Vec::new(),
            reply,
            |name, _, mut fds| {
                fds.pop().ok_or_else(|| CoreError::Failed {
                    domain: name,
                    message: "the monitor sent no console descriptor".into(),
                })
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        uuid: Uuid,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        noseclabel: bool,
        stdio: [OwnedFd; 3],
        reply: Reply<(i32, OwnedFd)>,
    ) {
        let request = Request::Enter {
            argv,
            env,
            cwd,
            noseclabel,
        };
        self.ask_monitor(
            uuid,
            Operation::Enter,
            request,
            stdio.into(),
            reply,
            |name, answer, mut fds| match (answer, fds.pop()) {
                (MonitorReply::Entered { pid }, Some(exit)) => Ok((pid, exit)),
                _ => Err(CoreError::Failed {
                    domain: name,
                    message: "the monitor gave no exit channel".into(),
                }),
            },
        );
    }

    // ---- images -------------------------------------------------------------

    /// Commits a shut off or paused domain's writable layer as image
    /// `name`. The copy runs off this task; until it is done the domain
    /// cannot start, resume or be undefined (`committing`).
    fn commit(&mut self, uuid: Uuid, name: String, reply: Reply<CommitReport>) {
        let store = match self.config.images.get() {
            Ok(store) => store,
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                return;
            }
        };
        let entry = match self
            .entry_mut(uuid)
            .and_then(|e| e.check(Operation::Commit).map(|_| e))
        {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        entry.committing = true;
        let domain = entry.name().to_owned();
        // The host ids its writable layer holds files in: those of the
        // paused instance, or the block a stopped domain keeps.
        let shift = entry
            .live
            .as_ref()
            .and_then(|live| live.userns)
            .and_then(|u| u.allocated)
            .or_else(|| {
                self.id_ranges
                    .assigned(&uuid)
                    .map(|base| (base, userns::BLOCK))
            })
            .map(|(base, count)| IdShift { base, count });
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            let result = store
                .commit_from(&domain, &name, shift, &mut |_| {})
                .map_err(|source| CoreError::DomainStorage {
                    action: format!("cannot commit its writable layer as image '{name}'"),
                    domain: domain.clone(),
                    source: Box::new(source),
                });
            match &result {
                Ok(report) => {
                    tracing::info!(domain = %domain, image = %report.id, name = %name, bytes = report.size, seconds = report.seconds, "committed")
                }
                Err(error) => tracing::error!(error = %error_chain(error), "commit failed"),
            }
            let _ = internal.send(Internal::Committed {
                uuid,
                result,
                reply,
            });
        });
    }

    /// Removes an image, refused while a domain uses it: with a writable
    /// layer on it (the store knows those) or naming it as its root in a
    /// definition (this task knows those).
    fn remove_image(&mut self, reference: String, reply: Reply<Vec<ImageId>>) {
        let store = match self.config.images.get() {
            Ok(store) => store,
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                return;
            }
        };
        let mut users: Vec<(String, String)> = Vec::new();
        for entry in self.domains.values() {
            for def in [Some(&entry.def), entry.live.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Some(image) = def.root_image() {
                    users.push((entry.name().to_owned(), image.to_owned()));
                }
            }
        }
        tokio::task::spawn_blocking(move || {
            let result = store.resolve(&reference).and_then(|id| {
                let mut also: Vec<String> = users
                    .into_iter()
                    .filter(|(_, image)| store.resolve(image).is_ok_and(|i| i == id))
                    .map(|(domain, _)| domain)
                    .collect();
                also.sort();
                also.dedup();
                store.remove(id.as_str(), &also)
            });
            if let Ok(removed) = &result {
                tracing::info!(image = %reference, removed = removed.len(), "removed an image");
            }
            let _ = reply.send(result.map_err(CoreError::from));
        });
    }

    fn stats(&mut self, uuid: Uuid, reply: Reply<DomainStats>) {
        let cgroups = self.cgroups.clone();
        let entry = match self.entry_mut(uuid) {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let (Some(cgroups), Some(runtime)) = (cgroups, entry.runtime.as_ref()) else {
            // Not running: no figures.
            let _ = reply.send(Ok(DomainStats::default()));
            return;
        };
        let path = runtime.cgroup_path.clone();
        let memory_limit = runtime.memory_limit.or(Some(entry.live_def().memory));
        tokio::task::spawn_blocking(move || {
            let stats = cgroups.open(&path).map(|c| c.stats()).ok();
            let _ = reply.send(Ok(DomainStats {
                memory_bytes: stats.as_ref().and_then(|s| s.memory_bytes),
                memory_limit,
                cpu_time_ns: stats.as_ref().and_then(|s| s.cpu_time_ns),
                pids: stats.as_ref().and_then(|s| s.pids),
            }));
        });
    }
}

/// A tree to give one label before the container starts.
#[derive(Debug)]
struct RelabelJob {
    root: PathBuf,
    label: String,
    /// Label it once: an image layer never changes, so when the directory
    /// holding it has the label (set after the tree) it is skipped.
    once: bool,
}

/// What to relabel before a start: a root directory of the container's
/// own (dynamic labels, or relabel='yes') gets its image label; an image
/// root's layers get the shared read-only content label once, and its
/// writable layer the container's image label at every start (overlayfs
/// checks the real files too, and the writable layer is the container's
/// own, its level new with each dynamic label).
fn relabel_jobs(spec: &ContainerSpec, content_label: Option<&str>) -> Vec<RelabelJob> {
    let Some(labels) = &spec.security else {
        return Vec::new();
    };
    let own = |root: &PathBuf| RelabelJob {
        root: root.clone(),
        label: labels.image_label.clone(),
        once: false,
    };
    match &spec.root {
        RootFs::Dir { path, .. } if labels.relabel_root => vec![own(path)],
        RootFs::Overlay {
            lowerdir,
            upperdir,
            workdir,
        } => {
            let mut jobs: Vec<RelabelJob> = content_label
                .map(|content| {
                    lowerdir
                        .iter()
                        .map(|layer| RelabelJob {
                            root: layer.clone(),
                            label: content.to_owned(),
                            once: true,
                        })
                        .collect()
                })
                .unwrap_or_default();
            jobs.push(own(upperdir));
            jobs.push(own(workdir));
            jobs
        }
        _ => Vec::new(),
    }
}

fn name_for_log(domains: &HashMap<Uuid, Entry>, uuid: Uuid) -> String {
    domains
        .get(&uuid)
        .map_or_else(|| uuid.to_string(), |e| e.name().to_owned())
}

/// Whether a document names its uuid (the parser generates one otherwise).
fn has_explicit_uuid(xml: &str) -> bool {
    crate::domain::xml::parse_str(xml)
        .map(|root| root.element("uuid").is_some())
        .unwrap_or(false)
}

/// An error and its causes on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
