//! Requests to a running instance through its driver: freeze and thaw,
//! consoles, enter, statistics, its interfaces' addresses and counters.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use uuid::Uuid;

use super::{Internal, Manager, Reply};
use crate::core::lifecycle::{Operation, Reason, Report};
use crate::core::live::LiveStatus;
use crate::core::types::{
    AddressSource, CoreError, DomainStats, InterfaceAddresses, Lifecycle, Lookup, Seq,
};
use crate::domain::InterfaceSource;
use crate::driver::{self, BoxFuture, GuestInterface, InterfaceCounters, Request, Response};
use crate::error_chain::error_chain;

impl Manager {
    pub(super) fn freeze(&mut self, uuid: Uuid, freeze: bool, reply: Reply<Seq>) {
        let operation = if freeze {
            Operation::Suspend
        } else {
            Operation::Resume
        };
        let request = if freeze {
            Request::Freeze
        } else {
            Request::Thaw
        };
        let generation = self.domains.get(&uuid).map_or(0, |e| e.generation);
        let internal = self.internal.clone();
        self.ask_driver(uuid, operation, request, move |result| {
            let _ = internal.send(Internal::Frozen {
                uuid,
                generation,
                frozen: freeze,
                result: result.map(|_| ()),
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
        let report = if frozen {
            Report::Frozen
        } else {
            Report::Thawed
        };
        if entry.generation != generation || entry.runtime.is_none() || !entry.report(report) {
            let _ = reply.send(Err(CoreError::StoppedMeanwhile {
                domain: entry.name().to_owned(),
            }));
            return;
        }
        let (reason, lifecycle) = if frozen {
            (Reason::User, Lifecycle::Suspended)
        } else {
            (Reason::Unpaused, Lifecycle::Resumed)
        };
        entry.reason = reason;
        tracing::info!(domain = %entry.name(), %uuid, state = %entry.state(), "{}", if frozen { "suspended" } else { "resumed" });
        let path = LiveStatus::path(&run_dir, entry.name());
        match LiveStatus::load(&path) {
            Ok(mut status) => {
                status.paused = frozen;
                if let Err(error) = status.save(&run_dir) {
                    tracing::warn!(domain = %entry.name(), error = %error_chain(&error), "cannot record the pause in the live status");
                }
            }
            Err(error) => {
                tracing::warn!(domain = %entry.name(), error = %error_chain(&error), "cannot record the pause in the live status")
            }
        }
        let seq = self.publish_change(uuid, Some(lifecycle));
        let _ = reply.send(Ok(seq));
    }

    /// Sends `request` to the driver of a domain whose status allows
    /// `operation` (through the table); `done` gets the driver's answer,
    /// off the manager's task. A refusal goes to `done` at once.
    pub(super) fn ask_driver(
        &mut self,
        uuid: Uuid,
        operation: Operation,
        request: Request,
        done: impl FnOnce(Result<Response, CoreError>) + Send + 'static,
    ) {
        let asked = self.driver_of(uuid).and_then(|driver| {
            let entry = self.entry_mut(uuid)?;
            entry.request(operation)?;
            let runtime = entry
                .runtime
                .clone()
                .ok_or_else(|| CoreError::StoppedMeanwhile {
                    domain: entry.name().to_owned(),
                })?;
            Ok(driver.request(entry.name(), &runtime, request))
        });
        match asked {
            Ok(work) => {
                tokio::spawn(async move { done(work.await.map_err(CoreError::Driver)) });
            }
            Err(error) => done(Err(error)),
        }
    }

    pub(super) fn open_console(&mut self, uuid: Uuid, index: u32, reply: Reply<OwnedFd>) {
        let request = Request::Console { index };
        self.ask_driver(uuid, Operation::OpenConsole, request, move |result| {
            let _ = reply.send(result.and_then(|response| match response {
                Response::Console(fd) => Ok(fd),
                other => Err(unexpected(other)),
            }));
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn enter(
        &mut self,
        uuid: Uuid,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        noseclabel: bool,
        stdio: Option<[OwnedFd; 3]>,
        reply: Reply<crate::core::types::Entered>,
    ) {
        let request = Request::Enter {
            argv,
            env,
            cwd,
            noseclabel,
            stdio,
        };
        self.ask_driver(uuid, Operation::Enter, request, move |result| {
            let _ = reply.send(result.and_then(|response| match response {
                Response::Entered {
                    pid,
                    exit,
                    terminal,
                } => Ok(crate::core::types::Entered {
                    pid,
                    exit,
                    terminal,
                }),
                other => Err(unexpected(other)),
            }));
        });
    }

    pub(super) fn send_signal(&mut self, uuid: Uuid, pid: i64, signal: i32, reply: Reply<()>) {
        let request = Request::Signal { pid, signal };
        self.ask_driver(uuid, Operation::Signal, request, move |result| {
            let _ = reply.send(result.and_then(|response| match response {
                Response::Done => Ok(()),
                other => Err(unexpected(other)),
            }));
        });
    }

    pub(super) fn stats(&mut self, uuid: Uuid, reply: Reply<DomainStats>) {
        let entry = match self.entry_mut(uuid) {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let Some(runtime) = entry.runtime.clone() else {
            // Not running: no figures.
            let _ = reply.send(Ok(DomainStats::default()));
            return;
        };
        let name = entry.name().to_owned();
        let memory = entry.live_def().memory;
        let driver = match self.driver_of(uuid) {
            Ok(driver) => driver,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let work = driver.request(&name, &runtime, Request::Stats);
        tokio::spawn(async move {
            let result = work.await.map_err(CoreError::Driver);
            let _ = reply.send(result.and_then(|response| match response {
                Response::Stats(mut stats) => {
                    stats.memory_limit = stats.memory_limit.or(Some(memory));
                    Ok(stats)
                }
                other => Err(unexpected(other)),
            }));
        });
    }
}

impl Manager {
    /// The running instance's interfaces as it sees them.
    fn guest_interfaces(
        &mut self,
        uuid: Uuid,
    ) -> Result<BoxFuture<Result<Vec<GuestInterface>, CoreError>>, CoreError> {
        let entry = self.entry_mut(uuid)?;
        let Some(runtime) = entry.runtime.clone() else {
            return Err(CoreError::NotRunning {
                domain: entry.name().to_owned(),
                operation: "read its interfaces",
            });
        };
        let name = entry.name().to_owned();
        let work = self
            .driver_of(uuid)?
            .request(&name, &runtime, Request::Interfaces);
        Ok(Box::pin(async move {
            match work.await.map_err(CoreError::Driver)? {
                Response::Interfaces(list) => Ok(list),
                other => Err(unexpected(other)),
            }
        }))
    }

    /// Addresses of a running domain's interfaces: from the DHCP leases
    /// of its networks (by MAC), or as the instance sees them (`agent`).
    pub(super) fn interface_addresses(
        &mut self,
        uuid: Uuid,
        source: AddressSource,
        reply: Reply<Vec<InterfaceAddresses>>,
    ) {
        if source == AddressSource::Lease {
            let _ = reply.send(self.lease_addresses(uuid));
            return;
        }
        match self.guest_interfaces(uuid) {
            Ok(work) => {
                tokio::spawn(async move {
                    let result = work.await.map(|list| {
                        list.into_iter()
                            .map(|i| InterfaceAddresses {
                                name: i.name,
                                mac: i.mac.unwrap_or_default(),
                                addresses: i.addresses,
                            })
                            .collect()
                    });
                    let _ = reply.send(result);
                });
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn lease_addresses(&mut self, uuid: Uuid) -> Result<Vec<InterfaceAddresses>, CoreError> {
        let entry = self.entry_mut(uuid)?;
        if entry.runtime.is_none() {
            return Err(CoreError::NotRunning {
                domain: entry.name().to_owned(),
                operation: "read its interfaces",
            });
        }
        let interfaces: Vec<(String, String, String)> = entry
            .live_def()
            .devices
            .interfaces
            .iter()
            .filter_map(|i| match (&i.source, i.mac) {
                (InterfaceSource::Network { network, .. }, Some(mac)) => Some((
                    network.clone(),
                    mac.to_string(),
                    i.target_dev.clone().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        let mut list = Vec::new();
        for (network, mac, name) in interfaces {
            let leases = self.network_leases_by_name(&network);
            let addresses: Vec<_> = leases
                .iter()
                .filter(|l| l.mac.eq_ignore_ascii_case(&mac))
                .map(|l| (l.ip, l.prefix))
                .collect();
            list.push(InterfaceAddresses {
                name,
                mac,
                addresses,
            });
        }
        Ok(list)
    }

    /// Traffic counters of one interface of a running domain, from its
    /// side; `device` is its name inside, its host-side name or its MAC.
    pub(super) fn interface_stats(
        &mut self,
        uuid: Uuid,
        device: String,
        reply: Reply<InterfaceCounters>,
    ) {
        let domain = match self.entry_mut(uuid) {
            Ok(entry) => entry.name().to_owned(),
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        // A host-side name or a MAC: the MAC finds it inside.
        let mac = self.entry_mut(uuid).ok().and_then(|entry| {
            entry
                .live_def()
                .devices
                .interfaces
                .iter()
                .find(|i| {
                    i.target_dev.as_deref() == Some(device.as_str())
                        || i.mac
                            .is_some_and(|m| m.to_string().eq_ignore_ascii_case(&device))
                })
                .and_then(|i| i.mac)
                .map(|m| m.to_string())
        });
        match self.guest_interfaces(uuid) {
            Ok(work) => {
                tokio::spawn(async move {
                    let result = work.await.and_then(|list| {
                        list.into_iter()
                            .find(|i| {
                                i.name == device
                                    || (mac.is_some() && i.mac.as_deref() == mac.as_deref())
                            })
                            .map(|i| i.counters)
                            .ok_or(CoreError::NoSuchInterface { domain, device })
                    });
                    let _ = reply.send(result);
                });
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A driver answered a request with the answer to another: a bug in it.
pub(super) fn unexpected(response: Response) -> CoreError {
    CoreError::Driver(driver::Error::failed(format!(
        "the driver gave an unexpected answer ({response:?}); this is a bug in lxvirtd"
    )))
}
