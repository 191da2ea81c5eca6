//! Definitions: define, create (transient), undefine, autostart, the XML,
//! and the id block a start resolves.

use std::collections::HashSet;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::entry::Entry;
use super::{Internal, Manager, Reply, name_for_log};
use crate::core::lifecycle::{Operation, Reason, Status};
use crate::core::types::{
    CoreError, DomainSummary, EventKind, Lifecycle, Lookup, Seq, UndefineFlags, XmlFlags,
};
use crate::domain::{DomainDef, DomainType, MacAddr, Userns, UsernsMode};
use crate::error_chain::error_chain;
use crate::security::userns::{self, BlockRecord};

impl Manager {
    /// What `define` would store for `xml`: the definition with its uuid
    /// and MACs filled in, and the domain it would update.
    pub(super) fn prepare_define(&self, xml: &str) -> Result<(DomainDef, Option<Uuid>), CoreError> {
        let mut def = DomainDef::from_xml(xml)?;
        let name = def.name.to_string();
        let existing = self.index().claim(xml, &name, &mut def.uuid)?;
        let previous = existing.and_then(|u| self.domains.get(&u));
        if let Some(entry) = previous {
            entry.check(Operation::Define)?;
        }
        let macs = self.macs_in_use(def.uuid);
        fill_macs(&mut def, previous.map(|e| &e.def), &macs);
        Ok((def, existing))
    }

    pub(super) fn define(&mut self, xml: &str) -> Result<(DomainSummary, Seq), CoreError> {
        let (def, existing) = self.prepare_define(xml)?;
        let name = def.name.to_string();
        self.store.save(&def).map_err(|source| CoreError::Store {
            kind: "domain",
            name: name.clone(),
            source,
        })?;
        let updated = existing.is_some();
        let uuid = def.uuid;
        match existing {
            Some(uuid) => {
                let entry = self.entry_mut(uuid)?;
                if (entry.state().is_active() || entry.starting()) && entry.live.is_none() {
                    // The running instance keeps the definition it started with.
                    entry.live = Some(Box::new(std::mem::replace(&mut entry.def, def)));
                } else {
                    entry.def = def;
                }
                entry.persistent = true;
                self.keep_ids(uuid, true);
            }
            None => self.insert(Entry::new(def, true, false)),
        }
        tracing::info!(domain = %name_for_log(&self.domains, uuid), %uuid, updated, "defined");
        let seq = self.publish_change(uuid, Some(Lifecycle::Defined { updated }));
        let summary = self
            .lookup(&Lookup::Uuid(uuid))?
            .summary(self.config.default_userns);
        Ok((summary, seq))
    }

