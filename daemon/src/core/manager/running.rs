//! Requests to a running container's monitor: freeze and thaw, consoles,
//! enter, statistics.

use super::*;

impl Manager {
    pub(super) fn freeze(&mut self, uuid: Uuid, freeze: bool, reply: Reply<Seq>) {
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

    pub(super) fn frozen(
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
    pub(super) fn ask_monitor<T: Send + 'static>(
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

    pub(super) fn open_console(&mut self, uuid: Uuid, index: u32, reply: Reply<OwnedFd>) {
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
    pub(super) fn enter(
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

    pub(super) fn stats(&mut self, uuid: Uuid, reply: Reply<DomainStats>) {
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
