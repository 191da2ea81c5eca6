//! Starting: the table's check, an image root's writable layer, labels
//! and ids, the driver's start, and what it reports back.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Internal, Manager, Reply, now_secs};
use crate::core::lifecycle::{self, InFlight, Operation, Reason, Report};
use crate::core::live::LiveStatus;
use crate::core::types::{CoreError, Lifecycle, Seq};
use crate::domain::{DomainDef, NsShareType};
use crate::driver::{BoxFuture, StartRequest, Started};
use crate::error_chain::error_chain;
use crate::persist::PersistError;
use crate::security::userns::UsernsError;
use crate::storage::RootMount;

impl Manager {
    /// Begins a start (`restart`: the start after a reboot, from the live
    /// definition); `reply` is answered when it is done. Returns whether
    /// it began; a refusal is answered and logged here.
    pub(super) fn start(&mut self, uuid: Uuid, restart: bool, reply: Option<Reply<Seq>>) -> bool {
        match self.begin_start(uuid, restart) {
            Ok(()) => {
                if let (Some(reply), Some(entry)) = (reply, self.domains.get_mut(&uuid)) {
                    entry.start_waiters.push(reply);
                }
                true
            }
            Err(error) => {
                let domain = super::name_for_log(&self.domains, uuid);
                let message = error_chain(&error);
                if restart {
                    tracing::error!(domain = %domain, %uuid, error = %message, "the start after a reboot was refused");
                    // Those who asked for the reboot learn it failed.
                    for waiter in self
                        .domains
                        .get_mut(&uuid)
                        .map(|e| std::mem::take(&mut e.start_waiters))
                        .unwrap_or_default()
                    {
                        let _ = waiter.send(Err(CoreError::StartFailed {
                            domain: domain.clone(),
                            message: message.clone(),
                        }));
                    }
                } else {
                    // The client hears why; a busy host refuses many.
                    tracing::info!(domain = %domain, %uuid, error = %message, "start refused");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
                false
            }
        }
    }

    fn begin_start(&mut self, uuid: Uuid, restart: bool) -> Result<(), CoreError> {
        let operation = if restart {
            Operation::Restart
        } else {
            Operation::Start
        };
        self.entry_mut(uuid)?.check(operation)?;
        self.driver_of(uuid)?;
        let entry = self.entry_mut(uuid)?;
        let name = entry.name().to_owned();
        // A start uses the persistent definition (the live copy goes); a
        // restart the live one.
        let def = if restart {
            entry.live_def().clone()
        } else {
            entry.def.clone()
        };
        let generation = entry.generation + 1;
        let Some(image) = def.root_image().map(str::to_owned) else {
            self.launch(uuid, generation, def, None)?;
            return self.began(uuid, operation, generation);
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
        self.began(uuid, operation, generation)?;
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

    /// The start is under way: the table says so, and reports of older
    /// instances are ignored from now on.
    fn began(
        &mut self,
        uuid: Uuid,
        operation: Operation,
        generation: u64,
    ) -> Result<(), CoreError> {
        let entry = self.entry_mut(uuid)?;
        entry.request(operation)?;
        entry.generation = generation;
        Ok(())
    }

    /// Continues an image-rooted start once its writable layer is ready.
    pub(super) fn prepared(
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
        if let Err(error) = result.and_then(|root| self.launch(uuid, generation, def, Some(root))) {
            self.start_failed(uuid, error);
        }
    }

    /// Resolves the instance's ids and labels and hands it to its driver;
    /// the result comes back as `Launched`. Nothing is left reserved when
    /// this fails.
    fn launch(
        &mut self,
        uuid: Uuid,
        generation: u64,
        def: DomainDef,
        image_root: Option<RootMount>,
    ) -> Result<(), CoreError> {
        let driver = self.driver_of(uuid)?;
        if let Some(error) = driver.unavailable(&def) {
            return Err(error.into());
        }
        // Only the domains whose namespaces it shares: a start costs the
        // same with thousands of domains running as with ten.
        let running_inits: HashMap<String, i32> = def
            .lxc_namespace
            .iter()
            .flat_map(|ns| [&ns.sharenet, &ns.shareipc, &ns.shareuts])
            .flatten()
            .filter(|share| share.share_type == NsShareType::Name)
            .filter_map(|share| {
                let init = self
                    .names
                    .get(&share.value)
                    .and_then(|uuid| self.domains.get(uuid))
                    .and_then(|e| e.runtime.as_ref())?
                    .init_pid;
                Some((share.value.clone(), init))
            })
            .collect();
        // Fresh labels and ids for this instance.
        let mut live = def;
        live.clear_live_labels();
        name_host_ends(&mut live);
        let record = self.resolve_userns(uuid, &mut live)?;
        let unrecorded = |manager: &mut Self| {
            if record.is_some() {
                manager.id_ranges.unrecorded(&uuid);
            }
        };
        // The ports join now, their filter elements on the way while the
        // driver starts the instance (a port passes nothing until its
        // elements are in).
        let networks = match self.network_ports(&live) {
            Ok(networks) => networks,
            Err(error) => {
                unrecorded(self);
                return Err(error);
            }
        };
        let labels = match self.security.prepare(&live) {
            Ok(labels) => labels,
            Err(error) => {
                unrecorded(self);
                self.release_ports(&live);
                return Err(error.into());
            }
        };
        live.seclabel = Some(labels.seclabel.clone());
        let name = live.name().to_owned();
        let request = StartRequest {
            def: live.clone(),
            labels,
            labeler: self.security.file_labeler(),
            content_label: self.security.report().host.as_ref().map(|h| {
                match crate::security::Workload::of(&live) {
                    crate::security::Workload::Container => h.base.content.clone(),
                    crate::security::Workload::Vm | crate::security::Workload::TcgVm => {
                        h.vm_base.content.clone()
                    }
                }
            }),
            image_root,
            running_inits,
            networks,
        };
        let work: BoxFuture<Result<Started, crate::driver::Error>> = match driver.start(request) {
            Ok(work) => work,
            Err(error) => {
                unrecorded(self);
                self.security.release(&name);
                self.release_ports(&live);
                return Err(error.into());
            }
        };
        // The running instance's definition, with its labels.
        self.entry_mut(uuid)?.live = Some(Box::new(live));
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let begin = std::time::Instant::now();
            // A new block's record first, on a blocking thread: its
            // `fsync`s overlap other starts instead of holding the manager.
            let recorded = match record {
                None => Ok(()),
                Some(record) => {
                    let path = record.path().to_owned();
                    tokio::task::spawn_blocking(move || record.write())
                        .await
                        .unwrap_or_else(|join| {
                            Err(UsernsError::State(PersistError::Write {
                                path,
                                source: std::io::Error::other(join.to_string()),
                            }))
                        })
                }
            };
            let result = match recorded {
                Ok(()) => work.await.map_err(CoreError::Driver),
                Err(error) => {
                    let _ = internal.send(Internal::BlockUnrecorded { uuid });
                    Err(error.into())
                }
            };
            tracing::debug!(domain = %name, elapsed_us = begin.elapsed().as_micros() as u64, "driver reported");
            let _ = internal.send(Internal::Launched {
                uuid,
                generation,
                result,
            });
        });
        Ok(())
    }

    pub(super) fn launched(
        &mut self,
        uuid: Uuid,
        generation: u64,
        result: Result<Started, CoreError>,
    ) {
        let run_dir = self.config.run_dir.clone();
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let started = match result {
            Ok(started) => started,
            Err(error) => return self.start_failed(uuid, error),
        };
        let restart = matches!(
            entry.status().in_flight,
            Some(InFlight::Start { restart: true })
        );
        let Started {
            mut runtime,
            exited,
            on_recorded,
        } = started;
        if lifecycle::report(entry.status(), Report::Launched).is_none() {
            // Stale: undone (dropping `on_recorded` does); its end is
            // still waited for, so that it is reaped.
            entry.report(Report::Launched);
            drop(on_recorded);
            tokio::spawn(exited);
            return;
        }
        runtime.started_at = now_secs();
        let status = LiveStatus {
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
            rebooted: restart,
        };
        if let Err(source) = status.save(&run_dir) {
            // A daemon restart would not find it: undone (dropping
            // `on_recorded` does), the start fails.
            drop(on_recorded);
            tokio::spawn(exited);
            let domain = entry.name().to_owned();
            return self.start_failed(uuid, CoreError::LiveStatus { domain, source });
        }
        entry.report(Report::Launched);
        // Recorded: the driver need not undo the start should the daemon
        // die from here on (before any caller hears of it).
        if let Some(on_recorded) = on_recorded {
            on_recorded();
        }
        tracing::info!(domain = %entry.name(), %uuid, pid = runtime.init_pid, "started");
        entry.set_runtime(runtime, &self.tenants);
        entry.reason = if restart {
            Reason::Rebooted
        } else {
            Reason::Booted
        };
        let waiters = std::mem::take(&mut entry.start_waiters);
        self.watch(uuid, generation, exited);
        let lifecycle = if restart {
            Lifecycle::Rebooted
        } else {
            Lifecycle::Started
        };
        let seq = self.publish_change(uuid, Some(lifecycle));
        for waiter in waiters {
            let _ = waiter.send(Ok(seq));
        }
    }

    /// A start in flight failed: the domain is shut off again (a transient
    /// one goes away) and everyone waiting for the start gets the error.
    pub(super) fn start_failed(&mut self, uuid: Uuid, error: CoreError) {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        entry.report(Report::LaunchFailed);
        entry.reason = Reason::Failed;
        let live = entry.live.take();
        let waiters = std::mem::take(&mut entry.start_waiters);
        let name = entry.name().to_owned();
        let transient = !entry.persistent;
        tracing::error!(domain = %name, %uuid, error = %error_chain(&error), "start failed");
        if let Some(live) = live {
            self.release_ports(&live);
        }
        self.security.release(&name);
        if let Ok(driver) = self.driver_of(uuid) {
            driver.release(&name);
        }
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
            let _ = waiter.send(Err(CoreError::StartFailed {
                domain: name.clone(),
                message: message.clone(),
            }));
        }
    }

