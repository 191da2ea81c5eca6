//! The LXC driver behind the core's seam ([`crate::driver::Driver`]): a
//! start converts the definition into a launch spec, labels the
//! container's own files and hands the spec to a monitor; requests go to
//! the monitor or to the container's cgroup; an exit is read from the
//! record the monitor leaves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::convert::{self, ConvertError, ConvertSettings};
use super::driver::{DriverError, LxcDriver};
use super::protocol::{self, InitExit, MonitorLog, Reply, Requested};
use super::ptys::PtyPool;
use super::spec::{ContainerSpec, InterfaceKind, RootFs};
use crate::cgroup::{CgroupError, Cgroups};
use crate::domain::DomainDef;
use crate::driver::{
    BoxFuture, DomainStats, Driver, Ended, Error, ErrorKind, Exit, Request, Response, Runtime,
    ShutdownMode, StartRequest, Started,
};
use crate::error_chain::error_chain;
use crate::security::relabel::{self, RelabelJob};
use crate::service::systemd::{self, Machine, MachineClass, SystemdHost};
use crate::sys::process::{find_process, wait_exit};

/// What the LXC driver needs besides its monitors.
#[derive(Debug, Clone)]
pub struct LxcConfig {
    pub monitor_exe: PathBuf,
    /// Where monitors log.
    pub monitor_log: MonitorLog,
    /// The run directory, pids.max and the default partition of every
    /// container.
    pub settings: ConvertSettings,
    /// `None` when the host has no usable hierarchy: starts are refused.
    pub cgroups: Option<Arc<Cgroups>>,
    /// The kernel's pty limit the consoles draw on.
    pub ptys: Arc<PtyPool>,
    /// On a systemd host with the unified hierarchy: each container in a
    /// delegated scope, registered with machined.
    pub systemd: Option<Arc<SystemdHost>>,
}

impl From<DriverError> for Error {
    fn from(error: DriverError) -> Self {
        Error::new(ErrorKind::Failed, error)
    }
}

impl From<ConvertError> for Error {
    fn from(error: ConvertError) -> Self {
        let kind = match &error {
            ConvertError::NotSupported { .. }
            | ConvertError::InterfaceSetting { .. }
            | ConvertError::VirtualNetwork { .. }
            | ConvertError::SharedNetwork { .. } => ErrorKind::NotSupported,
            ConvertError::NotContainer { .. } => ErrorKind::Unavailable,
            ConvertError::ShareTargetNotRunning { .. } => ErrorKind::InvalidState,
            ConvertError::Device { .. }
            | ConvertError::BadPid { .. }
            | ConvertError::ImageRootMissing { .. }
            | ConvertError::InterfaceName { .. } => ErrorKind::Failed,
        };
        Error::new(kind, error)
    }
}

/// A failure naming the domain, as the driver's own refusals read.
fn failed(domain: &str, message: &str) -> Error {
    Error::failed(format!("domain '{domain}': {message}"))
}

fn cgroup_failed(domain: &str, error: &CgroupError) -> Error {
    failed(domain, &error_chain(error))
}

/// Runs a change of the running container's devices on a blocking thread.
async fn live_device(
    name: String,
    runtime: Runtime,
    cgroups: Arc<Cgroups>,
    change: impl FnOnce(
        &super::live_devices::Container<'_>,
    ) -> Result<(), super::live_devices::LiveDeviceError>
    + Send
    + 'static,
) -> Result<Response, Error> {
    tokio::task::spawn_blocking(move || {
        let container = super::live_devices::Container {
            init_pid: runtime.init_pid,
            cgroups: &cgroups,
            cgroup_path: &runtime.cgroup_path,
        };
        change(&container)
            .map(|()| Response::Done)
            .map_err(|e| Error::new(e.kind(), format!("domain '{name}': {}", error_chain(&e))))
    })
    .await
    .map_err(|join| Error::failed(join.to_string()))?
}

/// How long the processes of a container whose monitor vanished may take
/// to die; the manager waits this long at most, in this rare case only.
const VANISHED_KILL_WAIT: Duration = Duration::from_secs(2);

impl LxcDriver {
    fn cgroups(&self, domain: &str) -> Result<Arc<Cgroups>, Error> {
        self.config().cgroups.clone().ok_or_else(|| {
            failed(
                domain,
                "this host has no usable cgroup hierarchy; mount cgroup v1 controllers or cgroup2 at /sys/fs/cgroup",
            )
        })
    }

