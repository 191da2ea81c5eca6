//! Stopping: shutdown, destroy, reboot, an init that exits, and the
//! lifecycle actions that follow.

use super::*;

impl Manager {
    /// Shutdown (grace given), destroy (no grace), or reboot.
    pub(super) fn stop(
        &mut self,
        uuid: Uuid,
        grace: Option<Duration>,
        reboot: bool,
        reply: Reply<Seq>,
    ) {
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

    pub(super) fn exited(&mut self, uuid: Uuid, generation: u64) {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        if entry.generation != generation || entry.runtime.is_none() {
            return;
        }
        let name = entry.name().to_owned();
        let record = match self.driver.take_exit_record(&name) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(domain = %name, error = %error_chain(&error), "cannot read the exit record");
                None
            }
        };
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
    pub(super) fn finish_stopped(&mut self, uuid: Uuid, reason: Reason) -> Seq {
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

    pub(super) fn reply_stop_waiters(&mut self, uuid: Uuid, seq: Seq) {
        if let Some(entry) = self.domains.get_mut(&uuid) {
            for waiter in std::mem::take(&mut entry.stop_waiters) {
                let _ = waiter.send(Ok(seq));
            }
        }
    }

    /// Removes a container's cgroup when its monitor could not.
    pub(super) fn cleanup_cgroup(&self, uuid: Uuid) {
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
}
