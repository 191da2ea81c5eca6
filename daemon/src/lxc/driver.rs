//! The daemon's side of the LXC driver: start a monitor per container,
//! talk to it, notice when it is gone.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use super::instance::LxcConfig;
use super::launch;
use super::protocol::{
    self, EARLY_REQUEST, ExitRecord, LaunchReport, MonitorError, ProtocolError, Reply, Request,
    RunFiles,
};
use super::spawner::{MonitorCommand, SpawnedMonitor, Spawner, SpawnerError, spawn_monitor};
use super::spec::{ConsoleLogSpec, ContainerSpec};
use crate::cgroup::retired;
use crate::persist::{self, PersistError};
use crate::service::systemd::Placement;
use crate::sys::process::{is_alive, start_time, wait_exit_blocking};

/// Why the driver could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run the monitor {path}; is lxvirt installed completely?")]
    SpawnMonitor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The container did not start; the monitor's error names the step,
    /// its details and the fix.
    #[error("domain '{name}'")]
    LaunchFailed {
        name: String,
        #[source]
        error: MonitorError,
    },
    #[error("domain '{name}': cannot give the container a scope of its own under machine.slice")]
    Scope {
        name: String,
        #[source]
        source: crate::service::systemd::SystemdError,
    },
    #[error("domain '{name}': cannot wait for its monitor's report")]
    ReportPipe {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor of domain '{name}' exited without a report; see {log}")]
    MonitorDied { name: String, log: PathBuf },
    #[error(
        "domain '{name}': its monitor sent a launch report this lxvirtd cannot read ({report}); lxvirtd and lxvirt-monitor must come from the same build, restart lxvirtd after an upgrade"
    )]
    UnreadableReport { name: String, report: String },
    #[error("cannot reach the monitor of domain '{name}' at {path}")]
    Connect {
        name: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("monitor of domain '{name}' did not answer")]
    Protocol {
        name: String,
        #[source]
        source: ProtocolError,
    },
    /// The monitor could not do what was asked; its error says why.
    #[error("domain '{name}'")]
    Refused {
        name: String,
        #[source]
        error: MonitorError,
    },
    /// The same, from a monitor of an earlier lxvirtd (a message only).
    #[error("domain '{name}': {message}")]
    RefusedByEarlierMonitor { name: String, message: String },
    #[error("domain '{name}': cannot use the exit record of its monitor")]
    ExitRecord {
        name: String,
        #[source]
        source: PersistError,
    },
    #[error("internal task failed: {0}")]
    Join(String),
}

fn monitor_command(config: &LxcConfig) -> MonitorCommand {
    MonitorCommand {
        exe: config.monitor_exe.clone(),
        run_dir: config.settings.run_dir.clone(),
        log: config.monitor_log,
    }
}

/// A container whose init runs under a monitor.
#[derive(Debug)]
pub struct Started {
    pub init_pid: i32,
    pub monitor_pid: i32,
    /// With the pid, identifies the monitor across pid reuse.
    pub monitor_start_time: u64,
    pub monitor_pidfd: OwnedFd,
    /// The monitor's stdin: [`StartRecorded::confirm`] tells it the start
    /// is recorded; dropped unconfirmed, it undoes the start.
    pub recorded: StartRecorded,
}

/// The daemon's side of a started monitor's wait for confirmation.
#[derive(Debug)]
pub struct StartRecorded(File);

impl StartRecorded {
    /// Tells the monitor the daemon has recorded its container. A monitor
    /// that is gone meanwhile has nothing to be told.
    pub fn confirm(mut self) {
        let _ = std::io::Write::write_all(
            &mut self.0,
            format!("{}\n", protocol::START_RECORDED).as_bytes(),
        );
    }
}

/// A monitor started ahead of need, waiting in the slot for a spec on its
/// stdin: a start then costs no exec. If the daemon goes away its stdin
/// closes and it exits.
#[derive(Debug)]
struct Spare {
    monitor: SpawnedMonitor,
    /// Spawned with the namespaces of an early init, which it makes when
    /// asked: once no start is under way, as making namespaces beside a
    /// start slows it (both take the same kernel locks).
    early_due: bool,
}

impl Spare {
    /// Asks for the early init, if it is due.
    fn ask_for_early_init(&mut self) {
        if std::mem::take(&mut self.early_due) {
            // A spare that died is found when it is taken.
            let line = format!("{EARLY_REQUEST}\n");
            let _ = std::io::Write::write_all(&mut self.monitor.stdin, line.as_bytes());
        }
    }
}

