//! Networks: define, undefine, autostart, lookup, the XML, start and
//! destroy, and the ports domains take on them.
//!
//! A define refuses what would clash with another network once both run:
//! the same bridge, or overlapping subnets. A network's start and destroy
//! run on the network driver in a task of their own; meanwhile the network
//! is busy and refuses other changes. An active network has its live
//! definition (what it was started with) and a status file in the run
//! directory, by which a restarted daemon takes it over again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use uuid::Uuid;

use super::Manager;
use super::identity::Index;
use super::{Internal, Reply};
use crate::core::live::{LiveStatus, NetworkStatus};
use crate::core::store::{Loaded, Store};
use crate::core::types::{CoreError, EventKind, Lifecycle, Lookup, NetworkSummary, Seq, XmlFlags};
use crate::domain::{InterfaceSource, NetworkDef};
use crate::driver::NetworkPort;
use crate::error_chain::error_chain;
use crate::net::dnsmasq::Lease;
use crate::net::ports::PortRequest;
use crate::net::virtual_network::{NetworkError, NetworkRuntime};

/// The prefix of the bridge names the daemon picks.
const BRIDGE_PREFIX: &str = "lxvirtbr";

/// A network as the manager holds it.
#[derive(Debug)]
pub(super) struct NetworkEntry {
    /// Its bridge name is always set (given, or picked at define time).
    def: NetworkDef,
    autostart: bool,
    persistent: bool,
    /// What it runs with, while active.
    active: Option<ActiveNetwork>,
    /// A start or destroy is under way.
    busy: Option<&'static str>,
}

#[derive(Debug)]
struct ActiveNetwork {
    live: NetworkDef,
}

impl NetworkEntry {
    fn name(&self) -> &str {
        self.def.name()
    }

    /// The bridge it runs on, or would.
    fn bridge(&self) -> &str {
        self.live_def().bridge.name.as_deref().unwrap_or_default()
    }

    fn live_def(&self) -> &NetworkDef {
        self.active.as_ref().map_or(&self.def, |a| &a.live)
    }

    fn summary(&self) -> NetworkSummary {
        NetworkSummary {
            uuid: self.def.uuid,
            name: self.name().to_owned(),
            active: self.active.is_some(),
            persistent: self.persistent,
            autostart: self.autostart,
            bridge: self.bridge().to_owned(),
        }
    }

    fn refuse_if_busy(&self) -> Result<(), CoreError> {
        match self.busy {
            Some(operation) => Err(CoreError::NetworkState {
                network: self.name().to_owned(),
                problem: operation,
            }),
            None => Ok(()),
        }
    }
}

/// Every network the manager holds, and where they are saved.
#[derive(Debug)]
pub(super) struct Networks {
    store: Store<NetworkDef>,
    by_uuid: HashMap<Uuid, NetworkEntry>,
    names: HashMap<String, Uuid>,
    blocked: HashMap<String, PathBuf>,
}

impl Networks {
    /// The networks `store` loaded; the names of its bad files stay blocked.
    pub(super) fn new(store: Store<NetworkDef>, loaded: Loaded<NetworkDef>) -> Networks {
        let mut networks = Networks {
            store,
            by_uuid: HashMap::new(),
            names: HashMap::new(),
            blocked: loaded.blocked,
        };
        let mut unnamed = Vec::new();
        for stored in loaded.definitions {
            let entry = NetworkEntry {
                def: stored.def,
                autostart: stored.autostart,
                persistent: true,
                active: None,
                busy: None,
            };
            match entry.def.bridge.name {
                Some(_) => networks.insert(entry),
                None => unnamed.push(entry),
            }
        }
        // A file written by hand may lack a bridge name: it gets one no
        // other network has, in memory now and on disk with the next define.
        for mut entry in unnamed {
            entry.def.bridge.name = Some(networks.free_bridge());
            networks.insert(entry);
        }
        networks
    }

    fn insert(&mut self, entry: NetworkEntry) {
        self.names.insert(entry.name().to_owned(), entry.def.uuid);
        self.by_uuid.insert(entry.def.uuid, entry);
    }

