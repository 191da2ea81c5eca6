//! Network definitions: define, undefine, autostart, lookup, the XML.
//!
//! Networks are only defined for now: none is active, so none has a state
//! to check. A define refuses what would clash with another defined
//! network once both run: the same bridge, or overlapping subnets.

use std::collections::HashMap;
use std::path::PathBuf;

use uuid::Uuid;

use super::Manager;
use super::identity::Index;
use crate::core::store::{Loaded, Store};
use crate::core::types::{CoreError, EventKind, Lifecycle, Lookup, NetworkSummary, Seq, XmlFlags};
use crate::domain::NetworkDef;

/// The prefix of the bridge names the daemon picks.
const BRIDGE_PREFIX: &str = "lxvirtbr";

/// A network as the manager holds it.
#[derive(Debug)]
pub(super) struct NetworkEntry {
    /// Its bridge name is always set (given, or picked at define time).
    def: NetworkDef,
    autostart: bool,
}

impl NetworkEntry {
    fn name(&self) -> &str {
        self.def.name()
    }

    fn bridge(&self) -> &str {
        self.def.bridge.name.as_deref().unwrap_or_default()
    }

    fn summary(&self) -> NetworkSummary {
        NetworkSummary {
            uuid: self.def.uuid,
            name: self.name().to_owned(),
            active: false,
            persistent: true,
            autostart: self.autostart,
            bridge: self.bridge().to_owned(),
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

    /// Refuses a definition whose bridge or subnets another network has.
    fn check_clashes(&self, def: &NetworkDef) -> Result<(), CoreError> {
        let bridge = def.bridge.name.as_deref().unwrap_or_default();
        for other in self.others(def.uuid) {
            if other.bridge() == bridge {
                return Err(CoreError::BridgeTaken {
                    network: def.name().to_owned(),
                    bridge: bridge.to_owned(),
                    other: other.name().to_owned(),
                });
            }
            for ip in &def.ips {
                let subnet = ip.subnet();
                if let Some(theirs) = other
                    .def
                    .ips
                    .iter()
                    .map(|i| i.subnet())
                    .find(|s| s.overlaps(&subnet))
                {
                    return Err(CoreError::SubnetOverlap {
                        network: def.name().to_owned(),
                        subnet: subnet.to_string(),
                        other: other.name().to_owned(),
                        other_subnet: theirs.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Summaries of every network, by name.
    pub(super) fn summaries(&self) -> Vec<NetworkSummary> {
        let mut list: Vec<_> = self.by_uuid.values().map(NetworkEntry::summary).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
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
        let mut def = NetworkDef::from_xml(xml).map_err(CoreError::InvalidNetworkXml)?;
        let name = def.name().to_owned();
        let networks = &self.networks;
        let existing = networks.index().claim(xml, &name, &mut def.uuid)?;
        let previous = existing.and_then(|u| networks.by_uuid.get(&u));
        if def.bridge.name.is_none() {
            // The bridge it had, so that applying the same document again
            // changes nothing; else a free one.
            let kept = previous.map(|p| p.bridge().to_owned());
            def.bridge.name = Some(kept.unwrap_or_else(|| networks.free_bridge()));
        }
        networks.check_clashes(&def)?;
        let autostart = previous.is_some_and(|p| p.autostart);
        networks.store.save(&def).map_err(store_error(&name))?;
        let updated = existing.is_some();
        let uuid = def.uuid;
        self.networks.insert(NetworkEntry { def, autostart });
        tracing::info!(network = %name, updated, "defined");
        let seq = self.publish_network(uuid, Some(Lifecycle::Defined { updated }));
        Ok((self.networks.get(&Lookup::Uuid(uuid))?.summary(), seq))
    }

    pub(super) fn undefine_network(&mut self, uuid: Uuid) -> Result<Seq, CoreError> {
        let name = self.networks.get_mut(uuid)?.name().to_owned();
        self.networks
            .store
            .remove(&name)
            .map_err(store_error(&name))?;
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

    /// The definition; no flag changes it yet (a network is never active),
    /// but unknown ones are refused as for domains.
    pub(super) fn network_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        if flags.0 & !XmlFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        Ok(self.networks.get(&Lookup::Uuid(uuid))?.def.to_xml())
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