/// A start under way. When the last one ends the next start's spare is
/// spawned (a start that took the spare while others were under way
/// spawned one at once), and a moment later a spare without its early
/// init is asked for it.
struct Launching(LxcDriver);

/// How long after the last start a spare that is waiting already makes
/// its early init: past that start's reply (the kernel makes a network
/// namespace in one stretch of ~0.6 ms a CPU gives to nothing else; on
/// two CPUs, made at once, it delayed the reply by as much). A spare
/// spawned when the start ended makes it at once: its exec outlasts the
/// reply.
const EARLY_INIT_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

impl Launching {
    fn begin(driver: &LxcDriver) -> Launching {
        driver.launching.fetch_add(1, Ordering::SeqCst);
        Launching(driver.clone())
    }
}

impl Drop for Launching {
    fn drop(&mut self) {
        if self.0.launching.fetch_sub(1, Ordering::SeqCst) == 1
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Not while the start ran: on a two-CPU host the spare's exec
            // beside it slowed it by as much as the exec takes.
            self.0.prepare_spare();
            let driver = self.0.clone();
            runtime.spawn(async move {
                tokio::time::sleep(EARLY_INIT_DELAY).await;
                if driver.launching.load(Ordering::SeqCst) == 0 {
                    // The slot's lock is held while a spare is spawned.
                    tokio::task::spawn_blocking(move || {
                        let mut slot = driver.spare.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(spare) = slot.as_mut() {
                            spare.ask_for_early_init();
                        }
                    });
                }
            });
        }
    }
}

/// The LXC driver: starts monitors and talks to them (its side of the
/// core's seam is in `instance.rs`).
#[derive(Debug, Clone)]
pub struct LxcDriver {
    config: Arc<LxcConfig>,
    spare: Arc<Mutex<Option<Spare>>>,
    /// The namespaces of the next spare's early init: the last start's
    /// (none when it could not use one), the usual ones at first.
    next_early: Arc<Mutex<Option<CloneFlags>>>,
    /// Starts under way (see [`Spare::early_due`]).
    launching: Arc<AtomicUsize>,
    /// `None`: its thread could not start; monitors come from the
    /// daemon's own descriptor table.
    spawner: Option<Arc<Spawner>>,
    /// Memory cgroups of ended containers, removed once stops pause.
    retired: Arc<Mutex<retired::Pending>>,
}

impl LxcDriver {
    /// Call it before the daemon holds descriptors per container: the
    /// spawner's table is a copy of the daemon's at this moment.
    pub fn new(config: LxcConfig) -> LxcDriver {
        let spawner = Spawner::start(monitor_command(&config))
        .map_err(|error| tracing::warn!(error = %error, "cannot start the monitor spawner; monitors start from the daemon's descriptor table"))
        .ok()
        .map(Arc::new);
        LxcDriver {
            config: Arc::new(config),
            spare: Arc::new(Mutex::new(None)),
            next_early: Arc::new(Mutex::new(Some(launch::USUAL_FLAGS))),
            launching: Arc::new(AtomicUsize::new(0)),
            spawner,
            retired: Arc::default(),
        }
    }