    fn index(&self) -> Index<'_, NetworkEntry> {
        Index {
            kind: "network",
            by_uuid: &self.by_uuid,
            names: &self.names,
            blocked: &self.blocked,
            name_of: NetworkEntry::name,
        }
    }

    fn get(&self, lookup: &Lookup) -> Result<&NetworkEntry, CoreError> {
        self.index()
            .find(lookup)
            .ok_or_else(|| CoreError::NoSuchNetwork(lookup.clone()))
    }

    fn get_mut(&mut self, uuid: Uuid) -> Result<&mut NetworkEntry, CoreError> {
        self.by_uuid
            .get_mut(&uuid)
            .ok_or(CoreError::NoSuchNetwork(Lookup::Uuid(uuid)))
    }

    /// The other networks, by name (so that a refusal names the same one
    /// every time).
    fn others(&self, uuid: Uuid) -> Vec<&NetworkEntry> {
        let mut others: Vec<_> = self
            .by_uuid
            .values()
            .filter(|e| e.def.uuid != uuid)
            .collect();
        others.sort_by(|a, b| a.name().cmp(b.name()));
        others
    }

    /// The first `lxvirtbrN` no network has (not libvirt's `virbrN`,
    /// which a libvirt on the same host would take).
    fn free_bridge(&self) -> String {
        (0u32..)
            .map(|n| format!("{BRIDGE_PREFIX}{n}"))
            .find(|name| !self.by_uuid.values().any(|e| e.bridge() == name))
            .unwrap_or_default()
    }

    /// Refuses a definition whose bridge or subnets another network has
    /// (defined, or running with them).
    pub(super) fn check_clashes(&self, def: &NetworkDef) -> Result<(), CoreError> {
        for other in self.others(def.uuid) {
            let live = other.active.as_ref().map(|a| &a.live);
            check_pair(def, &other.def, live)?;
        }
        Ok(())
    }

    /// What `define` would store for `xml`: the definition with its uuid
    /// and bridge filled in, checked against the other networks, and the
    /// network it would update.
    pub(super) fn prepare(&self, xml: &str) -> Result<(NetworkDef, Option<Uuid>), CoreError> {
        let mut def = NetworkDef::from_xml(xml).map_err(CoreError::InvalidNetworkXml)?;
        let name = def.name().to_owned();
        let existing = self.index().claim(xml, &name, &mut def.uuid)?;
        let previous = existing.and_then(|u| self.by_uuid.get(&u));
        if def.bridge.name.is_none() {
            // The bridge it had, so that applying the same document again
            // changes nothing; else a free one.
            let kept = previous.map(|p| p.bridge().to_owned());
            def.bridge.name = Some(kept.unwrap_or_else(|| self.free_bridge()));
        }
        self.check_clashes(&def)?;
        Ok((def, existing))
    }

    /// Every network, as a plan sees it.
    pub(super) fn held(&self) -> HashMap<Uuid, super::plan::Held> {
        self.by_uuid
            .iter()
            .map(|(uuid, entry)| {
                let held = super::plan::Held {
                    name: entry.name().to_owned(),
                    xml: entry.def.to_xml(),
                    persistent: entry.persistent,
                    autostart: entry.autostart,
                    active: entry.active.is_some() || entry.busy == Some("is starting"),
                };
                (*uuid, held)
            })
            .collect()
    }

    /// Summaries of every network, by name.
    pub(super) fn summaries(&self) -> Vec<NetworkSummary> {
        let mut list: Vec<_> = self.by_uuid.values().map(NetworkEntry::summary).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

/// Refuses `def` if it has the bridge or a subnet of `other` (the
/// definition, and `live`, what it runs with).
pub(super) fn check_pair(
    def: &NetworkDef,
    other: &NetworkDef,
    live: Option<&NetworkDef>,
) -> Result<(), CoreError> {
    let bridge = def.bridge.name.as_deref().unwrap_or_default();
    let theirs = || std::iter::once(other).chain(live);
    if theirs().any(|d| d.bridge.name.as_deref() == Some(bridge)) {
        return Err(CoreError::BridgeTaken {
            network: def.name().to_owned(),
            bridge: bridge.to_owned(),
            other: other.name().to_owned(),
        });
    }
    for ip in &def.ips {
        let subnet = ip.subnet();
        if let Some(other_subnet) = theirs()
            .flat_map(|d| d.ips.iter())
            .map(|i| i.subnet())
            .find(|s| s.overlaps(&subnet))
        {
            return Err(CoreError::SubnetOverlap {
                network: def.name().to_owned(),
                subnet: subnet.to_string(),
                other: other.name().to_owned(),
                other_subnet: other_subnet.to_string(),
            });
        }
    }
    Ok(())
}

fn store_error(name: &str) -> impl FnOnce(crate::core::store::StoreError) -> CoreError + '_ {
    move |source| CoreError::Store {
        kind: "network",
        name: name.to_owned(),
        source,
    }
}