    /// Watches an instance; its end comes back as `Exited`.
    pub(super) fn watch(&self, uuid: Uuid, generation: u64, exited: BoxFuture<()>) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            exited.await;
            let _ = internal.send(Internal::Exited { uuid, generation });
        });
    }
}

/// Gives each interface with a host end (a veth) and no `<target dev>`
/// a name for this run: `lxv` and 8 random hex digits, unique among the
/// host's interfaces with overwhelming odds (a clash fails the start
/// with "exists already"). It shows in the live XML only, as libvirt's
/// `vnetN` does.
fn name_host_ends(live: &mut crate::domain::DomainDef) {
    live.change_interfaces(needs_host_end_name, |_, interface| name_host_end(interface));
}

/// [`name_host_ends`] for one interface (a hot-plugged one too).
pub(super) fn name_host_end(interface: &mut crate::domain::Interface) {
    if needs_host_end_name(interface) {
        interface.target_dev = Some(format!("lxv{:08x}", rand::random::<u32>()));
    }
}

/// An interface with a host end (a veth) and no `<target dev>`.
fn needs_host_end_name(interface: &crate::domain::Interface) -> bool {
    let has_host_end = !matches!(
        interface.source,
        crate::domain::InterfaceSource::Direct { .. }
    );
    has_host_end && interface.target_dev.is_none()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::name_host_ends;
    use crate::domain::DomainDef;

    fn def(devices: &str) -> DomainDef {
        DomainDef::from_xml(&format!(
            "<domain type='lxc'><name>web</name><memory unit='MiB'>64</memory>\
             <os><type>exe</type><init>/bin/sh</init></os>\
             <devices>{devices}<console type='pty'/></devices></domain>"
        ))
        .unwrap()
    }

    /// A running domain's live copy shares its definition's devices
    /// until one of them changes: here until an interface gets the name
    /// of its host end.
    #[test]
    fn a_live_copy_shares_the_devices_until_an_interface_is_named() {
        let no_interface = def("");
        let mut live = no_interface.clone();
        name_host_ends(&mut live);
        assert!(Arc::ptr_eq(&no_interface.devices, &live.devices));
        let plugged = crate::driver::plug_networks(&live, &HashMap::new());
        assert!(Arc::ptr_eq(&no_interface.devices, &plugged.devices));

        let named =
            def("<interface type='bridge'><source bridge='br0'/><target dev='web0'/></interface>");
        let mut live = named.clone();
        name_host_ends(&mut live);
        assert!(Arc::ptr_eq(&named.devices, &live.devices));

        let unnamed = def("<interface type='bridge'><source bridge='br0'/></interface>");
        let mut live = unnamed.clone();
        name_host_ends(&mut live);
        assert!(!Arc::ptr_eq(&unnamed.devices, &live.devices));
        let name = live.devices.interfaces[0].target_dev.as_deref().unwrap();
        assert!(name.starts_with("lxv"), "{name}");
        assert_eq!(unnamed.devices.interfaces[0].target_dev, None);
    }
}