    pub(super) fn create(&mut self, xml: &str, reply: Reply<(Uuid, Seq)>) {
        let mut def = match DomainDef::from_xml(xml) {
            Ok(def) => def,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let macs = self.macs_in_use(def.uuid);
        fill_macs(&mut def, None, &macs);
        let name = def.name.to_string();
        if let Some(&existing) = self.names.get(&name) {
            let _ = reply.send(Err(CoreError::NameTaken {
                kind: "domain",
                name,
                existing,
            }));
            return;
        }
        if let Some(other) = self.domains.get(&def.uuid) {
            let _ = reply.send(Err(CoreError::UuidTaken {
                kind: "domain",
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
        if !self.start(uuid, false, Some(start_reply))
            && !self.domains.get(&uuid).is_some_and(|e| e.starting())
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

    pub(super) fn undefine(&mut self, uuid: Uuid, flags: UndefineFlags) -> Result<Seq, CoreError> {
        if flags.0 & !UndefineFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        if !entry.persistent {
            return Err(CoreError::NotPersistent(name));
        }
        // The table refuses it while a commit reads the writable layer.
        entry.check(Operation::Undefine)?;
        // Before the definition goes: a daemon killed in between leaves a
        // layer whose mark says whether it was meant to stay.
        if let Ok(images) = self.config.images.get() {
            images
                .mark_writable_kept(&name, flags.keep_writable_layer())
                .map_err(|source| CoreError::DomainStorage {
                    domain: name.clone(),
                    action: "cannot record whether its writable layer stays".into(),
                    source: Box::new(source),
                })?;
        }
        self.store
            .remove(&name)
            .map_err(|source| CoreError::Store {
                kind: "domain",
                name: name.clone(),
                source,
            })?;
        tracing::info!(domain = %name, %uuid, "undefined");
        let entry = self.entry_mut(uuid)?;
        if entry.state().is_active() || entry.starting() {
            // Transient now: its writable layer and ids go when it stops.
            entry.persistent = false;
            entry.autostart = false;
            entry.keep_writable = flags.keep_writable_layer();
            self.keep_ids(uuid, false);
            return Ok(self.publish_change(uuid, Some(Lifecycle::Undefined)));
        }
        entry.keep_writable = flags.keep_writable_layer();
        // What its driver keeps (logs) goes with the definition.
        if let Ok(driver) = self.driver_of(uuid) {
            driver.forget(&name);
        }
        Ok(self.remove(uuid, Lifecycle::Undefined))
    }

    /// How the instance about to start maps its ids, written into its live
    /// definition: `<idmap>` as given; else the domain's `<lxvirt:userns>`
    /// or the daemon's default, with the domain's block of host ids for
    /// mode='auto' (kept while a persistent domain is defined). A virtual
    /// machine always gets a block: its qemu runs as the block's first id,
    /// a uid no other domain has. A persistent domain's new block comes
    /// with its record, for the start to write off this task (see
    /// [`IdRanges::assign_unrecorded`](crate::security::userns::IdRanges::assign_unrecorded)).
    pub(super) fn resolve_userns(
        &mut self,
        uuid: Uuid,
        def: &mut DomainDef,
    ) -> Result<Option<BlockRecord>, CoreError> {
        let vm = def.domain_type != DomainType::Lxc;
        if !vm && def.idmap.is_some() {
            return Ok(None);
        }
        let mode = if vm {
            UsernsMode::Auto
        } else {
            def.userns.map_or(self.config.default_userns, |u| u.mode)
        };
        let (allocated, record) = match mode {
            UsernsMode::Host => (None, None),
            UsernsMode::Auto => {
                let persistent = self.domains.get(&uuid).is_some_and(|e| e.persistent);
                let (start, record) =
                    self.id_ranges
                        .assign_unrecorded(uuid, def.name(), persistent)?;
                (Some((start, userns::BLOCK)), record)
            }
        };
        def.userns = Some(Userns { mode, allocated });
        Ok(record)
    }

    /// Whether a domain's id block outlives its instance.
    pub(super) fn keep_ids(&mut self, uuid: Uuid, persistent: bool) {
        if let Err(error) = self.id_ranges.set_persistent(&uuid, persistent) {
            tracing::warn!(domain = %name_for_log(&self.domains, uuid), error = %error_chain(&error), "cannot record its host ids");
        }
    }

    /// Forgets a domain; its writable layer goes too unless it was kept.
    pub(super) fn remove(&mut self, uuid: Uuid, lifecycle: Lifecycle) -> Seq {
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
    pub(super) fn remove_writable_layer(&mut self, domain: &str) {
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

    pub(super) fn set_autostart(&mut self, uuid: Uuid, enabled: bool) -> Result<Seq, CoreError> {
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
            .map_err(|source| CoreError::Store {
                kind: "domain",
                name,
                source,
            })?;
        self.entry_mut(uuid)?.autostart = enabled;
        Ok(self.publish_change(uuid, None))
    }

    pub(super) fn get_xml(&self, uuid: Uuid, flags: XmlFlags) -> Result<String, CoreError> {
        if flags.0 & !XmlFlags::ALL != 0 {
            return Err(CoreError::InvalidFlags(flags.0));
        }
        let entry = self.lookup(&Lookup::Uuid(uuid))?;
        // While running, the live definition is shown; the persistent one
        // (perhaps updated since the start) with INACTIVE.
        if flags.inactive() {
            Ok(entry.def.to_xml())
        } else if entry.state().is_active() {
            Ok(entry.live_def().to_live_xml())
        } else {
            Ok(entry.def.to_xml())
        }
    }

    pub(super) fn autostart(&mut self) {
        let marker = self.config.run_dir.join("autostarted");
        if marker.exists() {
            // Once per host boot (the run directory is a tmpfs): a daemon
            // restart must not start what the user stopped since.
            return;
        }
        let _ = std::fs::write(&marker, b"");
        // Networks first: the domains' ports need them.
        let networks = self.autostart_networks();
        if networks.is_empty() {
            return self.autostart_domains();
        }
        let mut waiting = Vec::new();
        for uuid in networks {
            let (reply, done) = tokio::sync::oneshot::channel();
            self.start_network(uuid, Some(reply));
            waiting.push(done);
        }
        let internal = self.internal.clone();
        tokio::spawn(async move {
            for done in waiting {
                // A failure was logged by the network's start.
                let _ = done.await;
            }
            let _ = internal.send(super::Internal::AutostartDomains);
        });
    }

    pub(super) fn autostart_domains(&mut self) {
        let mut todo: Vec<(String, Uuid)> = self
            .domains
            .values()
            .filter(|e| e.autostart && e.status() == Status::SHUTOFF)
            .map(|e| (e.name().to_owned(), e.def.uuid))
            .collect();
        todo.sort();
        for (name, uuid) in todo {
            tracing::info!(domain = %name, %uuid, "autostarting");
            // A refusal is logged by `start`.
            self.start(uuid, false, None);
        }
    }
}

impl Manager {
    /// The MAC addresses of every other domain's interfaces.
    pub(super) fn macs_in_use(&self, except: Uuid) -> HashSet<MacAddr> {
        self.domains
            .values()
            .filter(|e| e.def.uuid != except)
            .flat_map(|e| [Some(&e.def), e.live.as_deref()].into_iter().flatten())
            .flat_map(|def| def.devices.interfaces.iter().filter_map(|i| i.mac))
            .collect()
    }
}

/// Gives every interface without a `<mac>` one, kept in the persistent
/// definition as libvirt does: the one the same interface had in the
/// previous definition (same position and type), so that applying the same
/// document again changes nothing, else a new `52:54:00:xx:xx:xx` that no
/// other interface has.
pub(super) fn fill_macs(
    def: &mut DomainDef,
    previous: Option<&DomainDef>,
    taken: &HashSet<MacAddr>,
) {
    let mut taken: HashSet<MacAddr> = taken
        .iter()
        .copied()
        .chain(def.devices.interfaces.iter().filter_map(|i| i.mac))
        .collect();
    def.change_interfaces(
        |interface| interface.mac.is_none(),
        |index, interface| {
            let kept = previous
                .and_then(|p| p.devices.interfaces.get(index))
                .filter(|old| old.source.type_str() == interface.source.type_str())
                .and_then(|old| old.mac)
                .filter(|mac| !taken.contains(mac));
            let mac = kept.unwrap_or_else(|| {
                loop {
                    let tail: [u8; 3] = rand::random();
                    let mac = MacAddr([0x52, 0x54, 0x00, tail[0], tail[1], tail[2]]);
                    if !taken.contains(&mac) {
                        break mac;
                    }
                }
            });
            taken.insert(mac);
            interface.mac = Some(mac);
        },
    );
}
