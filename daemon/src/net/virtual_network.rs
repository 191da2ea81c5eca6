//! A virtual network on the host: its bridge with its addresses, its
//! nftables tables and its dnsmasq, brought up and down as one, and the
//! ports containers take on it.
//!
//! [`HostNetworks`] is the [`NetworkDriver`] the daemon runs: each start,
//! takeover and destroy runs on a blocking thread (netlink, `nft` and
//! dnsmasq are synchronous and short), and a started dnsmasq is watched by
//! a task that starts it again when it dies, until the network is
//! destroyed.
//!
//! Ports join and leave on the caller's task and cost no process: the
//! port's address and record are settled in memory and in files, and its
//! elements of the port filter ([`crate::net::port_filter`]) go to a
//! worker task of the network, which applies queued changes in order (in
//! one nf_tables netlink batch when several wait, [`crate::net::nft`]).
//! The network's table replacements at a start or takeover (an `nft`
//! transaction) go through the same queue, so they never overtake a
//! port's change nor lose one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::domain::addr::Subnet;
use crate::domain::{MacAddr, NetworkDef};
use crate::driver::BoxFuture;
use crate::error_chain::error_chain;
use crate::net::dnsmasq::{self, DnsmasqError, Files, Lease, Running};
use crate::net::firewall::{self, FirewallError};
use crate::net::nft::{self, ElementChange};
use crate::net::port_filter;
use crate::net::ports::{self, PortError, PortRecord, PortRequest, PortTable};
use crate::net::{BridgeLink, HostLinks, IpAddress, LinkChange, LinkError, Links, Netlink};
use crate::sys::process::{pidfd_kill, wait_exit};

/// Why a network could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "network {network}: subnet {subnet} overlaps the host's route to {route} (dev {dev}); pick another <ip> for the network"
    )]
    HostRouteOverlap {
        network: String,
        subnet: String,
        route: String,
        dev: String,
    },
    #[error(
        "network {network}: the host already has an interface named {bridge}; name another <bridge name> or remove it"
    )]
    BridgeExists { network: String, bridge: String },
    #[error("network {network}: {step} failed: {source}")]
    Link {
        network: String,
        step: String,
        #[source]
        source: LinkError,
    },
    #[error("network {network}: cannot enable IP forwarding ({path}): {source}")]
    Forwarding {
        network: String,
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "network {network}: all of its {ports} ports are taken; put the next domains on another network"
    )]
    Full { network: String, ports: usize },
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Dnsmasq(#[from] DnsmasqError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(
        "network {network} is not running in this daemon; start it with 'lxvirt net-start {network}'"
    )]
    NotRunning { network: String },
    #[error("network {network}: {what}: {source}")]
    Io {
        network: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a started network runs besides its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkRuntime {
    /// The dnsmasq serving it: (pid, start time).
    pub dnsmasq: Option<(i32, u64)>,
}

/// What the core asks of the host for its virtual networks.
pub trait NetworkDriver: Send + Sync + std::fmt::Debug {
    /// Brings the network up: all of it, or nothing.
    fn start(&self, def: NetworkDef) -> BoxFuture<Result<NetworkRuntime, NetworkError>>;
    /// Takes over a network that ran before this daemon started: what is
    /// missing is made again, what runs is kept.
    fn reconnect(
        &self,
        def: NetworkDef,
        runtime: NetworkRuntime,
    ) -> BoxFuture<Result<NetworkRuntime, NetworkError>>;
    /// Takes the network down; what could not be removed is reported.
    fn stop(&self, def: NetworkDef) -> BoxFuture<Vec<NetworkError>>;
    /// The DHCP leases it has given.
    fn leases(&self, def: &NetworkDef) -> Vec<Lease>;
    /// The bridge a new port of the active network `def` plugs into.
    fn port_bridge(&self, def: &NetworkDef) -> Result<String, NetworkError> {
        Ok(bridge_of(def).to_owned())
    }
    /// A container's port joins the network: its IPv4 addresses are
    /// settled ([`crate::net::ports`]), its MAC gets its name and pinned
    /// address in DHCP, and its elements of the port filter are added in
    /// the background. Cheap: it starts no process and waits for none.
    fn add_port(&self, port: PortRequest) -> Result<Plugged, NetworkError>;
    /// The port of `mac` that `domain` has leaves the network; nothing for
    /// a port it does not know. As cheap as [`NetworkDriver::add_port`].
    fn remove_port(&self, network: &str, mac: MacAddr, domain: &str);
}

/// A port that joined its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plugged {
    /// The device group to make its host end in; `None` when the network
    /// filters nothing (`open`).
    pub group: Option<u32>,
}

/// Host networks: bridges, nftables tables, dnsmasq.
#[derive(Debug, Clone)]
pub struct HostNetworks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `RUN/network`: dnsmasq's files.
    dir: PathBuf,
    /// The user dnsmasq drops to.
    user: String,
    /// The watchers of running dnsmasqs, by network.
    watchers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The ports of the active networks, by network.
    ports: Mutex<HashMap<String, NetworkPorts>>,
    /// The host's `net.core.netdev_max_backlog` as last read or set.
    backlog: std::sync::atomic::AtomicUsize,
}

