//! Stopping: shutdown, destroy, reboot, an instance that ends by itself,
//! and the lifecycle actions that follow.

use std::time::Duration;

use uuid::Uuid;

use super::{Internal, Manager, Reply};
use crate::core::lifecycle::{Ending, InFlight, Operation, Reason, Report, State};
use crate::core::live::LiveStatus;
use crate::core::types::{CoreError, Lifecycle, Lookup, Seq};
use crate::domain::LifecycleAction;
use crate::driver::{Exit, Request, ShutdownMode};
use crate::error_chain::error_chain;

/// How an instance is to stop.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    /// Asked as `mode` says, forcibly after `grace`.
    Shutdown {
        grace: Duration,
        mode: ShutdownMode,
    },
    Destroy,
    /// As a shutdown, then started again.
    Reboot {
        grace: Duration,
        mode: ShutdownMode,
    },
    /// Destroyed, then started again.
    Reset,
}

impl Stop {
    fn operation(self) -> Operation {
        match self {
            Stop::Shutdown { .. } => Operation::Shutdown,
            Stop::Destroy => Operation::Destroy,
            Stop::Reboot { .. } => Operation::Reboot,
            Stop::Reset => Operation::Reset,
        }
    }

    /// Whether the instance starts again: the caller waits for that.
    fn restarts(self) -> bool {
        matches!(self, Stop::Reboot { .. } | Stop::Reset)
    }
}

impl Manager {
    /// Shutdown, destroy, reboot, or a reset done as an immediate stop and
    /// a restart.
    pub(super) fn stop(&mut self, uuid: Uuid, stop: Stop, reply: Reply<Seq>) {
        let driver = match self.driver_of(uuid) {
            Ok(driver) => driver,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        if let Stop::Shutdown { mode, .. } | Stop::Reboot { mode, .. } = stop
            && entry.state() == State::Running
            && let Err(error) =
                driver.check_shutdown_mode(entry.live_def(), entry.runtime.as_ref(), mode)
        {
            let _ = reply.send(Err(CoreError::Driver(error)));
            return;
        }
        let before = entry.status();
        if let Err(error) = entry.request(stop.operation()) {
            let _ = reply.send(Err(error));
            return;
        }
        let name = entry.name().to_owned();
        if before.state == State::Crashed {
            // Preserved remains: the processes are gone already.
            entry.clear_runtime(&self.tenants);
            driver.release(&name);
            let seq = self.finish_stopped(uuid, Reason::Destroyed);
            let _ = reply.send(Ok(seq));
            return;
        }
        if stop.restarts() {
            entry.start_waiters.push(reply);
            if before.in_flight == Some(InFlight::Reboot) {
                // One reboot is under way already; this one waits for it.
                return;
            }
        } else {
            entry.stop_waiters.push(reply);
        }
        let Some(runtime) = entry.runtime.clone() else {
            return;
        };
        let request = match stop {
            Stop::Shutdown { grace, mode } | Stop::Reboot { grace, mode } => {
                Request::Shutdown { grace, mode }
            }
            Stop::Destroy | Stop::Reset => Request::Destroy,
        };
        let work = driver.request(&name, &runtime, request);
        tokio::spawn(async move {
            if let Err(error) = work.await {
                // The driver tried what it could; the instance's exit
                // (watched separately) answers the waiters.
                tracing::error!(domain = %name, %uuid, error = %error_chain(&error), "cannot stop the instance");
            }
        });
    }

    /// A reset: in place by drivers that can (a VM's qemu resets the
    /// machine), else an immediate stop and a restart.
    pub(super) fn reset(&mut self, uuid: Uuid, reply: Reply<Seq>) {
        match self.driver_of(uuid) {
            Ok(driver) if driver.resets_in_place() => {}
            Ok(_) => return self.stop(uuid, Stop::Reset, reply),
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        }
        let generation = self.domains.get(&uuid).map_or(0, |e| e.generation);
        let internal = self.internal.clone();
        self.ask_driver(uuid, Operation::Reset, Request::Reset, move |result| {
            let _ = internal.send(Internal::Reset {
                uuid,
                generation,
                result: result.map(drop),
                reply,
            });
        });
    }

    pub(super) fn was_reset(
        &mut self,
        uuid: Uuid,
        generation: u64,
        result: Result<(), CoreError>,
        reply: Reply<Seq>,
    ) {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            let _ = reply.send(Err(CoreError::NoSuchDomain(Lookup::Uuid(uuid))));
            return;
        };
        // The same instance, still resetting: done either way. (Stopped
        // meanwhile: its exit ended the reset.)
        let current = entry.generation == generation && entry.report(Report::Reset);
        if let Err(error) = result {
            let _ = reply.send(Err(error));
            return;
        }
        if !current {
            let _ = reply.send(Err(CoreError::StoppedMeanwhile {
                domain: entry.name().to_owned(),
            }));
            return;
        }
        tracing::info!(domain = %entry.name(), %uuid, "reset");
        let seq = self.publish_change(uuid, Some(Lifecycle::Reset));
        let _ = reply.send(Ok(seq));
    }

