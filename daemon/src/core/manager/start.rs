//! Starting: the checks, an image root's writable layer, the launch spec,
//! labels and relabelling, and what the monitor reports back.

use super::*;

impl Manager {
    /// Begins a start; the reply (if any) is sent when it is done. An error
    /// is also sent to the reply before being returned.
    pub(super) fn start(&mut self, uuid: Uuid, reply: Option<Reply<Seq>>) -> Result<(), CoreError> {
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

    pub(super) fn begin_start(&mut self, uuid: Uuid) -> Result<(), CoreError> {
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
        if let Err(error) = result.and_then(|root| self.launch(uuid, def, Some(root))) {
            self.start_failed(uuid, error);
        }
    }

    /// Converts `def` and launches the container; the result comes back as
    /// `Launched`. `image_root` is the prepared root of an image domain.
    pub(super) fn launch(
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

    pub(super) fn launched(
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
    pub(super) fn start_failed(&mut self, uuid: Uuid, error: CoreError) {
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
    pub(super) fn watch(&self, uuid: Uuid, generation: u64, pidfd: OwnedFd) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            driver::wait_exit(pidfd).await;
            let _ = internal.send(Internal::MonitorExited { uuid, generation });
        });
    }

    // ---- stop -------------------------------------------------------------
}

/// A tree to give one label before the container starts.
#[derive(Debug)]
pub(super) struct RelabelJob {
    pub(super) root: PathBuf,
    pub(super) label: String,
    /// Label it once: an image layer never changes, so when the directory
    /// holding it has the label (set after the tree) it is skipped.
    pub(super) once: bool,
}

/// What to relabel before a start: a root directory of the container's
/// own (dynamic labels, or relabel='yes') gets its image label; an image
/// root's layers get the shared read-only content label once, and its
/// writable layer the container's image label at every start (overlayfs
/// checks the real files too, and the writable layer is the container's
/// own, its level new with each dynamic label).
pub(super) fn relabel_jobs(spec: &ContainerSpec, content_label: Option<&str>) -> Vec<RelabelJob> {
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