/// The ports of one active network, and the worker that applies their
/// changes to its port filter.
#[derive(Debug)]
struct NetworkPorts {
    /// The live definition, once its start or takeover ran in this daemon
    /// (a port can leave before that, after a daemon restart).
    def: Option<NetworkDef>,
    /// The device group of its ports; `None` for an `open` network.
    group: Option<u32>,
    table: PortTable,
    /// How full its bridges are.
    room: BridgeRoom,
    jobs: mpsc::UnboundedSender<Job>,
    worker: tokio::task::JoinHandle<()>,
}

/// How many ports each bridge of a network (level 0 its own, then its
/// second-level bridges) has at most: as last counted in sysfs, plus the
/// ports handed out since (those that left are not subtracted). Counting
/// lists every port of the bridge (~0.5 ms at 1,000, on the path of every
/// start), so a bridge is counted when first used, and again only when
/// its estimate comes near the limit, then at most every
/// [`RECOUNT_EVERY`] choices.
#[derive(Debug, Default)]
struct BridgeRoom {
    levels: Vec<Option<BridgeEstimate>>,
}

#[derive(Debug, Clone, Copy)]
struct BridgeEstimate {
    ports: usize,
    /// Choices left before the next count, once near the limit.
    recount_in: usize,
}

/// How near [`PORTS_PER_BRIDGE`] an estimate must come to be counted
/// again.
const RECOUNT_MARGIN: usize = 64;
/// How many choices a bridge near its limit is taken at its estimate
/// between two counts.
const RECOUNT_EVERY: usize = 64;

impl BridgeRoom {
    /// Whether the bridge of `level` (which exists) takes one more port,
    /// `count` telling how many it has; if so, the port is counted.
    fn take(&mut self, level: usize, mut count: impl FnMut() -> usize) -> bool {
        if self.levels.len() <= level {
            self.levels.resize(level + 1, None);
        }
        let near = |ports: usize| ports + RECOUNT_MARGIN >= PORTS_PER_BRIDGE;
        // Once near the limit, the next count waits RECOUNT_EVERY choices;
        // a bridge that comes near it is counted at once.
        let counted = |ports: usize| BridgeEstimate {
            ports,
            recount_in: if near(ports) { RECOUNT_EVERY } else { 0 },
        };
        let estimate = match &mut self.levels[level] {
            Some(estimate) if near(estimate.ports) && estimate.recount_in == 0 => {
                *estimate = counted(count());
                estimate
            }
            Some(estimate) => {
                estimate.recount_in = estimate.recount_in.saturating_sub(1);
                estimate
            }
            slot @ None => slot.insert(counted(count())),
        };
        if estimate.ports >= PORTS_PER_BRIDGE {
            return false;
        }
        estimate.ports += 1;
        true
    }
}

/// A change for a network's worker.
#[derive(Debug)]
enum Job {
    /// An nft transaction; `done` hears how it went.
    Nft {
        commands: Vec<Value>,
        done: Option<oneshot::Sender<Result<(), FirewallError>>>,
    },
    /// Changes to the port filter's set elements (over netlink).
    Elements(Vec<ElementChange>),
    /// dnsmasq reads its host files again.
    Reload,
}

const NETDEV_MAX_BACKLOG: &str = "/proc/sys/net/core/netdev_max_backlog";

/// The backlog a network of `ports` ports needs: a flood to every port,
/// with room for what else the CPU has queued.
fn flood_backlog(ports: usize) -> usize {
    ports + ports / 4 + 64
}

/// How long a destroy waits for the port filter's queued changes.
const WORKER_DRAIN: Duration = Duration::from_secs(5);

/// How long a dnsmasq that died waits before it is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