    /// The instance of `generation` is gone: find out how, then apply the
    /// domain's `on_*` action.
    pub(super) fn exited(&mut self, uuid: Uuid, generation: u64) {
        let Some(entry) = self.domains.get(&uuid) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let Some(runtime) = entry.runtime.clone() else {
            return;
        };
        let Ok(driver) = self.driver_of(uuid) else {
            return;
        };
        let name = entry.name().to_owned();
        let ended = driver.collect_exit(&name, &runtime, entry.live_def());
        for problem in &ended.problems {
            tracing::warn!(domain = %name, %uuid, problem = %problem, "cleanup after the instance left something");
        }
        if ended.exit == Exit::Vanished {
            tracing::warn!(domain = %name, %uuid, "the instance's watcher vanished without an exit record");
        }
        let _ = std::fs::remove_file(LiveStatus::path(&self.config.run_dir, &name));
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return;
        };
        let def = entry.live_def();
        let (reason, action) = match ended.exit {
            Exit::Destroyed => (Reason::Destroyed, LifecycleAction::Destroy),
            Exit::Shutdown => (Reason::Shutdown, LifecycleAction::Destroy),
            Exit::PoweredOff => (Reason::Shutdown, def.on_poweroff),
            Exit::Rebooted => (Reason::Shutdown, def.on_reboot),
            Exit::Crashed | Exit::Vanished => (Reason::Crashed, def.on_crash),
            Exit::Unknown => (Reason::Unknown, LifecycleAction::Destroy),
        };
        let ending = if matches!(
            entry.status().in_flight,
            Some(InFlight::Reboot | InFlight::Reset)
        ) {
            Ending::Restart
        } else {
            match action {
                LifecycleAction::Restart
                | LifecycleAction::RenameRestart
                | LifecycleAction::CoredumpRestart => Ending::Restart,
                // Refused at define for containers and at start for
                // virtual machines; should a crashed guest end anyway, its
                // remains are kept as for preserve.
                LifecycleAction::Preserve | LifecycleAction::PreserveRunning => Ending::Preserve,
                LifecycleAction::Destroy | LifecycleAction::CoredumpDestroy => Ending::Shutoff,
            }
        };
        if !entry.report(Report::Exited(ending)) {
            return;
        }
        tracing::info!(domain = %name, %uuid, reason = %reason, ending = ?ending, "stopped");
        entry.clear_runtime(&self.tenants);
        // Its ports leave their networks with it: names, addresses and
        // filter elements.
        let live = entry.live_def().clone();
        self.release_ports(&live);
        // The pair is free for the next start; files keep their labels.
        self.security.release(&name);
        match ending {
            Ending::Preserve => {
                if let Some(entry) = self.domains.get_mut(&uuid) {
                    entry.reason = Reason::Crashed;
                }
                let seq = self.publish_change(uuid, Some(Lifecycle::Crashed));
                self.reply_stop_waiters(uuid, seq);
            }
            Ending::Restart => {
                if let Some(entry) = self.domains.get_mut(&uuid) {
                    entry.reason = reason;
                }
                let seq = self.publish_change(uuid, Some(Lifecycle::Stopped(reason)));
                self.reply_stop_waiters(uuid, seq);
                self.start(uuid, true, None);
            }
            Ending::Shutoff => {
                self.finish_stopped(uuid, reason);
            }
        }
    }

    /// Marks a shut off domain's reason and live definition (removing a
    /// transient domain) and answers everyone waiting for that.
    pub(super) fn finish_stopped(&mut self, uuid: Uuid, reason: Reason) -> Seq {
        let Some(entry) = self.domains.get_mut(&uuid) else {
            return self.seq;
        };
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
}
