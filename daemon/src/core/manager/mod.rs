//! The manager task: the single owner of every domain's and network's
//! state.
//!
//! Commands arrive on a channel and are applied one at a time. Work that
//! waits on an instance (a driver's start, a shutdown, a freeze) runs in a
//! spawned task that reports back on an internal channel, so the manager
//! never blocks on one domain while others wait. Instances are run by the
//! drivers it is given ([`crate::driver::Driver`], one per domain type);
//! every change of a domain's status goes through the lifecycle table.
//!
//! This file holds the task itself (commands in, events out, recovery of
//! running instances at start-up); the operations are split by concern,
//! each an `impl Manager` block of its own: `define` (definitions, XML,
//! autostart, id blocks), `start`, `stop`, `running` (requests to a
//! running instance through its driver), `image_ops` (commit, image
//! removal), `networks` (network definitions); `entry` is a domain as the
//! manager holds it; `identity` what domains and networks share (lookup,
//! the name and uuid checks of a define); `tests` drive it through a test
//! driver, without root.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::images::ImageStore;
use super::lifecycle::{Reason, Report, State};
use super::live::LiveStatus;
use super::store::{Loaded, Store};
use super::tenants::Tenants;
use super::types::{
    AddressSource, CoreError, DomainStats, DomainSummary, Event, EventKind, InterfaceAddresses,
    Lifecycle, Lookup, NetworkSummary, Seq, UndefineFlags, XmlFlags,
};
use crate::domain::{DomainDef, NetworkDef, Userns, UsernsMode};
use crate::driver::{BoxFuture, Driver, Drivers, Runtime, ShutdownMode, Started};
use crate::error_chain::error_chain;
use crate::net::dnsmasq::Lease;
use crate::net::virtual_network::{NetworkDriver, NetworkError, NetworkRuntime};
use crate::security::userns::IdRanges;
use crate::security::{Security, SecurityReport};
use crate::storage::{CommitReport, ImageId, RootMount};

mod define;
mod devices;
mod entry;
mod identity;
mod image_ops;
mod networks;
mod plan;
mod running;
mod start;
mod stop;
#[cfg(test)]
mod tests;
mod tuning;