    /// Takes memory cgroups a container's end retired, and removes them
    /// with the others once no container has ended for a moment (see
    /// [`retired`]).
    pub fn retire_cgroups(&self, paths: Vec<PathBuf>) {
        let first = self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(paths, Instant::now());
        if first && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.clone().remove_retired_when_due());
        }
    }

    async fn remove_retired_when_due(self) {
        loop {
            let due_in = self
                .retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .due_in(Instant::now());
            match due_in {
                None => return,
                Some(wait) if wait.is_zero() => break,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
        self.remove_retired_now().await;
    }

    /// Removes the retired memory cgroups pending, due or not (the daemon
    /// stops).
    pub async fn remove_retired_now(&self) {
        let paths = self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(cgroups) = self.config.cgroups.clone().filter(|_| !paths.is_empty()) else {
            return;
        };
        let removed = tokio::task::spawn_blocking(move || {
            for path in paths {
                if let Err(error) = cgroups.remove_retired(&path) {
                    tracing::warn!(error = %crate::error_chain::error_chain(&error), "cannot remove the memory cgroup of a container that ended");
                }
            }
        });
        let _ = removed.await;
    }

    /// Retired memory cgroups in the default partition that no daemon
    /// removed (it was stopped, or crashed, after containers ended).
    pub fn retire_leftover_cgroups(&self) {
        let Some(cgroups) = self.config.cgroups.clone() else {
            return;
        };
        let driver = self.clone();
        let partition = self.config.settings.default_partition.clone();
        tokio::task::spawn_blocking(move || {
            driver.retire_cgroups(cgroups.retired_in(&partition));
        });
    }

    /// A new monitor, from the spawner's small descriptor table if it
    /// serves, else from the daemon's.
    /// A spare (`early`: the namespaces of its early init) is spawned
    /// ahead of need; a monitor needed now has none: its clone would come
    /// no sooner.
    fn spawn_monitor(&self, early: Option<CloneFlags>) -> Result<SpawnedMonitor, DriverError> {
        let spawned = match self.spawner.as_deref().map(|s| s.spawn(early)) {
            Some(Ok(monitor)) => Ok(monitor),
            // The same would happen here.
            Some(Err(SpawnerError::Spawn(e))) => Err(e),
            Some(Err(SpawnerError::Gone(_))) | None => {
                // Without the template: the daemon's table must not pass
                // it to what else the daemon runs.
                spawn_monitor(&monitor_command(&self.config), early, None)
            }
        };
        spawned.map_err(|source| DriverError::SpawnMonitor {
            path: self.monitor_exe().to_owned(),
            source,
        })
    }

    pub fn config(&self) -> &LxcConfig {
        &self.config
    }

    fn run_dir(&self) -> &Path {
        &self.config.settings.run_dir
    }

    fn monitor_exe(&self) -> &Path {
        &self.config.monitor_exe
    }

    /// Makes sure a spare monitor is waiting (in the background).
    pub fn prepare_spare(&self) {
        let driver = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = driver.spare.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                let early = *driver.next_early.lock().unwrap_or_else(|p| p.into_inner());
                match driver.spawn_monitor(early) {
                    Ok(monitor) => {
                        let mut spare = Spare {
                            monitor,
                            early_due: early.is_some(),
                        };
                        if driver.launching.load(Ordering::SeqCst) == 0 {
                            spare.ask_for_early_init();
                        }
                        *slot = Some(spare);
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::error_chain::error_chain(&error), "cannot start a spare monitor");
                    }
                }
            }
        });
    }

    /// Prepares the next spare now if other starts are under way (they
    /// need it); else the last start does, when it ends (see
    /// [`Launching`]).
    fn prepare_spare_if_busy(&self) {
        if self.launching.load(Ordering::SeqCst) > 1 {
            self.prepare_spare();
        }
    }

    /// The spare, if it is alive and its slot is not held (by a spare
    /// being spawned), with the daemon's priority; without blocking.
    fn take_waiting_spare(&self) -> Option<SpawnedMonitor> {
        let spare = self.spare.try_lock().ok()?.take();
        alive(spare).map(with_daemon_priority)
    }

    /// The spare monitor if it is still alive, else a new one; with the
    /// daemon's priority (a spare waits below it).
    fn take_monitor(&self) -> Result<SpawnedMonitor, DriverError> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take();
        let monitor = match alive(spare) {
            Some(monitor) => monitor,
            None => self.spawn_monitor(None)?,
        };
        Ok(with_daemon_priority(monitor))
    }

    /// The monitor program: beside the running executable, else the
    /// installed location.
    pub fn default_monitor_exe() -> PathBuf {
        let beside = std::env::current_exe()
            .ok()
            .map(|exe| exe.with_file_name("lxvirt-monitor"));
        match beside {
            Some(path) if path.exists() => path,
            _ => PathBuf::from("/usr/libexec/lxvirt/lxvirt-monitor"),
        }
    }

    pub fn files(&self, name: &str) -> RunFiles {
        RunFiles::new(self.run_dir(), name)
    }

    /// Starts the monitor with the spec on its stdin and waits for its
    /// launch report. On a systemd host (`placement`) the monitor is first
    /// put in the container's scope, and `spec`'s cgroup moves below it.
    pub async fn launch(
        &self,
        spec: &mut ContainerSpec,
        placement: Option<&Placement>,
    ) -> Result<Started, DriverError> {
        let files = self.files(&spec.name);
        let _launching = Launching::begin(self);
        // The next start likely asks for the namespaces this one does.
        *self.next_early.lock().unwrap_or_else(|p| p.into_inner()) = launch::early_flags(spec);
        let name = spec.name.clone();
        let driver = self.clone();
        let (Some(systemd), Some(placement)) = (&self.config.systemd, placement) else {
            let line = self.spec_line(spec)?;
            // The usual case, a spare waiting in a free slot: handed over
            // here and its report awaited on this task, with no blocking
            // thread to wake on the way in and out.
            if let Some(monitor) = self.take_waiting_spare() {
                self.prepare_spare_if_busy();
                return hand_over_async(monitor, &files, &name, &line).await;
            }
            // Else the spec is final: take the monitor (a spare being
            // spawned, or a new one) and hand it over in one blocking step.
            return tokio::task::spawn_blocking(move || {
                let monitor = driver.take_monitor()?;
                driver.prepare_spare_if_busy();
                hand_over(monitor, &files, &name, &line)
            })
            .await
            .map_err(|e| DriverError::Join(e.to_string()))?;
        };
        let monitor = tokio::task::spawn_blocking(move || driver.take_monitor())
            .await
            .map_err(|e| DriverError::Join(e.to_string()))??;
        self.prepare_spare_if_busy();
        // Dropping the monitor's stdin on error ends it.
        let pid = u32::try_from(monitor.pid.as_raw()).unwrap_or_default();
        let description = format!("lxvirt container {name}");
        systemd
            .start_scope(placement, pid, &description)
            .await
            .map_err(|source| DriverError::Scope {
                name: name.clone(),
                source,
            })?;
        spec.cgroup.path = placement.cgroup.join(crate::cgroup::PAYLOAD);
        spec.cgroup.delegated = Some(placement.cgroup.clone());
        let line = self.spec_line(spec)?;
        tokio::task::spawn_blocking(move || hand_over(monitor, &files, &name, &line))
            .await
            .map_err(|e| DriverError::Join(e.to_string()))?
    }

    /// The spec as the line a monitor reads.
    fn spec_line(&self, spec: &ContainerSpec) -> Result<Vec<u8>, DriverError> {
        let mut line = serde_json::to_vec(spec).map_err(|e| DriverError::SpawnMonitor {
            path: self.monitor_exe().to_owned(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        Ok(line)
    }

    /// Sends one request to the monitor of `name` and returns its reply.
    pub async fn ask(
        &self,
        name: &str,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), DriverError> {
        let socket_path = self.files(name).socket;
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || ask(&name, &socket_path, &request, &fds))
            .await
            .map_err(|e| DriverError::Join(e.to_string()))?
    }

    /// Reads and removes the exit record the monitor left: `None` when it
    /// left none; an error when the record is unreadable (also removed,
    /// it would only be misread again).
    pub fn take_exit_record(&self, name: &str) -> Result<Option<ExitRecord>, DriverError> {
        let path = self.files(name).exit_record;
        let record = persist::read_versioned_if_present(&path);
        let _ = std::fs::remove_file(&path);
        record.map_err(|source| DriverError::ExitRecord {
            name: name.to_owned(),
            source,
        })
    }

    /// Removes the monitor logs (`RUN-DIR/NAME.log`) and console logs of
    /// domains not in `known`, those that went while no daemon watched
    /// (undefine removes a domain's logs itself); returns how many.
    pub fn remove_stale_logs<'a>(&self, known: impl Iterator<Item = &'a str>) -> usize {
        let known: std::collections::HashSet<&str> = known.collect();
        let console_dir = self.config.settings.console_log_dir.as_deref();
        let dirs = std::iter::once(self.run_dir()).chain(console_dir);
        dirs.filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .filter(|entry| {
                let file = entry.file_name();
                let name = file
                    .to_str()
                    .and_then(|f| (f.strip_suffix(".log")).or_else(|| f.strip_suffix(".log.1")));
                name.is_some_and(|n| !known.contains(n))
            })
            .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
            .count()
    }

    /// The console log files of `name`, oldest first.
    pub fn console_logs(&self, name: &str) -> Vec<PathBuf> {
        let Some(current) = self.config.settings.console_log(name) else {
            return Vec::new();
        };
        vec![ConsoleLogSpec::previous(&current), current]
    }

    /// Removes the per-container files of a stopped container.
    /// (The live status `NAME.status` is the core's, which removes it.)
    pub fn remove_files(&self, name: &str) {
        let _ = std::fs::remove_file(self.files(name).socket);
        let _ = std::fs::remove_dir(self.run_dir().join(format!("{name}.root")));
    }
}