impl HostNetworks {
    /// Networks whose files live in `dir` (made, searchable by dnsmasq's
    /// user, which reads its hosts files after dropping privileges).
    pub fn new(dir: PathBuf) -> std::io::Result<HostNetworks> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let user = if nix::unistd::User::from_name("dnsmasq")
            .ok()
            .flatten()
            .is_some()
        {
            "dnsmasq"
        } else {
            "nobody"
        };
        Ok(HostNetworks {
            inner: Arc::new(Inner {
                dir,
                user: user.to_owned(),
                watchers: Mutex::new(HashMap::new()),
                ports: Mutex::new(HashMap::new()),
                backlog: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    fn files(&self, network: &str) -> Files {
        Files::new(&self.inner.dir, network)
    }

    /// `RUN/network/NAME.ports`: the records of its ports.
    fn records(&self, network: &str) -> PathBuf {
        records_dir(&self.inner.dir, network)
    }

    fn port_tables(&self) -> MutexGuard<'_, HashMap<String, NetworkPorts>> {
        // A panic while the lock was held leaves the tables as they were
        // between two changes: still usable.
        self.inner
            .ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ports of `network`, loaded from their records (with a worker of
    /// their own) the first time they are needed.
    fn ports_of<'a>(
        &self,
        tables: &'a mut HashMap<String, NetworkPorts>,
        network: &str,
    ) -> &'a mut NetworkPorts {
        tables.entry(network.to_owned()).or_insert_with(|| {
            let (table, problems) = PortTable::load(&self.records(network));
            for problem in problems {
                tracing::warn!(network, error = %error_chain(&problem), "ignoring a port record");
            }
            let (jobs, queue) = mpsc::unbounded_channel();
            let worker = tokio::spawn(run_jobs(network.to_owned(), self.files(network), queue));
            NetworkPorts {
                def: None,
                group: None,
                table,
                room: BridgeRoom::default(),
                jobs,
                worker,
            }
        })
    }

    /// Drops the ports of `network` once their queued changes are done.
    async fn forget_ports(&self, network: &str) {
        let ports = self.port_tables().remove(network);
        if let Some(NetworkPorts { jobs, worker, .. }) = ports {
            drop(jobs);
            let _ = tokio::time::timeout(WORKER_DRAIN, worker).await;
        }
    }

    /// Replaces the network's tables through its worker, with the ports
    /// it has (none at a start; those recorded at a takeover); blocks
    /// until it is done. For the start's blocking thread.
    fn replace_tables(&self, def: &NetworkDef, bridge_index: u32) -> Result<(), FirewallError> {
        let group = port_filter::port_group(bridge_index);
        let (done, result) = oneshot::channel();
        {
            let mut tables = self.port_tables();
            let ports = self.ports_of(&mut tables, def.name());
            ports.def = Some(def.clone());
            ports.group = ports::filtered(def).then_some(group);
            let recorded: Vec<PortRecord> = ports.table.ports().cloned().collect();
            let ruleset = firewall::ruleset(def, bridge_of(def), group, &recorded);
            let job = Job::Nft {
                commands: firewall::commands(ruleset),
                done: Some(done),
            };
            if ports.jobs.send(job).is_err() {
                return Err(worker_gone());
            }
        }
        result
            .blocking_recv()
            .unwrap_or_else(|_| Err(worker_gone()))
    }

    /// Raises the host's `net.core.netdev_max_backlog` when a network's
    /// ports come near it. A broadcast (ARP, DHCP) on a bridge is queued
    /// once per port at once on the CPU that floods it; past the backlog,
    /// the last ports' copies and the replies they cause are dropped, and
    /// a network of ~1,000 containers loses its last ones' ARP (the
    /// kernel's default is 1,000). Never lowered; a value the
    /// administrator set higher stays.
    fn make_room_for_floods(&self, network: &str, ports: usize) {
        use std::sync::atomic::Ordering;
        let known = self.inner.backlog.load(Ordering::Relaxed);
        let needed = flood_backlog(ports);
        if known >= needed {
            return;
        }
        let current = std::fs::read_to_string(NETDEV_MAX_BACKLOG)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if current >= needed {
            self.inner.backlog.store(current, Ordering::Relaxed);
            return;
        }
        let raised = needed.max(current) * 2;
        match std::fs::write(NETDEV_MAX_BACKLOG, raised.to_string()) {
            Ok(()) => {
                self.inner.backlog.store(raised, Ordering::Relaxed);
                tracing::info!(
                    network,
                    ports,
                    from = current,
                    to = raised,
                    "raised net.core.netdev_max_backlog: a broadcast on the network is queued once per port"
                );
            }
            Err(error) => {
                // Warned once per threshold: the next check reads again.
                self.inner.backlog.store(needed, Ordering::Relaxed);
                tracing::warn!(network, ports, backlog = current, error = %error, "cannot raise net.core.netdev_max_backlog; broadcasts to the network's last ports may be dropped (raise it by hand)");
            }
        }
    }

    /// Watches `running`; when it dies, starts it again.
    fn watch(&self, def: NetworkDef, running: Running) {
        let this = self.clone();
        let name = def.name().to_owned();
        let task = tokio::spawn(async move {
            let mut pidfd = running.pidfd;
            loop {
                wait_exit(pidfd).await;
                tracing::warn!(network = %def.name(), "dnsmasq exited; starting it again");
                tokio::time::sleep(RESTART_DELAY).await;
                let files = this.files(def.name());
                let bridge = bridge_of(&def).to_owned();
                let user = this.inner.user.clone();
                let def2 = def.clone();
                let started = tokio::task::spawn_blocking(move || {
                    dnsmasq::start(&def2, &bridge, &files, &user)
                })
                .await;
                match started {
                    Ok(Ok(running)) => pidfd = running.pidfd,
                    Ok(Err(error)) => {
                        tracing::error!(network = %def.name(), error = %crate::error_chain::error_chain(&error), "cannot start dnsmasq again; DHCP and DNS are down until the network is restarted");
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
        if let Ok(mut watchers) = self.inner.watchers.lock()
            && let Some(old) = watchers.insert(name, task)
        {
            old.abort();
        }
    }

    fn unwatch(&self, network: &str) {
        if let Ok(mut watchers) = self.inner.watchers.lock()
            && let Some(task) = watchers.remove(network)
        {
            task.abort();
        }
    }
}

fn bridge_of(def: &NetworkDef) -> &str {
    def.bridge.name.as_deref().unwrap_or_default()
}

impl NetworkDriver for HostNetworks {
    fn start(&self, def: NetworkDef) -> BoxFuture<Result<NetworkRuntime, NetworkError>> {
        let this = self.clone();
        Box::pin(async move {
            let name = def.name().to_owned();
            // A network that starts has no ports yet, whatever was recorded.
            this.forget_ports(&name).await;
            let _ = std::fs::remove_dir_all(this.records(&name));
            let files = this.files(&name);
            let records = this.records(&name);
            let user = this.inner.user.clone();
            let def2 = def.clone();
            let tables = this.clone();
            let started = tokio::task::spawn_blocking(move || {
                let replace = |index| tables.replace_tables(&def2, index);
                bring_up(&def2, &files, &records, &user, &replace)
            })
            .await
            .map_err(|e| NetworkError::Io {
                network: name.clone(),
                what: "the start thread",
                source: std::io::Error::other(e),
            })
            .and_then(|started| started);
            let started = match started {
                Ok(started) => started,
                Err(error) => {
                    this.forget_ports(&name).await;
                    return Err(error);
                }
            };
            let runtime = NetworkRuntime {
                dnsmasq: started.as_ref().map(|r| (r.pid, r.start_time)),
            };
            if let Some(running) = started {
                this.watch(def, running);
            }
            Ok(runtime)
        })
    }

    fn reconnect(
        &self,
        def: NetworkDef,
        runtime: NetworkRuntime,
    ) -> BoxFuture<Result<NetworkRuntime, NetworkError>> {
        let this = self.clone();
        Box::pin(async move {
            let name = def.name().to_owned();
            let files = this.files(&name);
            let records = this.records(&name);
            let user = this.inner.user.clone();
            let def2 = def.clone();
            let tables = this.clone();
            let found = tokio::task::spawn_blocking(move || {
                let replace = |index| tables.replace_tables(&def2, index);
                reconnect(&def2, runtime, &files, &records, &user, &replace)
            })
            .await
            .map_err(|e| NetworkError::Io {
                network: name.clone(),
                what: "the reconnect thread",
                source: std::io::Error::other(e),
            })
            .and_then(|found| found);
            let found = match found {
                Ok(found) => found,
                Err(error) => {
                    this.forget_ports(&name).await;
                    return Err(error);
                }
            };
            let runtime = NetworkRuntime {
                dnsmasq: found.as_ref().map(|r| (r.pid, r.start_time)),
            };
            if let Some(running) = found {
                this.watch(def, running);
            }
            Ok(runtime)
        })
    }

    fn stop(&self, def: NetworkDef) -> BoxFuture<Vec<NetworkError>> {
        let this = self.clone();
        Box::pin(async move {
            this.unwatch(def.name());
            this.forget_ports(def.name()).await;
            let files = this.files(def.name());
            let records = this.records(def.name());
            let running = dnsmasq::find(&files);
            if let Some(running) = running {
                let _ = pidfd_kill(
                    std::os::fd::AsFd::as_fd(&running.pidfd),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), wait_exit(running.pidfd)).await;
            }
            tokio::task::spawn_blocking(move || bring_down(&def, &files, &records))
                .await
                .unwrap_or_default()
        })
    }

    /// The network's bridge while it has room; past [`PORTS_PER_BRIDGE`]
    /// ports, a second-level bridge chained to it (made when first needed).
    /// How full each is comes from the network's [`BridgeRoom`].
    fn port_bridge(&self, def: &NetworkDef) -> Result<String, NetworkError> {
        let main = bridge_of(def);
        let mut tables = self.port_tables();
        let Some(ports) = tables.get_mut(def.name()) else {
            return Err(NetworkError::NotRunning {
                network: def.name().to_owned(),
            });
        };
        for level in 0..MAX_OVERFLOW_BRIDGES {
            let bridge = match level {
                0 => main.to_owned(),
                n => overflow_names(main, n).0,
            };
            if level > 0 && !Path::new("/sys/class/net").join(&bridge).exists() {
                make_overflow_bridge(def, level)?;
            }
            if ports.room.take(level, || port_count(&bridge)) {
                return Ok(bridge);
            }
        }
        Err(NetworkError::Full {
            network: def.name().to_owned(),
            ports: PORTS_PER_BRIDGE * MAX_OVERFLOW_BRIDGES,
        })
    }

    fn leases(&self, def: &NetworkDef) -> Vec<Lease> {
        let mut leases = dnsmasq::leases(&self.files(def.name()));
        for lease in &mut leases {
            let host = Subnet {
                address: lease.ip,
                prefix: if lease.ip.is_ipv4() { 32 } else { 128 },
            };
            if let Some(ip) = def.ips.iter().find(|ip| ip.subnet().overlaps(&host)) {
                lease.prefix = ip.prefix;
            }
        }
        leases
    }

    fn add_port(&self, request: PortRequest) -> Result<Plugged, NetworkError> {
        let network = request.network.clone();
        let mac = request.mac;
        let files = self.files(&network);
        let records = self.records(&network);
        // Only an address the network assigns must keep clear of leases;
        // a port with addresses of its own needs no read of the file,
        // which grows with the network.
        let leases = if request.ipv4.is_empty() {
            dnsmasq::leases(&files)
        } else {
            Vec::new()
        };
        let mut tables = self.port_tables();
        let not_running = || NetworkError::NotRunning {
            network: network.clone(),
        };
        let ports = tables.get_mut(&network).ok_or_else(not_running)?;
        let def = ports.def.as_ref().ok_or_else(not_running)?;
        let group = ports.group.filter(|_| ports::filtered(def));
        // The same domain's earlier port of this MAC goes first (another
        // domain's is refused by the plug).
        let earlier = ports
            .table
            .get(mac)
            .is_some_and(|old| old.domain == request.domain);
        if let Some(old) = earlier.then(|| ports.table.unplug(mac)).flatten()
            && old.group.is_some()
        {
            let _ = ports.jobs.send(Job::Elements(port_filter::unplug(&old)));
        }
        let record = ports
            .table
            .plug(def, &request, group, &leases, now_secs())?;
        let dhcp = dnsmasq::needed(def);
        let undo = |ports: &mut NetworkPorts| {
            ports.table.unplug(mac);
            let _ = std::fs::remove_file(ports::record_path(&records, mac));
        };
        if let Err(error) = ports.table.save(&records, &network, mac) {
            undo(ports);
            return Err(error.into());
        }
        if dhcp
            && let Err(source) =
                dnsmasq::add_port(&files, &mac.to_string(), record.pinned, &request.domain)
        {
            undo(ports);
            return Err(NetworkError::Io {
                network,
                what: "writing the port's DHCP host file",
                source,
            });
        }
        if group.is_some() {
            let _ = ports.jobs.send(Job::Elements(port_filter::plug(&record)));
        }
        let count = ports.table.len();
        drop(tables);
        self.make_room_for_floods(&network, count);
        tracing::debug!(network = %network, domain = %request.domain, port = %request.port, mac = %mac, address = ?record.pinned, "port plugged");
        Ok(Plugged { group })
    }

    fn remove_port(&self, network: &str, mac: MacAddr, domain: &str) {
        let records = self.records(network);
        let files = self.files(network);
        let mut tables = self.port_tables();
        if !tables.contains_key(network) && !ports::record_path(&records, mac).exists() {
            // A port lxvirtd plugged before it kept records, or none.
            if dnsmasq::remove_port(&files, &mac.to_string()) {
                dnsmasq::reload(&files);
            }
            return;
        }
        // After a daemon restart a port may leave before its network is
        // taken over: its record is loaded for that.
        let ports = self.ports_of(&mut tables, network);
        // Only the domain's own: another domain's start refused for the
        // same MAC takes nothing away.
        if ports.table.get(mac).is_none_or(|r| r.domain != domain) {
            return;
        }
        let Some(record) = ports.table.unplug(mac) else {
            return;
        };
        let _ = std::fs::remove_file(ports::record_path(&records, mac));
        dnsmasq::remove_port(&files, &mac.to_string());
        if record.group.is_some() {
            let _ = ports.jobs.send(Job::Elements(port_filter::unplug(&record)));
        }
        let _ = ports.jobs.send(Job::Reload);
        tracing::debug!(network, domain, port = %record.port, mac = %mac, "port unplugged");
    }
}

/// Applies a network's queued changes in order; what waits is applied in
/// one transaction (each on its own when that one is refused). Ends when
/// the network's ports are dropped and the queue is empty.
async fn run_jobs(network: String, files: Files, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(job) = queue.try_recv() {
            batch.push(job);
        }
        let network = network.clone();
        let files = files.clone();
        let _ = tokio::task::spawn_blocking(move || apply_jobs(&network, &files, batch)).await;
    }
}

fn apply_jobs(network: &str, files: &Files, batch: Vec<Job>) {
    let table = firewall::table_name(network);
    let mut reload = false;
    let mut transactions = Vec::new();
    let mut elements = Vec::new();
    for job in batch {
        match job {
            Job::Nft { commands, done } => {
                // Element changes queued before a table's replacement go
                // first: the replacement carries every port's elements.
                apply_elements(network, &table, std::mem::take(&mut elements));
                transactions.push((commands, done));
            }
            Job::Elements(changes) => {
                apply_nft(network, &table, std::mem::take(&mut transactions));
                elements.extend(changes);
            }
            Job::Reload => reload = true,
        }
    }
    apply_nft(network, &table, transactions);
    apply_elements(network, &table, elements);
    if reload {
        dnsmasq::reload(files);
    }
}

/// An nft transaction and who hears how it went.
type NftJob = (
    Vec<Value>,
    Option<oneshot::Sender<Result<(), FirewallError>>>,
);

/// nft transactions in one go (each on its own when that is refused).
fn apply_nft(network: &str, table: &str, transactions: Vec<NftJob>) {
    if transactions.is_empty() {
        return;
    }
    let all: Vec<Value> = transactions
        .iter()
        .flat_map(|(commands, _)| commands.iter().cloned())
        .collect();
    let together = firewall::apply(table, &firewall::transaction(all));
    for (commands, done) in transactions {
        let result = match &together {
            Ok(()) => Ok(()),
            Err(_) => firewall::apply(table, &firewall::transaction(commands)),
        };
        match (done, result) {
            (Some(done), result) => {
                let _ = done.send(result);
            }
            (None, Err(error)) => {
                tracing::warn!(network, error = %error_chain(&error), "cannot change the network's tables");
            }
            (None, Ok(())) => {}
        }
    }
}

/// Element changes of the port filter in one netlink batch.
fn apply_elements(network: &str, table: &str, changes: Vec<ElementChange>) {
    if let Err(error) = nft::apply(nft::Family::Bridge, table, &changes) {
        // A port the filter does not know passes nothing; one it still
        // knows keeps its elements until the network stops.
        tracing::warn!(network, error = %error_chain(&error), "cannot change the port filter");
    }
}

fn worker_gone() -> FirewallError {
    FirewallError::Spawn(std::io::Error::other(
        "the network's port filter worker is gone",
    ))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The directory of the port records of `network` in `dir`.
fn records_dir(dir: &Path, network: &str) -> PathBuf {
    dir.join(format!("{network}.ports"))
}

/// Refuses a subnet the host already routes elsewhere (a route of the
/// main table other than through `bridge` itself).
fn check_host_routes(
    def: &NetworkDef,
    netlink: &Netlink,
    bridge_index: Option<u32>,
) -> Result<(), NetworkError> {
    for ip in &def.ips {
        let subnet = ip.subnet();
        let link_error = |source| NetworkError::Link {
            network: def.name().to_owned(),
            step: "reading the host's routes".into(),
            source,
        };
        let routes = netlink
            .routes(subnet.address.is_ipv6())
            .map_err(link_error)?;
        for route in routes {
            if route.prefix == 0 || (bridge_index.is_some() && route.oif == bridge_index) {
                continue;
            }
            if route.destination.is_ipv6() && route.destination.to_string().starts_with("fe80") {
                continue;
            }
            let theirs = Subnet {
                address: route.destination,
                prefix: route.prefix,
            };
            if theirs.overlaps(&subnet) {
                let dev = route.oif.map_or_else(|| "?".to_owned(), link_name);
                return Err(NetworkError::HostRouteOverlap {
                    network: def.name().to_owned(),
                    subnet: subnet.to_string(),
                    route: theirs.to_string(),
                    dev,
                });
            }
        }
    }
    Ok(())
}

/// Replaces the network's nftables tables, given its bridge's index.
type ReplaceTables<'a> = dyn Fn(u32) -> Result<(), FirewallError> + 'a;

/// Brings a network up from nothing; on failure removes what it made.
fn bring_up(
    def: &NetworkDef,
    files: &Files,
    records: &Path,
    user: &str,
    replace_tables: &ReplaceTables<'_>,
) -> Result<Option<Running>, NetworkError> {
    let network = def.name().to_owned();
    let bridge = bridge_of(def);
    let netlink = Netlink::open().map_err(|source| NetworkError::Link {
        network: network.clone(),
        step: "opening rtnetlink".into(),
        source,
    })?;
    if netlink
        .find(bridge)
        .map_err(|source| NetworkError::Link {
            network: network.clone(),
            step: format!("looking up {bridge}"),
            source,
        })?
        .is_some()
    {
        return Err(NetworkError::BridgeExists {
            network,
            bridge: bridge.to_owned(),
        });
    }
    check_host_routes(def, &netlink, None)?;
    let result = make(def, files, user, &netlink, replace_tables);
    if result.is_err() {
        for error in bring_down(def, files, records) {
            tracing::debug!(network = %network, error = %error, "undoing a failed start");
        }
    }
    result
}

fn make(
    def: &NetworkDef,
    files: &Files,
    user: &str,
    netlink: &Netlink,
    replace_tables: &ReplaceTables<'_>,
) -> Result<Option<Running>, NetworkError> {
    let network = def.name();
    let bridge = bridge_of(def);
    let link_error = |step: String| {
        move |source| NetworkError::Link {
            network: network.to_owned(),
            step,
            source,
        }
    };
    let index = netlink
        .create_bridge(&BridgeLink {
            name: bridge,
            mac: def.mac.map(|m| m.0),
            stp: kernel_stp(def),
            forward_delay: def.bridge.delay,
            mtu: def.mtu.map(u32::from),
        })
        .map_err(link_error(format!("creating bridge {bridge}")))?;
    configure_bridge(def, netlink, index)?;
    enable_forwarding(def)?;
    replace_tables(index)?;
    if !dnsmasq::needed(def) {
        return Ok(None);
    }
    dnsmasq::start(def, bridge, files, user)
        .map(Some)
        .map_err(Into::into)
}

/// Whether the bridge runs the kernel's STP. With STP on, the kernel
/// clamps the forward delay to at least 2 s and holds each new port for
/// twice that before it forwards: a container would start without a
/// network for 4 s. A virtual network's bridge has no uplink, so no loop
/// can form through it; STP runs only when `<bridge delay>` asks for the
/// delay it implies anyway.
fn kernel_stp(def: &NetworkDef) -> bool {
    def.bridge.stp && def.bridge.delay >= MIN_STP_FORWARD_DELAY
}

/// The kernel's smallest forward delay with STP on, seconds.
const MIN_STP_FORWARD_DELAY: u32 = 2;

/// The bridge's addresses, and up.
fn configure_bridge(def: &NetworkDef, netlink: &Netlink, index: u32) -> Result<(), NetworkError> {
    let network = def.name();
    let bridge = bridge_of(def);
    for ip in &def.ips {
        let address = IpAddress {
            address: ip.address,
            prefix: ip.prefix,
            peer: None,
        };
        match netlink.add_address(index, &address) {
            Ok(()) => {}
            Err(e) if e.errno == crate::sys::Errno::EEXIST => {}
            Err(source) => {
                return Err(NetworkError::Link {
                    network: network.to_owned(),
                    step: format!("adding {}/{} to {bridge}", ip.address, ip.prefix),
                    source,
                });
            }
        }
    }
    netlink
        .change(
            index,
            &LinkChange {
                up: Some(true),
                ..LinkChange::default()
            },
        )
        .map_err(|source| NetworkError::Link {
            network: network.to_owned(),
            step: format!("bringing {bridge} up"),
            source,
        })
}

/// A forwarding network needs the host to forward its families.
fn enable_forwarding(def: &NetworkDef) -> Result<(), NetworkError> {
    if def.forward.is_none() {
        return Ok(());
    }
    let mut paths = Vec::new();
    if def.ips.iter().any(|ip| ip.address.is_ipv4()) {
        paths.push("/proc/sys/net/ipv4/ip_forward");
    }
    if def.ips.iter().any(|ip| ip.address.is_ipv6()) {
        paths.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for path in paths {
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(path, "1").map_err(|source| NetworkError::Forwarding {
            network: def.name().to_owned(),
            path,
            source,
        })?;
    }
    Ok(())
}

/// Takes over a running network: the bridge (made again if gone), its
/// addresses, the tables (replaced: same rules, and the recorded ports'
/// elements), dnsmasq (kept if it still runs, else started).
fn reconnect(
    def: &NetworkDef,
    runtime: NetworkRuntime,
    files: &Files,
    records: &Path,
    user: &str,
    replace_tables: &ReplaceTables<'_>,
) -> Result<Option<Running>, NetworkError> {
    let network = def.name();
    let bridge = bridge_of(def);
    let netlink = Netlink::open().map_err(|source| NetworkError::Link {
        network: network.to_owned(),
        step: "opening rtnetlink".into(),
        source,
    })?;
    let found = netlink.find(bridge).map_err(|source| NetworkError::Link {
        network: network.to_owned(),
        step: format!("looking up {bridge}"),
        source,
    })?;
    match found {
        Some(link) if link.kind.as_deref() == Some("bridge") => {
            configure_bridge(def, &netlink, link.index)?;
            enable_forwarding(def)?;
            replace_tables(link.index)?;
            if !dnsmasq::needed(def) {
                return Ok(None);
            }
            let running = runtime
                .dnsmasq
                .and_then(|(pid, start)| dnsmasq::find_by_pid(pid, start))
                .or_else(|| dnsmasq::find(files));
            match running {
                Some(running) => Ok(Some(running)),
                None => dnsmasq::start(def, bridge, files, user)
                    .map(Some)
                    .map_err(Into::into),
            }
        }
        _ => {
            // Gone (or replaced by something else): start it afresh.
            if let Some(running) = dnsmasq::find(files) {
                let _ = pidfd_kill(
                    std::os::fd::AsFd::as_fd(&running.pidfd),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            bring_up(def, files, records, user, replace_tables)
        }
    }
}

/// A Linux bridge takes at most 1,024 ports (port numbers have 10 bits).
/// A network has room for more through second-level bridges: each is a
/// port of the network's bridge (through a veth pair) and takes up to this
/// many ports of its own. Frames between the levels are plain bridging;
/// routing, the firewall table and dnsmasq stay on the network's bridge.
pub const PORTS_PER_BRIDGE: usize = 1000;

/// Second-level bridges a network may have: room for ~63,000 ports.
const MAX_OVERFLOW_BRIDGES: usize = 64;

/// The ports of a bridge (`/sys/class/net/BR/brif`).
fn port_count(bridge: &str) -> usize {
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Names of the second-level bridge `n` of the network bridge `main` and
/// of the veth pair that chains it (its end on `main`, its end on the
/// second-level bridge): `lxvs`/`lxvu`/`lxvd`, a hash of `main` and `n`,
/// short enough for any bridge name (15 bytes at most).
fn overflow_names(main: &str, n: usize) -> (String, String, String) {
    // FNV-1a, 24 bits: stable across runs and versions.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in main.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let tag = format!("{:06x}{n}", hash & 0x00ff_ffff);
    (
        format!("lxvs{tag}"),
        format!("lxvu{tag}"),
        format!("lxvd{tag}"),
    )
}

/// Makes the second-level bridge `n` of a network and chains it to the
/// network's bridge.
fn make_overflow_bridge(def: &NetworkDef, n: usize) -> Result<(), NetworkError> {
    let main = bridge_of(def);
    let (bridge, up_end, down_end) = overflow_names(main, n);
    let network = def.name();
    let link_error = |step: String| {
        move |source| NetworkError::Link {
            network: network.to_owned(),
            step,
            source,
        }
    };
    let netlink = Netlink::open().map_err(link_error("opening rtnetlink".into()))?;
    let main_index = netlink
        .find(main)
        .map_err(link_error(format!("looking up {main}")))?
        .map(|l| l.index)
        .ok_or_else(|| NetworkError::BridgeExists {
            network: network.to_owned(),
            bridge: main.to_owned(),
        })?;
    let index = netlink
        .create_bridge(&BridgeLink {
            name: &bridge,
            mac: None,
            stp: false,
            forward_delay: 0,
            mtu: def.mtu.map(u32::from),
        })
        .map_err(link_error(format!("creating bridge {bridge}")))?;
    let chained = netlink
        .create_veth(&crate::net::Veth {
            name: &up_end,
            master: Some(main_index),
            up: true,
            peer_name: &down_end,
            peer_mac: None,
            peer_netns: None,
            mtu: def.mtu.map(u32::from),
            group: None,
        })
        .map_err(link_error(format!("chaining {bridge} to {main}")))
        .and_then(|_| {
            let down = netlink
                .find(&down_end)
                .map_err(link_error(format!("looking up {down_end}")))?
                .map(|l| l.index)
                .unwrap_or_default();
            for (link, master) in [(down, Some(index)), (index, None)] {
                netlink
                    .change(
                        link,
                        &LinkChange {
                            master,
                            up: Some(true),
                            ..LinkChange::default()
                        },
                    )
                    .map_err(link_error(format!("bringing {bridge} up")))?;
            }
            Ok(())
        });
    if chained.is_err() {
        let _ = netlink.delete(index);
    }
    chained
}

/// Removes the tables, the bridge, dnsmasq's files and the port records
/// (dnsmasq itself is stopped by the caller first).
fn bring_down(def: &NetworkDef, files: &Files, records: &Path) -> Vec<NetworkError> {
    let mut errors = Vec::new();
    let network = def.name();
    if let Err(error) = firewall::apply(&firewall::table_name(network), &firewall::removal(network))
    {
        errors.push(error.into());
    }
    let bridge = bridge_of(def);
    match Netlink::open() {
        Ok(netlink) => {
            // Second-level bridges first (with the veths that chain them).
            for n in 1..MAX_OVERFLOW_BRIDGES {
                let (second, up_end, _) = overflow_names(bridge, n);
                let mut found = false;
                for name in [up_end, second] {
                    if let Ok(Some(link)) = netlink.find(&name) {
                        found = true;
                        let _ = netlink.delete(link.index);
                    }
                }
                if !found {
                    break;
                }
            }
            match netlink.find(bridge) {
                Ok(Some(link)) if link.kind.as_deref() == Some("bridge") => {
                    if let Err(source) = netlink.delete(link.index) {
                        errors.push(NetworkError::Link {
                            network: network.to_owned(),
                            step: format!("deleting {bridge}"),
                            source,
                        });
                    }
                }
                Ok(_) => {}
                Err(source) => errors.push(NetworkError::Link {
                    network: network.to_owned(),
                    step: format!("looking up {bridge}"),
                    source,
                }),
            }
        }
        Err(source) => errors.push(NetworkError::Link {
            network: network.to_owned(),
            step: "opening rtnetlink".into(),
            source,
        }),
    }
    dnsmasq::remove_files(files);
    let _ = std::fs::remove_dir_all(records);
    errors
}

/// The directory of the networks' runtime files under the run directory.
pub fn run_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("network")
}

/// The name of the host link `index`, for messages.
fn link_name(index: u32) -> String {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("ifindex"))
                .is_ok_and(|i| i.trim() == index.to_string())
        })
        .map_or_else(
            || index.to_string(),
            |e| e.file_name().to_string_lossy().into_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_is_counted_once_and_again_only_near_its_limit() {
        let mut room = BridgeRoom::default();
        let counted = std::cell::Cell::new(0);
        let count = |ports: usize| {
            counted.set(counted.get() + 1);
            ports
        };
        // Counted when first used (10 ports), then taken at its estimate.
        assert!(room.take(0, || count(10)));
        for _ in 0..(PORTS_PER_BRIDGE - RECOUNT_MARGIN - 11) {
            assert!(room.take(0, || count(10)));
        }
        assert_eq!(counted.get(), 1);
        // Near the limit: counted again at once (the ports that left show:
        // 10 run), then only every RECOUNT_EVERY choices.
        assert!(room.take(0, || count(10)));
        assert_eq!(counted.get(), 2);
        for _ in 0..RECOUNT_EVERY {
            assert!(room.take(0, || count(999)));
        }
        assert_eq!(counted.get(), 2, "no count between two");
        // A count that finds it full refuses; the next level is counted
        // on its own.
        for _ in 0..(PORTS_PER_BRIDGE - 10 - RECOUNT_MARGIN) {
            room.take(0, || count(PORTS_PER_BRIDGE));
        }
        assert!(!room.take(0, || count(PORTS_PER_BRIDGE)));
        let before = counted.get();
        assert!(room.take(2, || count(1)));
        assert_eq!(counted.get(), before + 1);
        // Full bridges are not counted at every choice either.
        let full_counts = counted.get();
        for _ in 0..RECOUNT_EVERY / 2 {
            assert!(!room.take(0, || count(PORTS_PER_BRIDGE)));
        }
        assert!(
            counted.get() <= full_counts + 1,
            "{} counts",
            counted.get() - full_counts
        );
    }

    /// The kernel's default backlog (1,000) is raised while a network is
    /// still well below it, and each raise leaves room for the next 60 %.
    #[test]
    fn the_backlog_is_raised_before_a_flood_fills_it() {
        let kernel_default = 1000;
        let first = (1..=kernel_default)
            .find(|&ports| flood_backlog(ports) > kernel_default)
            .unwrap_or(usize::MAX);
        assert!(first <= 800, "raised only at {first} ports");
        for ports in [1, 1000, 5000, 63_000] {
            assert!(flood_backlog(ports) > ports + 32, "{ports}");
        }
    }

    #[test]
    fn overflow_names_fit_an_interface_name_and_differ_by_level() {
        let (bridge, up, down) = overflow_names("a-very-long-bridge-name", 63);
        for name in [&bridge, &up, &down] {
            assert!(name.len() <= 15, "{name}");
        }
        assert_ne!(
            overflow_names("lxvtbr0", 1).0,
            overflow_names("lxvtbr0", 2).0
        );
        assert_ne!(
            overflow_names("lxvtbr0", 1).0,
            overflow_names("lxvtbr1", 1).0
        );
    }
}