pub use devices::Change as DeviceChange;
use entry::Entry;
use identity::Index;
use networks::Networks;
pub use plan::Refusal;
use stop::Stop;
pub use tuning::{BlkioField, BlkioParams, MemoryParams, NumaParams, SchedulerParams, Tuning};

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
        mode: ShutdownMode,
        reply: Reply<Seq>,
    },
    Destroy {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    Reboot {
        uuid: Uuid,
        grace: Duration,
        mode: ShutdownMode,
        reply: Reply<Seq>,
    },
    Reset {
        uuid: Uuid,
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
        stdio: Option<[OwnedFd; 3]>,
        reply: Reply<crate::core::types::Entered>,
    },
    SendSignal {
        uuid: Uuid,
        pid: i64,
        signal: i32,
        reply: Reply<()>,
    },
    Tune {
        uuid: Uuid,
        tuning: Tuning,
        flags: crate::core::types::AffectFlags,
        reply: Reply<Seq>,
    },
    GetStats {
        uuid: Uuid,
        reply: Reply<DomainStats>,
    },
    InterfaceAddresses {
        uuid: Uuid,
        source: AddressSource,
        reply: Reply<Vec<InterfaceAddresses>>,
    },
    InterfaceStats {
        uuid: Uuid,
        device: String,
        reply: Reply<crate::driver::InterfaceCounters>,
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
    NetworkDefine {
        xml: String,
        reply: Reply<(NetworkSummary, Seq)>,
    },
    NetworkUndefine {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    NetworkSetAutostart {
        uuid: Uuid,
        enabled: bool,
        reply: Reply<Seq>,
    },
    NetworkLookup {
        lookup: Lookup,
        reply: Reply<NetworkSummary>,
    },
    NetworkList {
        reply: oneshot::Sender<Vec<NetworkSummary>>,
    },
    NetworkGetXml {
        uuid: Uuid,
        flags: XmlFlags,
        reply: Reply<String>,
    },
    /// Attach (or detach) a device: live, config or both.
    ChangeDevice {
        uuid: Uuid,
        change: devices::Change,
        xml: String,
        flags: crate::core::types::AffectFlags,
        reply: Reply<Seq>,
    },
    NetworkStart {
        uuid: Uuid,
        reply: Reply<Seq>,
    },
    /// Define a transient network and start it.
    NetworkCreate {
        xml: String,
        reply: Reply<(Uuid, Seq)>,
    },
    NetworkDestroy {
        uuid: Uuid,
        force: bool,
        reply: Reply<Seq>,
    },
    NetworkLeases {
        uuid: Uuid,
        reply: Reply<Vec<Lease>>,
    },
    /// Where the domain's console output is kept.
    ConsoleLog {
        uuid: Uuid,
        reply: Reply<crate::core::logs::LogSource>,
    },
    /// What an `apply` of these documents would change.
    Plan {
        sources: Vec<crate::core::apply::Source>,
        options: crate::core::apply::ApplyOptions,
        reply: Reply<Vec<crate::core::apply::Step>>,
    },
}

/// Reports from the manager's own tasks.
#[derive(Debug)]
enum Internal {
    Launched {
        uuid: Uuid,
        generation: u64,
        result: Result<Started, CoreError>,
    },
    /// A start's new id block could not be recorded: its hold goes (the
    /// start fails with the reason).
    BlockUnrecorded { uuid: Uuid },
    /// The instance of that generation is gone.
    Exited { uuid: Uuid, generation: u64 },
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
    LayerRemoved { domain: String },
    /// A commit has finished.
    Committed {
        uuid: Uuid,
        result: Result<CommitReport, CoreError>,
        reply: Reply<CommitReport>,
    },
    /// A network's start or takeover has finished.
    NetworkStarted {
        uuid: Uuid,
        live: Box<NetworkDef>,
        result: Result<NetworkRuntime, NetworkError>,
        reply: Option<Reply<Seq>>,
    },
    NetworkStopped {
        uuid: Uuid,
        problems: Vec<NetworkError>,
        reply: Reply<Seq>,
    },
    /// The autostart networks are up (or failed): the domains' turn.
    AutostartDomains,
    /// A live device change has finished.
    DeviceChanged(Box<devices::LiveChange>),
    /// A live tuning has finished.
    Tuned(Box<tuning::Tuned>),
    /// The driver has reset an instance in place (or failed to).
    Reset {
        uuid: Uuid,
        generation: u64,
        result: Result<(), CoreError>,
        reply: Reply<Seq>,
    },
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Live status files and the autostart marker (`/run/lxvirt`).
    pub run_dir: PathBuf,
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
    /// The drivers, by domain type: everything that runs an instance.
    drivers: Drivers,
    /// The security driver; only the manager task generates, reserves and
    /// releases labels.
    security: Security,
    /// The id blocks of user namespaces; only the manager task assigns,
    /// reserves and releases them.
    id_ranges: IdRanges,
    /// Boxed: a table of 6,000 slots holds pointers, not 4 KiB entries
    /// (and its growth copies pointers).
    domains: HashMap<Uuid, Box<Entry>>,
    names: HashMap<String, Uuid>,
    blocked: HashMap<String, PathBuf>,
    /// Every network definition, with its own store.
    networks: Networks,
    /// What starts and stops networks on the host.
    network_driver: Arc<dyn NetworkDriver>,
    /// Active networks' status files (`RUN/network`).
    network_dir: PathBuf,
    /// Networks found active at start-up, to take over once the task runs.
    recovered_networks: Vec<(Uuid, NetworkDef, NetworkRuntime)>,
    events: mpsc::UnboundedSender<Event>,
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: Option<mpsc::UnboundedReceiver<Internal>>,
    /// Instances found running at start-up, to watch once the task runs.
    recovered: Vec<Recovered>,
    /// Domains whose writable layer is being removed: they cannot start
    /// until it is gone, or the start would reuse the layer going away.
    removing_layers: HashSet<String>,
    /// Running containers by pid namespace, shared with the callers' check.
    tenants: Tenants,
    seq: Seq,
    /// `seq`, for the handles: a refused command's caller waits until the
    /// events published before the refusal are out.
    last_seq: Arc<AtomicU64>,
}

/// An instance found running at start-up, with its exit future.
struct Recovered(Uuid, BoxFuture<()>);

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Recovered")
            .field(&self.0)
            .finish_non_exhaustive()
    }
}