/// Gives a waiting monitor its spec and reads its launch report.
fn hand_over(
    mut monitor: SpawnedMonitor,
    files: &RunFiles,
    name: &str,
    spec_line: &[u8],
) -> Result<Started, DriverError> {
    send_spec(&mut monitor.stdin, spec_line);
    let mut line = String::new();
    let _ = BufReader::new(monitor.stdout).read_line(&mut line);
    let (pid, stdin, pidfd) = (monitor.pid, monitor.stdin, monitor.pidfd);
    read_report(&line, pid, stdin, pidfd, files, name, |pidfd| {
        let _ = wait_exit_blocking(pidfd.as_fd());
    })
}

/// The spare's monitor if it still runs.
fn alive(spare: Option<Spare>) -> Option<SpawnedMonitor> {
    spare
        .filter(|spare| is_alive(spare.monitor.pidfd.as_fd()))
        .map(|spare| spare.monitor)
}

/// A monitor given the daemon's priority (a spare waits below it).
fn with_daemon_priority(monitor: SpawnedMonitor) -> SpawnedMonitor {
    if let Err(error) = super::spawner::give_daemon_priority(monitor.pid) {
        tracing::warn!(%error, pid = monitor.pid.as_raw(), "cannot give a spare monitor the daemon's priority; its container runs at the spare's");
    }
    monitor
}