impl Manager {
    pub(super) fn define_network(&mut self, xml: &str) -> Result<(NetworkSummary, Seq), CoreError> {
        let (def, existing) = self.networks.prepare(xml)?;
        let name = def.name().to_owned();
        let networks = &self.networks;
        let previous = existing.and_then(|u| networks.by_uuid.get(&u));
        let autostart = previous.is_some_and(|p| p.autostart);
        networks.store.save(&def).map_err(store_error(&name))?;
        let updated = existing.is_some();
        let uuid = def.uuid;
        // An active network keeps running with what it started with.
        let (active, busy) = match existing.and_then(|u| self.networks.by_uuid.remove(&u)) {
            Some(previous) => (previous.active, previous.busy),
            None => (None, None),
        };
        self.networks.insert(NetworkEntry {
            def,
            autostart,
            persistent: true,
            active,
            busy,
        });
        tracing::info!(network = %name, updated, "defined");
        let seq = self.publish_network(uuid, Some(Lifecycle::Defined { updated }));
        Ok((self.networks.get(&Lookup::Uuid(uuid))?.summary(), seq))
    }

    /// An active network goes on running, transient, until destroyed.
    pub(super) fn undefine_network(&mut self, uuid: Uuid) -> Result<Seq, CoreError> {
        let entry = self.networks.get_mut(uuid)?;
        entry.refuse_if_busy()?;
        if !entry.persistent {
            return Err(CoreError::NetworkState {
                network: entry.name().to_owned(),
                problem: "is transient: it goes away when destroyed",
            });
        }
        let name = entry.name().to_owned();
        self.networks
            .store
            .remove(&name)
            .map_err(store_error(&name))?;
        let entry = self.networks.get_mut(uuid)?;
        if entry.active.is_some() {
            entry.persistent = false;
            entry.autostart = false;
            tracing::info!(network = %name, "undefined; runs on until destroyed");
            return Ok(self.publish_network(uuid, Some(Lifecycle::Undefined)));
        }
        self.networks.by_uuid.remove(&uuid);
        self.networks.names.remove(&name);
        tracing::info!(network = %name, "undefined");
        Ok(self.publish(EventKind::NetworkRemoved {
            uuid,
            lifecycle: Lifecycle::Undefined,
        }))
    }

    pub(super) fn set_network_autostart(
        &mut self,
        uuid: Uuid,
        enabled: bool,
    ) -> Result<Seq, CoreError> {
        let entry = self.networks.get_mut(uuid)?;
        if !entry.persistent {
            return Err(CoreError::NetworkState {
                network: entry.name().to_owned(),
                problem: "is transient: define it to start it automatically",
            });
        }
        if entry.autostart == enabled {
            return Ok(self.seq);
        }
        let name = entry.name().to_owned();
        self.networks
            .store
            .set_autostart(&name, enabled)
            .map_err(store_error(&name))?;
        self.networks.get_mut(uuid)?.autostart = enabled;
        Ok(self.publish_network(uuid, None))
    }

    pub(super) fn lookup_network(&self, lookup: &Lookup) -> Result<NetworkSummary, CoreError> {
        self.networks.get(lookup).map(NetworkEntry::summary)
    }

    /// The live definition of an active network, else the persistent one;
    /// `INACTIVE` asks for the persistent one (the next start's).
    pub(super) fn network_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        if flags.0 & !XmlFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let entry = self.networks.get(&Lookup::Uuid(uuid))?;
        if flags.0 & XmlFlags::INACTIVE != 0 {
            return Ok(entry.def.to_xml());
        }
        Ok(entry.live_def().to_xml())
    }

    fn publish_network(&mut self, uuid: Uuid, lifecycle: Option<Lifecycle>) -> Seq {
        match self.networks.by_uuid.get(&uuid) {
            Some(entry) => {
                let summary = entry.summary();
                self.publish(EventKind::NetworkChanged { summary, lifecycle })
            }
            None => self.seq,
        }
    }
}