    /// Kills every process of the container through its cgroup: no pid
    /// to go stale. The monitor then sees init gone and cleans up.
    fn kill_cgroup(&self, domain: &str, runtime: &Runtime) -> Result<(), Error> {
        let cgroups = self.cgroups(domain)?;
        cgroups
            .open(&runtime.cgroup_path)
            .and_then(|cgroup| cgroup.kill_all())
            .map_err(|e| cgroup_failed(domain, &e))
    }
}

impl Driver for LxcDriver {
    fn name(&self) -> &'static str {
        "lxc"
    }

    fn warm_up(&self) {
        self.prepare_spare();
        self.retire_leftover_cgroups();
    }

    fn start(&self, request: StartRequest) -> Result<BoxFuture<Result<Started, Error>>, Error> {
        let StartRequest {
            def,
            labels,
            labeler,
            content_label,
            image_root,
            running_inits,
            networks,
        } = request;
        let name = def.name().to_owned();
        if def.devices.consoles.is_empty() {
            return Err(failed(
                &name,
                "a container needs a <console type='pty'/> in <devices>; add one",
            ));
        }
        self.cgroups(&name)?;
        let mut spec = convert::container_spec(
            &crate::driver::plug_networks(&def, &networks),
            &self.config().settings,
            &|other| running_inits.get(other).copied(),
            image_root.as_ref(),
        )?;
        convert::set_port_groups(&mut spec, &def, &networks);
        spec.security = labels.spec;
        let placement = self
            .config()
            .systemd
            .as_ref()
            .map(|_| {
                let partition = def
                    .partition
                    .as_deref()
                    .unwrap_or(&self.config().settings.default_partition);
                systemd::placement(&name, partition)
            })
            .transpose()
            .map_err(|e| Error::new(ErrorKind::NotSupported, format!("domain '{name}': {e}")))?;
        let relabel = labeler.and_then(|labeler| {
            relabel_jobs(&spec, content_label.as_deref()).map(|jobs| (jobs, labeler))
        });
        let driver = self.clone();
        Ok(Box::pin(async move {
            driver
                .config()
                .ptys
                .make_room(&name, u64::from(spec.consoles))
                .map_err(|e| {
                    let kind = match e {
                        super::ptys::PtyError::Exhausted { .. } => ErrorKind::Unavailable,
                        _ => ErrorKind::Failed,
                    };
                    Error::new(kind, e)
                })?;
            if let Some((jobs, labeler)) = relabel {
                let domain = name.clone();
                let count = tokio::task::spawn_blocking(move || {
                    relabel::run_jobs(&domain, &jobs, &mut |p, l| labeler(p, l), &|p| {
                        crate::sys::linux::file_label(p).ok()
                    })
                })
                .await
                .map_err(|join| failed(&name, &format!("the relabel task failed: {join}")))?
                .map_err(|e| {
                    let kind = if e.is_unavailable() {
                        ErrorKind::SecurityUnavailable
                    } else {
                        ErrorKind::Failed
                    };
                    Error::new(kind, e)
                })?;
                tracing::debug!(domain = %name, files = count, "relabelled the container's files");
            }
            let mut spec = spec;
            let started = driver.launch(&mut spec, placement.as_ref()).await?;
            if let Some(systemd) = &driver.config().systemd {
                // machined shows a directory root; the others have none to show.
                let root = match &spec.root {
                    RootFs::Dir { path, .. } => path.display().to_string(),
                    _ => String::new(),
                };
                let ifindices =
                    systemd::ifindices(spec.interfaces.iter().filter_map(|i| match &i.kind {
                        InterfaceKind::Bridge { host_name, .. }
                        | InterfaceKind::Ethernet { host_name, .. } => Some(host_name.as_str()),
                        InterfaceKind::Direct { .. } => None,
                    }));
                let machine = Machine {
                    name: &name,
                    uuid: spec.uuid,
                    class: MachineClass::Container,
                    leader: u32::try_from(started.init_pid).unwrap_or_default(),
                    root_directory: &root,
                    ifindices: &ifindices,
                };
                if let Err(error) = systemd.register_machine(&machine).await {
                    // The container runs; only machinectl does not list it.
                    tracing::warn!(domain = %name, error = %error_chain(&error), "cannot register the container with systemd-machined");
                }
            }
            Ok(Started {
                runtime: Runtime {
                    init_pid: started.init_pid,
                    monitor_pid: started.monitor_pid,
                    monitor_start_time: started.monitor_start_time,
                    started_at: 0,
                    cgroup_path: spec.cgroup.path.clone(),
                    memory_limit: spec.cgroup.memory_limit,
                },
                exited: Box::pin(wait_exit(started.monitor_pidfd)),
                on_recorded: Some(Box::new(move || started.recorded.confirm())),
            })
        }))
    }

    fn check_shutdown_mode(
        &self,
        def: &DomainDef,
        runtime: Option<&Runtime>,
        mode: ShutdownMode,
    ) -> Result<(), Error> {
        match mode {
            ShutdownMode::Default | ShutdownMode::Signal | ShutdownMode::Systemd => Ok(()),
            ShutdownMode::Initctl => match runtime {
                Some(runtime) if !super::initctl::present(runtime.init_pid) => Err(Error::new(
                    ErrorKind::NotSupported,
                    format!(
                        "domain '{}': {}",
                        def.name(),
                        super::initctl::InitctlError::NoFifo
                    ),
                )),
                _ => Ok(()),
            },
            ShutdownMode::PowerButton | ShutdownMode::Agent => Err(Error::mode_not_supported(
                def.name.as_ref(),
                mode,
                "containers",
                "a container's init is asked with a signal (mode 'signal', or 'systemd' for SIGRTMIN+3) or through /run/initctl (mode 'initctl'); the default picks the one its init wants",
            )),
        }
    }

    fn reconnect(&self, _name: &str, runtime: &Runtime) -> Option<BoxFuture<()>> {
        let pidfd = find_process(runtime.monitor_pid, runtime.monitor_start_time)?;
        Some(Box::pin(wait_exit(pidfd)))
    }

    fn request(
        &self,
        name: &str,
        runtime: &Runtime,
        request: Request,
    ) -> BoxFuture<Result<Response, Error>> {
        let driver = self.clone();
        let name = name.to_owned();
        let runtime = runtime.clone();
        Box::pin(async move {
            match request {
                // Modes were checked before the request (check_shutdown_mode).
                Request::Shutdown { grace, mode } => {
                    driver.stop(&name, &runtime, Some((grace, mode))).await
                }
                Request::Destroy => driver.stop(&name, &runtime, None).await,
                Request::Reset => Err(Error::new(
                    ErrorKind::NotSupported,
                    format!(
                        "domain '{name}': a container is reset by the core (stopped at once and started again)"
                    ),
                )),
                Request::Freeze | Request::Thaw => {
                    let freeze = matches!(request, Request::Freeze);
                    let cgroups = driver.cgroups(&name)?;
                    tokio::task::spawn_blocking(move || {
                        cgroups
                            .open(&runtime.cgroup_path)
                            .and_then(|cgroup| {
                                if freeze {
                                    cgroup.freeze()
                                } else {
                                    cgroup.thaw()
                                }
                            })
                            .map(|()| Response::Done)
                            .map_err(|e| cgroup_failed(&name, &e))
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))?
                }
                Request::Console { index } => {
                    let (_, mut fds) = driver
                        .ask(&name, protocol::Request::Console { index }, Vec::new())
                        .await?;
                    fds.pop()
                        .map(Response::Console)
                        .ok_or_else(|| failed(&name, "the monitor sent no console descriptor"))
                }
                Request::Enter {
                    argv,
                    env,
                    cwd,
                    noseclabel,
                    stdio,
                } => {
                    let tty = stdio.is_none();
                    let request = protocol::Request::Enter {
                        argv,
                        env,
                        cwd,
                        noseclabel,
                        tty,
                    };
                    let fds = stdio.map(Vec::from).unwrap_or_default();
                    match driver.ask(&name, request, fds).await? {
                        (Reply::Entered { pid }, fds) if fds.len() == 1 + usize::from(tty) => {
                            let mut fds = fds.into_iter();
                            let exit =
                                fds.next().ok_or_else(|| failed(&name, "no exit channel"))?;
                            Ok(Response::Entered {
                                pid,
                                exit,
                                terminal: fds.next(),
                            })
                        }
                        _ => Err(failed(
                            &name,
                            "the monitor gave no exit channel (or no terminal)",
                        )),
                    }
                }
                Request::AttachInterface {
                    live,
                    interface,
                    port,
                } => {
                    let settings = driver.config().settings.clone();
                    let pid = runtime.init_pid;
                    tokio::task::spawn_blocking(move || {
                        crate::lxc::hotplug::attach(
                            &live,
                            &interface,
                            port.as_ref(),
                            pid,
                            &settings,
                        )
                        .map(|guest_name| Response::Attached { guest_name })
                        .map_err(|e| {
                            failed(
                                &name,
                                &format!("cannot attach the interface: {}", error_chain(&e)),
                            )
                        })
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))?
                }
                Request::DetachInterface { live, interface } => {
                    let pid = runtime.init_pid;
                    tokio::task::spawn_blocking(move || {
                        crate::lxc::hotplug::detach(&live, &interface, pid)
                            .map(|()| Response::Done)
                            .map_err(|e| {
                                failed(
                                    &name,
                                    &format!("cannot detach the interface: {}", error_chain(&e)),
                                )
                            })
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))?
                }
                Request::AttachDevice { live, device } => {
                    let cgroups = driver.cgroups(&name)?;
                    live_device(name, runtime, cgroups, move |container| {
                        super::live_devices::attach(container, &live, &device)
                    })
                    .await
                }
                Request::DetachDevice { live, device } => {
                    let cgroups = driver.cgroups(&name)?;
                    live_device(name, runtime, cgroups, move |container| {
                        super::live_devices::detach(container, &live, &device)
                    })
                    .await
                }
                Request::UpdateDevice { live, old, new } => {
                    let cgroups = driver.cgroups(&name)?;
                    live_device(name, runtime, cgroups, move |container| {
                        super::live_devices::update(container, &live, &old, &new)
                    })
                    .await
                }
                Request::Signal { pid, signal } => {
                    let cgroups = driver.cgroups(&name)?;
                    tokio::task::spawn_blocking(move || {
                        super::signal::send(
                            &name,
                            &cgroups,
                            &runtime.cgroup_path,
                            runtime.init_pid,
                            pid,
                            signal,
                        )
                        .map(|()| Response::Done)
                        .map_err(|e| {
                            let kind = match e {
                                super::signal::SignalError::NoSuchProcess { .. } => {
                                    ErrorKind::InvalidArgument
                                }
                                _ => ErrorKind::Failed,
                            };
                            Error::new(kind, e)
                        })
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))?
                }
                Request::Tune { old, new } => {
                    let cgroups = driver.cgroups(&name)?;
                    let settings = driver.config().settings.clone();
                    tokio::task::spawn_blocking(move || {
                        let spec = |def: &DomainDef| {
                            convert::tuning_spec(def, &settings).map(|mut spec| {
                                spec.path = runtime.cgroup_path.clone();
                                spec
                            })
                        };
                        let (old, new) = (spec(&old)?, spec(&new)?);
                        cgroups
                            .retune(&old, &new)
                            .map(|()| Response::Done)
                            .map_err(|e| cgroup_failed(&name, &e))
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))?
                }
                Request::Interfaces => {
                    let pid = runtime.init_pid;
                    tokio::task::spawn_blocking(move || {
                        crate::net::guest::interfaces(pid)
                            .map(Response::Interfaces)
                            .map_err(|e| {
                                failed(&name, &format!("cannot read its network interfaces: {e}"))
                            })
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))?
                }
                Request::Stats => {
                    let cgroups = driver.cgroups(&name)?;
                    tokio::task::spawn_blocking(move || {
                        let stats = cgroups.open(&runtime.cgroup_path).map(|c| c.stats()).ok();
                        let mut extra: Vec<(String, u64)> = stats
                            .iter()
                            .flat_map(|s| &s.details)
                            .map(|(name, value)| ((*name).to_owned(), *value))
                            .collect();
                        extra.extend(interface_counters(runtime.init_pid));
                        Response::Stats(DomainStats {
                            memory_bytes: stats.as_ref().and_then(|s| s.memory_bytes),
                            memory_limit: runtime.memory_limit,
                            cpu_time_ns: stats.as_ref().and_then(|s| s.cpu_time_ns),
                            pids: stats.as_ref().and_then(|s| s.pids),
                            extra,
                        })
                    })
                    .await
                    .map_err(|join| Error::failed(join.to_string()))
                }
            }
        })
    }

    fn collect_exit(&self, name: &str, runtime: &Runtime, live: &DomainDef) -> Ended {
        let mut problems = Vec::new();
        let exit = match self.take_exit_record(name) {
            // The monitor ended and cleaned up, but what it wrote cannot
            // be read (a newer format): say so, assume nothing.
            Err(error) => {
                problems.push(error_chain(&error));
                Exit::Unknown
            }
            Ok(Some(record)) => {
                problems.extend(record.cleanup_errors);
                self.retire_cgroups(record.retired_cgroups);
                match (record.requested, record.init) {
                    (Some(Requested::Destroy), _) => Exit::Destroyed,
                    (Some(Requested::Shutdown), _) => Exit::Shutdown,
                    // reboot(2) in a PID namespace ends its init with
                    // SIGHUP (restart) or SIGINT (halt, power off).
                    (None, InitExit::Signaled { signal }) if signal == libc::SIGHUP => {
                        Exit::Rebooted
                    }
                    (None, InitExit::Signaled { signal }) if signal == libc::SIGINT => {
                        Exit::PoweredOff
                    }
                    (None, InitExit::Exited { .. }) => Exit::PoweredOff,
                    (None, InitExit::Signaled { .. }) => Exit::Crashed,
                }
            }
            Ok(None) => {
                // The monitor could not clean up: what it held goes here.
                // Its container outlives it (init was its child, now
                // reparented): kill it, and wait the milliseconds its
                // processes take to leave, or the cgroup cannot go (a
                // restart on_crash would find it).
                if let Some(cgroups) = &self.config().cgroups
                    && let Ok(cgroup) = cgroups.open(&runtime.cgroup_path)
                {
                    let _ = cgroup.kill_and_wait(VANISHED_KILL_WAIT);
                    if let Err(error) = cgroup.remove() {
                        problems.push(format!(
                            "cannot remove the cgroup of a vanished container: {}",
                            error_chain(&error)
                        ));
                    }
                }
                Exit::Vanished
            }
        };
        // The host's side of interfaces that the namespace did not take
        // with it: a few lookups, a deletion only when the monitor could
        // not make it (killed) or never knew the device (plugged in later).
        problems.extend(crate::net::shaping::release_ifbs(live));
        self.remove_files(name);
        Ended { exit, problems }
    }

    fn release(&self, name: &str) {
        self.remove_files(name);
    }

    fn forget(&self, name: &str) {
        let _ = std::fs::remove_file(self.files(name).log);
        for log in self.console_logs(name) {
            let _ = std::fs::remove_file(log);
        }
    }

    fn console_log_files(&self, name: &str) -> Vec<PathBuf> {
        self.console_logs(name)
    }
}