/// [`hand_over`] on the calling task: the report is awaited, not read on a
/// blocking thread. (The spec line fits the empty pipe's buffer.)
async fn hand_over_async(
    monitor: SpawnedMonitor,
    files: &RunFiles,
    name: &str,
    spec_line: &[u8],
) -> Result<Started, DriverError> {
    let (pid, mut stdin, pidfd) = (monitor.pid, monitor.stdin, monitor.pidfd);
    let stdout = match tokio::net::unix::pipe::Receiver::from_file(monitor.stdout) {
        Ok(stdout) => stdout,
        Err(source) => {
            // Its stdin closes unconfirmed: it ends, undoing nothing yet.
            drop(stdin);
            crate::sys::process::wait_exit(pidfd).await;
            return Err(DriverError::ReportPipe {
                name: name.to_owned(),
                source,
            });
        }
    };
    send_spec(&mut stdin, spec_line);
    let mut line = String::new();
    let _ =
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut line)
            .await;
    let mut exited = None;
    let result = read_report(&line, pid, stdin, pidfd, files, name, |pidfd| {
        exited = Some(pidfd);
    });
    if let Some(pidfd) = exited {
        crate::sys::process::wait_exit(pidfd).await;
    }
    result
}

/// Writes the spec to a monitor. One that died early closes the pipe: its
/// report (or its absence) tells what happened. The spec is one line
/// (compact JSON escapes newlines), written at once so that the monitor
/// wakes once; stdin stays open for the confirmation.
fn send_spec(stdin: &mut File, spec_line: &[u8]) {
    let _ = std::io::Write::write_all(stdin, spec_line);
}

/// The start a monitor's report `line` tells of; on failure the monitor's
/// exit is waited for (`reap`) before the error is returned.
fn read_report(
    line: &str,
    monitor_pid: nix::unistd::Pid,
    stdin: File,
    pidfd: OwnedFd,
    files: &RunFiles,
    name: &str,
    reap: impl FnOnce(OwnedFd),
) -> Result<Started, DriverError> {
    match serde_json::from_str::<LaunchReport>(line) {
        Ok(LaunchReport::Started { init_pid }) => Ok(Started {
            init_pid,
            monitor_pid: monitor_pid.as_raw(),
            monitor_start_time: start_time(monitor_pid).unwrap_or(0),
            monitor_pidfd: pidfd,
            recorded: StartRecorded(stdin),
        }),
        Ok(LaunchReport::Failed { error }) => {
            reap(pidfd);
            Err(DriverError::LaunchFailed {
                name: name.to_owned(),
                error,
            })
        }
        Err(_) => {
            reap(pidfd);
            let report = line.trim_end();
            if report.is_empty() {
                Err(DriverError::MonitorDied {
                    name: name.to_owned(),
                    log: files.log.clone(),
                })
            } else {
                Err(DriverError::UnreadableReport {
                    name: name.to_owned(),
                    report: report.to_owned(),
                })
            }
        }
    }
}