impl Manager {
    /// Starts a defined network.
    pub(super) fn start_network(&mut self, uuid: Uuid, reply: Option<Reply<Seq>>) {
        let result = (|| {
            let entry = self.networks.get_mut(uuid)?;
            entry.refuse_if_busy()?;
            if entry.active.is_some() {
                return Err(CoreError::NetworkState {
                    network: entry.name().to_owned(),
                    problem: "is already active",
                });
            }
            entry.busy = Some("is starting");
            Ok(entry.def.clone())
        })();
        match result {
            Ok(live) => self.spawn_network_start(uuid, live, None, reply),
            Err(error) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// Defines a transient network from `xml` and starts it.
    pub(super) fn create_network(&mut self, xml: &str, reply: Reply<(Uuid, Seq)>) {
        let created = (|| {
            let mut def = NetworkDef::from_xml(xml).map_err(CoreError::InvalidNetworkXml)?;
            let name = def.name().to_owned();
            if self
                .networks
                .index()
                .claim(xml, &name, &mut def.uuid)?
                .is_some()
            {
                return Err(CoreError::NameTaken {
                    kind: "network",
                    name,
                    existing: def.uuid,
                });
            }
            if def.bridge.name.is_none() {
                def.bridge.name = Some(self.networks.free_bridge());
            }
            self.networks.check_clashes(&def)?;
            Ok(def)
        })();
        match created {
            Ok(def) => {
                let uuid = def.uuid;
                self.networks.insert(NetworkEntry {
                    def: def.clone(),
                    autostart: false,
                    persistent: false,
                    active: None,
                    busy: Some("is starting"),
                });
                let (started, done) = tokio::sync::oneshot::channel();
                self.spawn_network_start(uuid, def, None, Some(started));
                tokio::spawn(async move {
                    let result = done.await.unwrap_or(Err(CoreError::ShuttingDown));
                    let _ = reply.send(result.map(|seq| (uuid, seq)));
                });
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// Runs the driver's start (or reconnect, with the runtime found) and
    /// reports back.
    fn spawn_network_start(
        &mut self,
        uuid: Uuid,
        live: NetworkDef,
        reconnect: Option<NetworkRuntime>,
        reply: Option<Reply<Seq>>,
    ) {
        let driver = self.network_driver.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = match reconnect {
                Some(runtime) => driver.reconnect(live.clone(), runtime).await,
                None => driver.start(live.clone()).await,
            };
            let _ = internal.send(Internal::NetworkStarted {
                uuid,
                live: Box::new(live),
                result,
                reply,
            });
        });
    }

    pub(super) fn network_started(
        &mut self,
        uuid: Uuid,
        live: NetworkDef,
        result: Result<NetworkRuntime, NetworkError>,
        reply: Option<Reply<Seq>>,
    ) {
        let dir = self.network_dir.clone();
        let Ok(entry) = self.networks.get_mut(uuid) else {
            return;
        };
        entry.busy = None;
        let name = entry.name().to_owned();
        let outcome = match result {
            Ok(runtime) => {
                let status = NetworkStatus {
                    uuid,
                    name: name.clone(),
                    persistent: entry.persistent,
                    live_xml: live.to_xml(),
                    dnsmasq: runtime.dnsmasq,
                };
                // The directory is the network driver's; a test driver may
                // not have made it.
                let _ = std::fs::create_dir_all(&dir);
                if let Err(error) = status.save(&dir) {
                    tracing::warn!(network = %name, error = %error_chain(&error), "cannot record the network's live status");
                }
                entry.active = Some(ActiveNetwork { live });
                tracing::info!(network = %name, "started");
                Ok(self.publish_network(uuid, Some(Lifecycle::Started)))
            }
            Err(error) => {
                tracing::error!(network = %name, error = %error_chain(&error), "cannot start");
                if entry.active.take().is_some() {
                    // A takeover that failed: it is down now.
                    let _ = std::fs::remove_file(NetworkStatus::path(&dir, &name));
                }
                if !entry.persistent {
                    self.networks.names.remove(&name);
                    self.networks.by_uuid.remove(&uuid);
                }
                Err(CoreError::Network(error))
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// The running domains with a port on the network `name`.
    fn domains_on_network(&self, name: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .domains
            .values()
            .filter(|e| e.runtime.is_some())
            .filter(|e| {
                e.live_def().devices.interfaces.iter().any(|i| {
                    matches!(&i.source, InterfaceSource::Network { network, .. } if network == name)
                })
            })
            .map(|e| e.name().to_owned())
            .collect();
        users.sort();
        users
    }

    /// Takes an active network down; refused while running domains use
    /// it, unless `force`.
    pub(super) fn destroy_network(&mut self, uuid: Uuid, force: bool, reply: Reply<Seq>) {
        let checked = (|| {
            let entry = self.networks.get(&Lookup::Uuid(uuid))?;
            entry.refuse_if_busy()?;
            let Some(active) = &entry.active else {
                return Err(CoreError::NetworkState {
                    network: entry.name().to_owned(),
                    problem: "is not active",
                });
            };
            let users = self.domains_on_network(entry.name());
            if !users.is_empty() && !force {
                return Err(CoreError::NetworkInUse {
                    network: entry.name().to_owned(),
                    domains: users,
                });
            }
            Ok(active.live.clone())
        })();
        let live = match checked {
            Ok(live) => live,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        if let Ok(entry) = self.networks.get_mut(uuid) {
            entry.busy = Some("is being destroyed");
        }
        let driver = self.network_driver.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let problems = driver.stop(live).await;
            let _ = internal.send(Internal::NetworkStopped {
                uuid,
                problems,
                reply,
            });
        });
    }

    pub(super) fn network_stopped(
        &mut self,
        uuid: Uuid,
        problems: Vec<NetworkError>,
        reply: Reply<Seq>,
    ) {
        let dir = self.network_dir.clone();
        let Ok(entry) = self.networks.get_mut(uuid) else {
            return;
        };
        let name = entry.name().to_owned();
        for problem in &problems {
            // It is down as far as it could be taken down; what is left
            // is the administrator's to remove, and logged here.
            tracing::warn!(network = %name, error = %error_chain(problem), "left behind when destroyed");
        }
        entry.busy = None;
        entry.active = None;
        let _ = std::fs::remove_file(NetworkStatus::path(&dir, &name));
        tracing::info!(network = %name, "destroyed");
        let seq = if entry.persistent {
            self.publish_network(
                uuid,
                Some(Lifecycle::Stopped(
                    crate::core::lifecycle::Reason::Destroyed,
                )),
            )
        } else {
            self.networks.names.remove(&name);
            self.networks.by_uuid.remove(&uuid);
            self.publish(EventKind::NetworkRemoved {
                uuid,
                lifecycle: Lifecycle::Stopped(crate::core::lifecycle::Reason::Destroyed),
            })
        };
        let _ = reply.send(Ok(seq));
    }

    pub(super) fn network_leases(&self, uuid: Uuid) -> Result<Vec<Lease>, CoreError> {
        let entry = self.networks.get(&Lookup::Uuid(uuid))?;
        match &entry.active {
            Some(active) => Ok(self.network_driver.leases(&active.live)),
            None => Ok(Vec::new()),
        }
    }

    /// The leases of an active network, by name (none if it is not).
    pub(super) fn network_leases_by_name(&self, network: &str) -> Vec<Lease> {
        match self.networks.get(&Lookup::Name(network.to_owned())) {
            Ok(NetworkEntry {
                active: Some(active),
                ..
            }) => self.network_driver.leases(&active.live),
            _ => Vec::new(),
        }
    }

    /// The networks a domain's `type='network'` interfaces use, each with
    /// its bridge; refused if one is not active. Each interface's port
    /// joins its network (its address settled, its name in the network's
    /// DNS, its filter elements on their way): the host ends must have
    /// their names already. All of them or none.
    pub(super) fn network_ports(
        &self,
        def: &crate::domain::DomainDef,
    ) -> Result<HashMap<String, NetworkPort>, CoreError> {
        let mut ports = HashMap::new();
        let mut joined = Vec::new();
        let result = (|| {
            for (index, interface) in def.devices.interfaces.iter().enumerate() {
                let InterfaceSource::Network { network, .. } = &interface.source else {
                    continue;
                };
                let unavailable = |problem: String| CoreError::NetworkUnavailable {
                    domain: def.name().to_owned(),
                    index: index + 1,
                    network: network.clone(),
                    problem,
                };
                let entry = self
                    .networks
                    .get(&Lookup::Name(network.clone()))
                    .map_err(|_| {
                        unavailable(
                            "is not defined; define it with 'lxvirt net-define' (see 'lxvirt net-list --all')"
                                .into(),
                        )
                    })?;
                if entry.active.is_none() || entry.busy.is_some() {
                    return Err(unavailable(format!(
                        "is not active; start it with 'lxvirt net-start {network}'"
                    )));
                }
                // Both are filled in before: at define (the MAC) and per
                // start or attach (the host end).
                let (Some(mac), Some(port)) = (interface.mac, interface.target_dev.clone()) else {
                    return Err(unavailable(
                        "cannot take a port without a MAC and a host-side name (a bug in lxvirtd)"
                            .into(),
                    ));
                };
                let request = PortRequest {
                    network: network.clone(),
                    mac,
                    port,
                    domain: def.name().to_owned(),
                    ipv4: interface
                        .ips
                        .iter()
                        .filter_map(|ip| match ip.address {
                            IpAddr::V4(v4) => Some(v4),
                            IpAddr::V6(_) => None,
                        })
                        .collect(),
                };
                let plugged = self.network_driver.add_port(request).map_err(|source| {
                    CoreError::PortRefused {
                        domain: def.name().to_owned(),
                        index: index + 1,
                        network: network.clone(),
                        source: Box::new(source),
                    }
                })?;
                joined.push((network.clone(), mac));
                if ports.contains_key(network) {
                    continue;
                }
                let active = entry.active.as_ref().map_or(&entry.def, |a| &a.live);
                let bridge = self
                    .network_driver
                    .port_bridge(active)
                    .map_err(CoreError::Network)?;
                ports.insert(
                    network.clone(),
                    NetworkPort {
                        bridge,
                        group: plugged.group,
                        ipv6: active.ips.iter().any(|ip| ip.address.is_ipv6()),
                    },
                );
            }
            Ok(())
        })();
        if let Err(error) = result {
            for (network, mac) in joined {
                self.network_driver.remove_port(&network, mac, def.name());
            }
            return Err(error);
        }
        Ok(ports)
    }

    /// The ports of `def`'s `type='network'` interfaces leave their
    /// networks (nothing for those that had none).
    pub(super) fn release_ports(&self, def: &crate::domain::DomainDef) {
        for interface in &def.devices.interfaces {
            if let (InterfaceSource::Network { network, .. }, Some(mac)) =
                (&interface.source, interface.mac)
            {
                self.network_driver.remove_port(network, mac, def.name());
            }
        }
    }

    /// Finds the networks that were active before this daemon started and
    /// takes them over (in `run`, once the task runs).
    pub(super) fn recover_networks(&mut self) -> Vec<(Uuid, NetworkDef, NetworkRuntime)> {
        let mut found = Vec::new();
        for path in LiveStatus::scan(&self.network_dir) {
            let status = match NetworkStatus::load(&path) {
                Ok(status) => status,
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error_chain(&error), "ignoring a network status file");
                    continue;
                }
            };
            let live = match NetworkDef::from_xml(&status.live_xml) {
                Ok(def) => def,
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error, "ignoring a network status file with an unreadable definition");
                    continue;
                }
            };
            if !self.networks.by_uuid.contains_key(&status.uuid) {
                self.networks.insert(NetworkEntry {
                    def: live.clone(),
                    autostart: false,
                    persistent: false,
                    active: None,
                    busy: None,
                });
            }
            let Ok(entry) = self.networks.get_mut(status.uuid) else {
                continue;
            };
            let runtime = NetworkRuntime {
                dnsmasq: status.dnsmasq,
            };
            // Active from now on: domains recovered with it keep their
            // ports, and its takeover fixes what is missing.
            entry.active = Some(ActiveNetwork { live: live.clone() });
            entry.busy = Some("is being taken over after a daemon restart");
            found.push((status.uuid, live, runtime));
        }
        found
    }

    pub(super) fn reconnect_networks(&mut self, found: Vec<(Uuid, NetworkDef, NetworkRuntime)>) {
        for (uuid, live, runtime) in found {
            self.spawn_network_start(uuid, live, Some(runtime), None);
        }
    }

    /// The autostart networks that are not active, by name.
    pub(super) fn autostart_networks(&mut self) -> Vec<Uuid> {
        let mut todo: Vec<(String, Uuid)> = self
            .networks
            .by_uuid
            .values()
            .filter(|e| e.autostart && e.active.is_none() && e.busy.is_none())
            .map(|e| (e.name().to_owned(), e.def.uuid))
            .collect();
        todo.sort();
        todo.into_iter()
            .map(|(name, uuid)| {
                tracing::info!(network = %name, "autostarting");
                uuid
            })
            .collect()
    }
}