impl LxcDriver {
    /// Shutdown (with a grace) or destroy through the monitor; when the
    /// monitor cannot be reached, the container is killed through its
    /// cgroup, and the monitor's exit (or its absence) finishes the job.
    async fn stop(
        &self,
        name: &str,
        runtime: &Runtime,
        shutdown: Option<(Duration, ShutdownMode)>,
    ) -> Result<Response, Error> {
        let request = match shutdown {
            Some((grace, mode)) => protocol::Request::Shutdown {
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                how: match mode {
                    ShutdownMode::Signal => protocol::AskInit::Signal,
                    ShutdownMode::Initctl => protocol::AskInit::Initctl,
                    ShutdownMode::Systemd => protocol::AskInit::Systemd,
                    // Refused before (check_shutdown_mode) but for Default.
                    _ => protocol::AskInit::AsItWants,
                },
            },
            None => protocol::Request::Destroy,
        };
        if let Err(error) = self.ask(name, request, Vec::new()).await {
            tracing::warn!(domain = %name, error = %error_chain(&error), "monitor unreachable, killing the container through its cgroup");
            self.kill_cgroup(name, runtime)?;
        }
        Ok(Response::Done)
    }
}

/// What to relabel before a start: a root directory of the container's
/// own (dynamic labels, or relabel='yes') gets its image label; an image
/// root's layers get the shared read-only content label once, and its
/// writable layer the container's image label at every start (overlayfs
/// checks the real files too, and the writable layer is the container's
/// own, its level new with each dynamic label).
pub fn relabel_jobs(spec: &ContainerSpec, content_label: Option<&str>) -> Option<Vec<RelabelJob>> {
    let labels = spec.security.as_ref()?;
    let own = |root: &PathBuf| RelabelJob {
        root: root.clone(),
        label: labels.image_label.clone(),
        once: false,
    };
    let jobs = match &spec.root {
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
    };
    (!jobs.is_empty()).then_some(jobs)
}

/// `net.NAME.rx.bytes` and the rest for each interface of a container with
/// a network namespace of its own (not loopback); none for one that shares
/// the host's, whose interfaces are not its own.
fn interface_counters(init_pid: i32) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let ns = |path: String| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let theirs = ns(format!("/proc/{init_pid}/ns/net"));
    if theirs.is_none() || theirs == ns("/proc/self/ns/net".to_owned()) {
        return Vec::new();
    }
    let Ok(interfaces) = crate::net::guest::interfaces(init_pid) else {
        return Vec::new();
    };
    interfaces
        .into_iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| {
            let c = i.counters;
            [
                ("rx.bytes", c.rx_bytes),
                ("rx.packets", c.rx_packets),
                ("rx.errors", c.rx_errors),
                ("rx.dropped", c.rx_dropped),
                ("tx.bytes", c.tx_bytes),
                ("tx.packets", c.tx_packets),
                ("tx.errors", c.tx_errors),
                ("tx.dropped", c.tx_dropped),
            ]
            .map(|(counter, value)| (format!("net.{}.{counter}", i.name), value))
        })
        .collect()
}