fn ask(
    name: &str,
    path: &Path,
    request: &Request,
    fds: &[OwnedFd],
) -> Result<(Reply, Vec<OwnedFd>), DriverError> {
    let connect_error = |source| DriverError::Connect {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    };
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(connect_error)?;
    let address = UnixAddr::new(path).map_err(connect_error)?;
    connect(socket.as_raw_fd(), &address).map_err(connect_error)?;
    let protocol_error = |source| DriverError::Protocol {
        name: name.to_owned(),
        source,
    };
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    protocol::send(socket.as_fd(), request, &raw).map_err(protocol_error)?;
    let (reply, fds) = protocol::recv::<Reply>(socket.as_fd()).map_err(protocol_error)?;
    match reply {
        Reply::Failed { error } => Err(DriverError::Refused {
            name: name.to_owned(),
            error,
        }),
        Reply::Error { message } => Err(DriverError::RefusedByEarlierMonitor {
            name: name.to_owned(),
            message,
        }),
        reply => Ok((reply, fds)),
    }
}

#[cfg(test)]
mod tests {
    use super::{DriverError, LxcDriver};
    use crate::error_chain::error_chain;
    use crate::lxc::launch::LaunchError;
    use crate::lxc::protocol::{ExitRecord, InitExit, MonitorError, Requested};
    use crate::persist::PersistError;
    use crate::sys::Errno;

    /// What the user sees of a monitor's error: the domain, then the
    /// monitor's step, details and fix.
    #[test]
    fn monitor_errors_are_shown_with_the_domain() {
        let err = DriverError::LaunchFailed {
            name: "web".into(),
            error: LaunchError::IdMap {
                path: "/proc/42/uid_map".into(),
                source: Errno::EPERM,
            }
            .into(),
        };
        assert_eq!(
            error_chain(&err),
            "domain 'web': cannot write /proc/42/uid_map; check <idmap>: EPERM: Operation not permitted"
        );
        let err = DriverError::Refused {
            name: "shell".into(),
            error: MonitorError::NoConsole { index: 7, count: 2 },
        };
        assert_eq!(error_chain(&err), "domain 'shell': no console 7; it has 2");
    }

    fn driver_in(dir: &std::path::Path) -> LxcDriver {
        LxcDriver::new(crate::lxc::instance::LxcConfig {
            monitor_exe: "/nonexistent".into(),
            monitor_log: crate::lxc::protocol::MonitorLog::File,
            settings: crate::lxc::convert::ConvertSettings {
                run_dir: dir.to_owned(),
                pids_max: None,
                default_partition: "/machine".into(),
                console_log_dir: None,
            },
            cgroups: None,
            systemd: None,
            ptys: std::sync::Arc::new(crate::lxc::ptys::PtyPool::new(0)),
        })
    }

    #[test]
    fn the_logs_of_domains_that_are_gone_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["web.log", "gone.log", "web.status", "notes.txt"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("networks.log")).unwrap();
        let driver = driver_in(dir.path());
        assert_eq!(driver.remove_stale_logs(["web", "db"].into_iter()), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["networks.log", "notes.txt", "web.log", "web.status"]);
    }

    #[test]
    fn exit_records_are_taken_once_and_a_newer_format_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let driver = driver_in(dir.path());
        let path = driver.files("web").exit_record;
        assert!(driver.take_exit_record("web").unwrap().is_none());

        // As every monitor so far has written it.
        std::fs::write(
            &path,
            r#"{"version":1,"init":{"exited":{"code":0}},"requested":"shutdown","cleanup_errors":[]}"#,
        )
        .unwrap();
        assert_eq!(
            driver.take_exit_record("web").unwrap(),
            Some(ExitRecord {
                init: InitExit::Exited { code: 0 },
                requested: Some(Requested::Shutdown),
                cleanup_errors: vec![],
                retired_cgroups: vec![],
            })
        );
        assert!(!path.exists());

        // A monitor of a newer lxvirtd: not "no record" (a crash), an error.
        std::fs::write(&path, r#"{"version":2,"init":"other"}"#).unwrap();
        let err = driver.take_exit_record("web").unwrap_err();
        assert!(
            matches!(
                &err,
                DriverError::ExitRecord {
                    source: PersistError::Newer { found: 2, .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "domain 'web': cannot use the exit record of its monitor"
        );
        assert!(!path.exists());
    }
}