/// A cheap, cloneable way to talk to the manager task.
#[derive(Debug, Clone)]
pub struct ManagerHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) last_seq: Arc<AtomicU64>,
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
    /// Builds the manager from what the stores loaded and what runs, with
    /// the drivers and the security layer the caller made. Problems in
    /// `loaded` and `networks` are the caller's to report; their names
    /// stay blocked.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        loaded: Loaded,
        networks: (Store<NetworkDef>, Loaded<NetworkDef>),
        network_driver: Arc<dyn NetworkDriver>,
        config: ManagerConfig,
        drivers: Drivers,
        security: Security,
        id_ranges: IdRanges,
        events: mpsc::UnboundedSender<Event>,
    ) -> Manager {
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let network_dir = crate::net::virtual_network::run_dir(&config.run_dir);
        let mut manager = Manager {
            store,
            config,
            drivers,
            security,
            id_ranges,
            domains: HashMap::new(),
            names: HashMap::new(),
            blocked: loaded.blocked,
            networks: Networks::new(networks.0, networks.1),
            network_driver,
            network_dir,
            recovered_networks: Vec::new(),
            events,
            internal,
            internal_rx: Some(internal_rx),
            recovered: Vec::new(),
            removing_layers: HashSet::new(),
            tenants: Tenants::default(),
            seq: 0,
            last_seq: Arc::new(AtomicU64::new(0)),
        };
        for stored in loaded.definitions {
            let entry = Entry::new(stored.def, true, stored.autostart);
            manager.insert(entry);
        }
        manager.recovered_networks = manager.recover_networks();
        manager.recover();
        manager.release_orphaned_ids();
        manager
    }

    /// Gives back the id blocks of domains that are gone, neither defined
    /// nor running: a daemon killed between removing a definition and
    /// recording the release left them. A block whose domain's definition
    /// could not be read stays (its files are owned by those ids).
    fn release_orphaned_ids(&mut self) {
        for (uuid, name) in self.id_ranges.holders() {
            if self.domains.contains_key(&uuid) || self.blocked.contains_key(&name) {
                continue;
            }
            tracing::info!(domain = %name, %uuid, "releasing the host ids of a domain that is gone");
            if let Err(error) = self.id_ranges.release(&uuid) {
                tracing::warn!(domain = %name, error = %error_chain(&error), "cannot record the release of its host ids");
            }
        }
    }

    /// The running containers by pid namespace, kept current by the task:
    /// for the D-Bus adapter to tell callers inside them.
    pub fn tenants(&self) -> Tenants {
        self.tenants.clone()
    }

    /// What the security layer found on this host, for the capabilities.
    pub fn security_report(&self) -> &SecurityReport {
        self.security.report()
    }

    fn insert(&mut self, entry: Entry) {
        self.names.insert(entry.name().to_owned(), entry.def.uuid);
        self.domains.insert(entry.def.uuid, Box::new(entry));
    }

    /// Finds the containers that ran before this daemon started: alive ones
    /// are running again, gone ones get their exit applied.
    fn recover(&mut self) {
        let mut recorded = HashSet::new();
        // Read and parsed on every CPU (thousands of them after a daemon
        // restart), then taken in order.
        let read = crate::core::parallel::map(LiveStatus::scan(&self.config.run_dir), |path| {
            let status = LiveStatus::load(&path);
            let live_def = status
                .as_ref()
                .ok()
                .map(|status| DomainDef::from_xml(&status.live_xml));
            (path, status, live_def)
        });
        for (path, status, live_def) in read {
            let status = match status {
                Ok(status) => status,
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error_chain(&error), "ignoring a live status file");
                    // Unreadable is not unrecorded: what it records is not
                    // ended as a start nobody answered.
                    if let Some(name) = path.file_stem() {
                        recorded.insert(name.to_string_lossy().into_owned());
                    }
                    continue;
                }
            };
            recorded.insert(status.name.clone());
            let live_def = match live_def {
                Some(Ok(def)) => def,
                None => continue,
                Some(Err(error)) => {
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
                entry.live = Some(Box::new(live_def));
            }
            entry.generation += 1;
            let runtime = Runtime {
                init_pid: status.init_pid,
                monitor_pid: status.monitor_pid,
                monitor_start_time: status.monitor_start_time,
                started_at: status.started_at,
                cgroup_path: status.cgroup_path.clone(),
                memory_limit: status.memory_limit,
            };
            let Some(driver) = self.drivers.get(entry.def.domain_type) else {
                tracing::error!(domain = %status.name, domain_type = %entry.def.domain_type.as_str(), "no driver for a running domain's type: it is not managed");
                continue;
            };
            let exited = driver.reconnect(&status.name, &runtime);
            entry.set_runtime(runtime, &self.tenants);
            match exited {
                Some(exited) => {
                    let (state, reason) = if status.paused {
                        (State::Paused, Reason::User)
                    } else {
                        (State::Running, Reason::Reconnected)
                    };
                    entry.recovered(state);
                    entry.reason = reason;
                    tracing::info!(domain = %status.name, uuid = %status.uuid, pid = status.init_pid, "reconnected to a running instance");
                    self.recovered.push(Recovered(status.uuid, exited));
                }
                None => {
                    // It ended while no daemon watched: apply its exit now.
                    entry.recovered(State::Running);
                    let uuid = status.uuid;
                    let generation = entry.generation;
                    let _ = self.internal.send(Internal::Exited { uuid, generation });
                }
            }
        }
        for driver in self.drivers.all() {
            for name in driver.end_unrecorded(&recorded) {
                tracing::warn!(domain = %name, "ended an instance whose start the last daemon never recorded nor answered");
            }
        }
    }

    /// Removes the writable layers no domain has, defined or running, and
    /// that were not kept on purpose: a daemon killed after answering an
    /// undefine (or during a transient domain's stop) did not get to.
    fn remove_orphaned_layers(&mut self) {
        let Ok(images) = self.config.images.get() else {
            return;
        };
        let layers = match images.writable_layers() {
            Ok(layers) => layers,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot list the writable layers");
                return;
            }
        };
        for layer in layers {
            let domain = &layer.domain;
            if self.names.contains_key(domain)
                || self.blocked.contains_key(domain)
                || layer.is_kept()
            {
                continue;
            }
            tracing::info!(domain = %domain, "removing a writable layer whose domain is gone");
            self.remove_writable_layer(domain);
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

    /// Summaries of every network, by name.
    pub fn network_summaries(&self) -> Vec<NetworkSummary> {
        self.networks.summaries()
    }

    /// Starts the manager task; it ends when every handle is dropped.
    pub fn spawn(self) -> (ManagerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let last_seq = self.last_seq.clone();
        let task = tokio::spawn(self.run(rx));
        (ManagerHandle { tx, last_seq }, task)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let Some(mut internal_rx) = self.internal_rx.take() else {
            return;
        };
        for driver in self.drivers.all() {
            driver.warm_up();
        }
        let networks = std::mem::take(&mut self.recovered_networks);
        self.reconnect_networks(networks);
        for Recovered(uuid, exited) in std::mem::take(&mut self.recovered) {
            let generation = self.domains.get(&uuid).map_or(0, |e| e.generation);
            self.watch(uuid, generation, exited);
        }
        self.remove_orphaned_layers();
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
            Command::ConsoleLog { uuid, reply } => {
                let _ = reply.send(self.console_log(uuid));
            }
            Command::Plan {
                sources,
                options,
                reply,
            } => {
                let _ = reply.send(self.plan(&sources, &options));
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
                self.start(uuid, false, Some(reply));
            }
            Command::Shutdown {
                uuid,
                grace,
                mode,
                reply,
            } => self.stop(uuid, Stop::Shutdown { grace, mode }, reply),
            Command::Destroy { uuid, reply } => self.stop(uuid, Stop::Destroy, reply),
            Command::Reboot {
                uuid,
                grace,
                mode,
                reply,
            } => self.stop(uuid, Stop::Reboot { grace, mode }, reply),
            Command::Reset { uuid, reply } => self.reset(uuid, reply),
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
            Command::Tune {
                uuid,
                tuning,
                flags,
                reply,
            } => self.tune(uuid, tuning, flags, reply),
            Command::SendSignal {
                uuid,
                pid,
                signal,
                reply,
            } => self.send_signal(uuid, pid, signal, reply),
            Command::InterfaceAddresses {
                uuid,
                source,
                reply,
            } => self.interface_addresses(uuid, source, reply),
            Command::InterfaceStats {
                uuid,
                device,
                reply,
            } => self.interface_stats(uuid, device, reply),
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
            Command::ChangeDevice {
                uuid,
                change,
                xml,
                flags,
                reply,
            } => self.change_device(uuid, change, &xml, flags, reply),
            Command::NetworkStart { uuid, reply } => self.start_network(uuid, Some(reply)),
            Command::NetworkCreate { xml, reply } => self.create_network(&xml, reply),
            Command::NetworkDestroy { uuid, force, reply } => {
                self.destroy_network(uuid, force, reply)
            }
            Command::NetworkLeases { uuid, reply } => {
                let _ = reply.send(self.network_leases(uuid));
            }
            Command::NetworkDefine { xml, reply } => {
                let _ = reply.send(self.define_network(&xml));
            }
            Command::NetworkUndefine { uuid, reply } => {
                let _ = reply.send(self.undefine_network(uuid));
            }
            Command::NetworkSetAutostart {
                uuid,
                enabled,
                reply,
            } => {
                let _ = reply.send(self.set_network_autostart(uuid, enabled));
            }
            Command::NetworkLookup { lookup, reply } => {
                let _ = reply.send(self.lookup_network(&lookup));
            }
            Command::NetworkList { reply } => {
                let _ = reply.send(self.network_summaries());
            }
            Command::NetworkGetXml { uuid, flags, reply } => {
                let _ = reply.send(self.network_xml(uuid, flags));
            }
        }
    }

    fn handle_internal(&mut self, report: Internal) {
        match report {
            Internal::Launched {
                uuid,
                generation,
                result,
            } => self.launched(uuid, generation, result),
            Internal::BlockUnrecorded { uuid } => self.id_ranges.unrecorded(&uuid),
            Internal::Exited { uuid, generation } => self.exited(uuid, generation),
            Internal::Reset {
                uuid,
                generation,
                result,
                reply,
            } => self.was_reset(uuid, generation, result, reply),
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
                    entry.report(Report::Committed);
                }
                let _ = reply.send(result);
            }
            Internal::NetworkStarted {
                uuid,
                live,
                result,
                reply,
            } => self.network_started(uuid, *live, result, reply),
            Internal::NetworkStopped {
                uuid,
                problems,
                reply,
            } => self.network_stopped(uuid, problems, reply),
            Internal::AutostartDomains => self.autostart_domains(),
            Internal::DeviceChanged(done) => self.device_changed(*done),
            Internal::Tuned(done) => self.tuned(*done),
        }
    }

    fn publish(&mut self, kind: EventKind) -> Seq {
        self.seq += 1;
        self.last_seq.store(self.seq, Ordering::Release);
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

    /// The domains, for what they share with networks.
    fn index(&self) -> Index<'_, Box<Entry>> {
        Index {
            kind: "domain",
            by_uuid: &self.domains,
            names: &self.names,
            blocked: &self.blocked,
            name_of: |entry| entry.name(),
        }
    }

    fn lookup(&self, lookup: &Lookup) -> Result<&Entry, CoreError> {
        self.index()
            .find(lookup)
            .map(|entry| &**entry)
            .ok_or_else(|| CoreError::NoSuchDomain(lookup.clone()))
    }

    fn entry_mut(&mut self, uuid: Uuid) -> Result<&mut Entry, CoreError> {
        self.domains
            .get_mut(&uuid)
            .map(|entry| &mut **entry)
            .ok_or(CoreError::NoSuchDomain(Lookup::Uuid(uuid)))
    }

    /// The driver of a domain's type.
    fn console_log(&self, uuid: Uuid) -> Result<crate::core::logs::LogSource, CoreError> {
        let driver = self.driver_of(uuid)?;
        let domain = self.lookup(&Lookup::Uuid(uuid))?.name().to_owned();
        let files = driver.console_log_files(&domain);
        Ok(crate::core::logs::LogSource { domain, files })
    }

    fn driver_of(&self, uuid: Uuid) -> Result<std::sync::Arc<dyn Driver>, CoreError> {
        let entry = self
            .domains
            .get(&uuid)
            .ok_or(CoreError::NoSuchDomain(Lookup::Uuid(uuid)))?;
        let domain_type = entry.def.domain_type;
        self.drivers
            .get(domain_type)
            .cloned()
            .ok_or_else(|| CoreError::DriverUnavailable {
                domain: entry.name().to_owned(),
                driver: domain_type.as_str(),
                hint: "; this build of lxvirtd stores and lists these domains but cannot run them yet",
            })
    }
}

fn name_for_log(domains: &HashMap<Uuid, Box<Entry>>, uuid: Uuid) -> String {
    domains
        .get(&uuid)
        .map_or_else(|| uuid.to_string(), |e| e.name().to_owned())
}
