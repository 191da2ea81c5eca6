//! The per-container monitor: the parent of the container's init.
//!
//! One small, single-threaded process per running container, without an
//! async runtime. It creates the cgroup and the consoles, launches init,
//! then waits in one `poll(2)` loop: for init to exit (pidfd), for requests
//! on its socket, and for console traffic. It outlives daemon restarts:
//! the daemon finds it again through the status file and its pidfd. When
//! init is gone it cleans up, writes the exit record and exits.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, listen, socket, socketpair,
};
use nix::unistd::Pid;
use tracing::Level;

use super::console_log::ConsoleLog;
use super::convert::block_rule;
use super::enter;
use super::launch::{self, EarlyInit, LaunchContext, LaunchError};
use super::network::ContainerNetwork;
use super::protocol::{
    self, AskInit, EnterExit, ExitRecord, InitExit, LaunchReport, MonitorError, MonitorLog,
    MonitorStep, Reply, Request, Requested, RunFiles,
};
use super::spec::{AttachedLoop, ConsoleLogSpec, ContainerSpec, MountSource, RootFs, SPEC_VERSION};
use crate::cgroup::{CgroupError, Cgroups, ContainerCgroup};
use crate::error_chain::error_chain;
use crate::persist::{self, Durability};
use crate::service::journal::{self, Journal, ProcessLog};
use crate::sys::linux::io_errno;
use crate::sys::process as proc;
use crate::sys::{Linux, LoopDevice, Syscalls};

/// How long a container gets to shut down when its monitor is sent SIGTERM.
const HOST_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bytes moved per read on a console.
const CONSOLE_CHUNK: usize = 4096;

/// The journal's name for monitors (`SYSLOG_IDENTIFIER`).
const LOG_IDENTIFIER: &str = "lxvirt-monitor";

/// Runs the monitor for the spec read from `spec_input` (the daemon's
/// pipe); `report` receives the one [`LaunchReport`] line; it logs as
/// `log` says; `mount_template` is the daemon's template mount namespace.
/// Returns the process exit status.
pub fn run(
    spec_input: impl std::io::Read,
    mut report: File,
    log: MonitorLog,
    early: Option<CloneFlags>,
    mount_template: Option<OwnedFd>,
) -> i32 {
    let mut daemon = std::io::BufReader::new(spec_input);
    // A spare monitor finds the cgroup hierarchies while it waits for its
    // spec, off the start's path.
    let hierarchies = Cgroups::detect();
    // Signals arrive through a descriptor in the event loop; the container
    // and entered commands reset their masks before they exec.
    let started = termination_signals().and_then(|signals| {
        let mut line = read_line(&mut daemon)?;
        // A spare asked for its early init makes it (on a host that
        // refuses the namespaces the launch's own clone says why), then
        // waits for its spec.
        let early = if line.strip_suffix(b"\n") == Some(protocol::EARLY_REQUEST.as_bytes()) {
            let template = mount_template.as_ref().map(|fd| fd.as_fd());
            let made = match early.map(|flags| EarlyInit::clone(flags, template)) {
                Some(Ok(made)) => Some(made),
                // Left in the early init's namespaces: no launch can
                // follow.
                Some(Err(error @ LaunchError::RestoreNamespace { .. })) => {
                    return Err(error.into());
                }
                Some(Err(_)) | None => None,
            };
            line = read_line(&mut daemon)?;
            made
        } else {
            None
        };
        let mut spec = parse_spec(&line)?;
        let loops = attach_loop_devices(&mut spec)?;
        Ok((signals, spec, loops, early))
    });
    let (signals, spec, loops, early) = match started {
        Ok(started) => started,
        Err(error) => {
            let _ = write_report(&mut report, &LaunchReport::Failed { error });
            return 1;
        }
    };
    let files = RunFiles::new(&spec.run_dir, &spec.name);
    log_to(&files.log);
    start_logging(log, &spec);
    // One that does not fit goes once the start is reported.
    let (early, unfit) = match early {
        Some(early) if early.fits(&spec) => (Some(early), None),
        other => (None, other),
    };
    let started = Monitor::start(
        &spec,
        &files,
        signals,
        hierarchies,
        early,
        mount_template.as_ref().map(|fd| fd.as_fd()),
    );
    // Only the mounter needed it.
    drop(mount_template);
    let mut monitor = match started {
        Ok(monitor) => monitor,
        Err(error) => {
            let _ = write_report(&mut report, &LaunchReport::Failed { error });
            return 1;
        }
    };
    // Mounted by now: each device goes when its mount does (autoclear).
    drop(loops);
    let reported = write_report(
        &mut report,
        &LaunchReport::Started {
            init_pid: monitor.init_pid.as_raw(),
        },
    );
    drop(report);
    // Reaped after the report: its exit's teardown is off the start's path.
    drop(monitor.mounter.take());
    drop(unfit);
    // The daemon records the container, then says so; if it dies first
    // (its end of stdin closes) nobody will ever know of this container:
    // do not leave it running unmanaged.
    if reported.is_err() || !start_recorded(&mut daemon) {
        tracing::warn!("the daemon did not record the start; stopping the container");
        monitor.kill_init();
    }
    drop(daemon);
    tracing::info!(init_pid = monitor.init_pid.as_raw(), "container started");
    // The start's transient allocations (the spec, the setup) are free
    // now; a thousand monitors keep only what they use.
    crate::sys::process::release_free_heap();
    monitor.serve();
    monitor.finish();
    0
}

/// Sends log messages to stderr (the log file) or to the journal, each
/// entry with the domain's name and UUID. Only events at info and above
/// are formatted at all.
fn start_logging(log: MonitorLog, spec: &ContainerSpec) {
    let subscriber = match log {
        MonitorLog::File => ProcessLog::stderr(LOG_IDENTIFIER, Level::INFO),
        MonitorLog::Journal => match Journal::open(Path::new(journal::SOCKET)) {
            Ok(journal) => ProcessLog::journal(journal, LOG_IDENTIFIER, Level::INFO)
                .with_field("domain", &spec.name)
                .with_field("uuid", spec.uuid),
            Err(error) => {
                eprintln!("{LOG_IDENTIFIER}: {}; logging here", error_chain(&error));
                ProcessLog::stderr(LOG_IDENTIFIER, Level::INFO)
            }
        },
    };
    // Nothing was installed before: this process has one subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Sends stderr to the container's log file.
fn log_to(path: &Path) {
    if let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = nix::unistd::dup2_stderr(OwnedFd::from(file));
    }
}

/// A line from the daemon: an early init's request, or the spec.
fn read_line(input: &mut impl std::io::BufRead) -> Result<Vec<u8>, MonitorError> {
    let mut bytes = Vec::new();
    input
        .read_until(b'\n', &mut bytes)
        .map_err(|e| MonitorError::system(MonitorStep::ReadSpec, io_errno(e)))?;
    Ok(bytes)
}

fn parse_spec(bytes: &[u8]) -> Result<ContainerSpec, MonitorError> {
    let spec: ContainerSpec = serde_json::from_slice(bytes).map_err(|e| MonitorError::Spec {
        reason: e.to_string(),
    })?;
    if spec.version != SPEC_VERSION {
        return Err(LaunchError::SpecVersion {
            found: spec.version,
        }
        .into());
    }
    Ok(spec)
}

/// The console log, or none (logged) if it cannot be opened: the
/// container runs either way.
fn open_console_log(spec: &ConsoleLogSpec) -> Option<ConsoleLog> {
    ConsoleLog::open(spec)
        .inspect_err(|error| {
            tracing::warn!(path = %spec.path.display(), error = %error, "cannot open the console log; none is kept");
        })
        .ok()
}

/// Waits for the daemon's word that it recorded the start: `false` when
/// its end closes first (it died, or dropped a start gone stale).
fn start_recorded(daemon: &mut impl std::io::BufRead) -> bool {
    let mut line = String::new();
    matches!(daemon.read_line(&mut line), Ok(n) if n > 0)
        && line.trim_end() == protocol::START_RECORDED
}

fn write_report(report: &mut File, message: &LaunchReport) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    report.write_all(&line)
}

/// One console: the pty master and the client attached to it, if any.
struct Console {
    master: OwnedFd,
    client: Option<OwnedFd>,
    /// The slave side went away (EIO): stop polling the master.
    closed: bool,
}

/// A command started with `enter`.
struct Entered {
    pidfd: OwnedFd,
    exit_pipe: OwnedFd,
}

struct Monitor<'a> {
    spec: &'a ContainerSpec,
    files: &'a RunFiles,
    cgroup: ContainerCgroup,
    init_pid: Pid,
    init_pidfd: OwnedFd,
    listener: OwnedFd,
    /// SIGTERM (host shutdown: shut the container down), SIGINT, SIGHUP.
    signals: SignalFd,
    consoles: Vec<Console>,
    entered: Vec<Entered>,
    requested: Option<Requested>,
    /// When a shutdown's grace period ends.
    kill_deadline: Option<Instant>,
    init_exit: Option<InitExit>,
    /// The container's network devices, torn down once it has ended.
    network: Option<ContainerNetwork>,
    /// The mounter until the start is reported (see `Launched`).
    mounter: Option<launch::MounterProcess>,
    /// Console 0's output, kept whether or not a client is attached.
    console_log: Option<ConsoleLog>,
}

impl<'a> Monitor<'a> {
    fn start(
        spec: &'a ContainerSpec,
        files: &'a RunFiles,
        signals: SignalFd,
        hierarchies: Result<Cgroups, CgroupError>,
        early: Option<EarlyInit>,
        mount_template: Option<BorrowedFd<'_>>,
    ) -> Result<Monitor<'a>, MonitorError> {
        // A record from an earlier run must not be mistaken for this one's.
        let _ = std::fs::remove_file(&files.exit_record);
        let listener = listen_on(&files.socket)?;
        let cgroups = hierarchies
            .map_err(cgroup_error)
            .and_then(|cgroups| leave_delegated_top(&cgroups, spec).map(|()| cgroups))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&files.socket);
            })?;
        // Made during the launch (see `launch`); the error that stopped
        // it, if it was the making.
        let mut made: Option<ContainerCgroup> = None;
        let mut refused: Option<MonitorError> = None;
        let result = Self::launch(
            spec,
            &cgroups,
            early,
            mount_template,
            &mut made,
            &mut refused,
        );
        let result = match (result, made.take()) {
            (Ok(launched), Some(cgroup)) => Ok((launched, cgroup)),
            (Ok((launched, _)), None) => {
                // Unreachable: init is placed before it is released.
                let _ = proc::pidfd_kill(launched.pidfd.as_fd(), Signal::SIGKILL);
                Err((
                    MonitorError::Cgroup {
                        reason: "init was released outside its cgroups".into(),
                    },
                    None,
                ))
            }
            (Err(error), cgroup) => Err((refused.unwrap_or(error), cgroup)),
        };
        match result {
            Ok(((launched, consoles), cgroup)) => Ok(Monitor {
                spec,
                files,
                cgroup,
                init_pid: launched.pid,
                init_pidfd: launched.pidfd,
                network: launched.network,
                mounter: launched.mounter,
                listener,
                signals,
                consoles,
                entered: Vec::new(),
                requested: None,
                kill_deadline: None,
                init_exit: None,
                console_log: spec.console_log.as_ref().and_then(open_console_log),
            }),
            Err((error, cgroup)) => {
                if let Some(cgroup) = cgroup {
                    let _ = cgroup.remove();
                }
                let _ = std::fs::remove_file(&files.socket);
                Err(error)
            }
        }
    }

    /// Launches init; its cgroup is made once init is cloned (in `made`;
    /// in `refused` the error when the making fails), so that with a user
    /// namespace the monitor makes it while the mounter makes the mounts.
    fn launch(
        spec: &ContainerSpec,
        cgroups: &Cgroups,
        early: Option<EarlyInit>,
        mount_template: Option<BorrowedFd<'_>>,
        made: &mut Option<ContainerCgroup>,
        refused: &mut Option<MonitorError>,
    ) -> Result<(launch::Launched, Vec<Console>), MonitorError> {
        let root_ids = spec
            .namespaces
            .user
            .as_ref()
            .map(|m| (m.root_uid().unwrap_or(0), m.root_gid().unwrap_or(0)));
        let mut place = |pid: Pid| -> Result<(), String> {
            let cgroup = match create_cgroup(cgroups, spec) {
                Ok(cgroup) => made.insert(cgroup),
                Err(error) => {
                    let reason = error.to_string();
                    *refused = Some(error);
                    return Err(reason);
                }
            };
            cgroup
                .add_process(pid.as_raw())
                .and_then(|()| match root_ids {
                    Some((uid, gid)) => cgroup.chown(uid, gid),
                    None => Ok(()),
                })
                .map_err(|error| error_chain(&error))
        };
        let mut launched = launch::launch(LaunchContext {
            spec,
            place_in_cgroup: &mut place,
            early,
            mount_template,
        })?;
        let consoles = std::mem::take(&mut launched.consoles)
            .into_iter()
            .map(|master| Console {
                master,
                client: None,
                closed: false,
            })
            .collect();
        Ok((launched, consoles))
    }

    fn kill_init(&self) {
        let _ = proc::pidfd_kill(self.init_pidfd.as_fd(), Signal::SIGKILL);
    }

    /// The event loop; returns when init has exited.
    fn serve(&mut self) {
        while self.init_exit.is_none() {
            let timeout = match self.kill_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(60_000) as u64)
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let events = self.poll_once(timeout);
            if let Some(deadline) = self.kill_deadline
                && Instant::now() >= deadline
            {
                self.kill_deadline = None;
                self.kill_all();
            }
            self.dispatch(events);
        }
    }

    /// Which descriptors are ready, as indices into the order of `fds()`.
    fn poll_once(&self, timeout: PollTimeout) -> Vec<(Source, PollFlags)> {
        let sources = self.sources();
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => Vec::new(),
            Ok(_) => fds
                .iter()
                .zip(&sources)
                .filter_map(|(pfd, (source, _))| {
                    pfd.revents()
                        .filter(|r| !r.is_empty())
                        .map(|r| (*source, r))
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn sources(&self) -> Vec<(Source, BorrowedFd<'_>)> {
        let mut sources = vec![
            (Source::Init, self.init_pidfd.as_fd()),
            (Source::Listener, self.listener.as_fd()),
            (Source::Signal, self.signals.as_fd()),
        ];
        for (i, console) in self.consoles.iter().enumerate() {
            if !console.closed {
                sources.push((Source::ConsoleMaster(i), console.master.as_fd()));
            }
            if let Some(client) = &console.client {
                sources.push((Source::ConsoleClient(i), client.as_fd()));
            }
        }
        for (i, entered) in self.entered.iter().enumerate() {
            sources.push((Source::Entered(i), entered.pidfd.as_fd()));
        }
        sources
    }

    fn dispatch(&mut self, events: Vec<(Source, PollFlags)>) {
        // Entered commands are removed by index: handle them last, highest first.
        let mut finished = Vec::new();
        for (source, flags) in events {
            match source {
                Source::Init => self.reap_init(),
                Source::Listener => self.accept(),
                Source::Signal => self.signal(),
                Source::ConsoleMaster(i) => self.console_output(i, flags),
                Source::ConsoleClient(i) => self.console_input(i),
                Source::Entered(i) => finished.push(i),
            }
        }
        finished.sort_unstable_by(|a, b| b.cmp(a));
        for i in finished {
            let entered = self.entered.swap_remove(i);
            report_entered_exit(&entered);
        }
    }

    fn reap_init(&mut self) {
        match proc::reap_pidfd(self.init_pidfd.as_fd()) {
            Ok(proc::ExitStatus::Exited(code)) => self.init_exit = Some(InitExit::Exited { code }),
            Ok(proc::ExitStatus::Signaled(signal)) => {
                self.init_exit = Some(InitExit::Signaled { signal })
            }
            // Not exited after all (spurious wake-up).
            Err(Errno::EAGAIN) => {}
            Err(_) => self.init_exit = Some(InitExit::Signaled { signal: 9 }),
        }
    }

    /// SIGTERM, as a host shutdown sends it, shuts the container down as
    /// `lxvirt shutdown` does; SIGINT and SIGHUP are ignored (a monitor must
    /// not die of its session ending).
    fn signal(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo == Signal::SIGTERM as u32 {
                tracing::info!("SIGTERM (host shutdown): shutting the container down");
                self.handle(
                    Request::Shutdown {
                        grace_ms: HOST_SHUTDOWN_GRACE.as_millis() as u64,
                        how: AskInit::AsItWants,
                    },
                    Vec::new(),
                );
            }
        }
    }

    fn accept(&mut self) {
        let Ok(connection) = accept4(&self.listener, SockFlag::SOCK_CLOEXEC) else {
            return;
        };
        // One request per connection; the daemon sends it right away. A
        // short receive timeout keeps a stuck client from stalling the loop.
        let _ = nix::sys::socket::setsockopt(
            &connection,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(1, 0),
        );
        let (request, fds) = match protocol::recv::<Request>(connection.as_fd()) {
            Ok(message) => message,
            Err(e) => {
                let error = MonitorError::BadRequest {
                    reason: error_chain(&e),
                };
                let _ = protocol::send(connection.as_fd(), &Reply::Failed { error }, &[]);
                return;
            }
        };
        let (reply, reply_fds) = self.handle(request, fds);
        let raw: Vec<RawFd> = reply_fds.iter().map(AsRawFd::as_raw_fd).collect();
        let _ = protocol::send(connection.as_fd(), &reply, &raw);
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) -> (Reply, Vec<OwnedFd>) {
        match request {
            Request::Status => (
                Reply::Status {
                    init_pid: self.init_pid.as_raw(),
                    monitor_pid: std::process::id() as i32,
                },
                Vec::new(),
            ),
            Request::Destroy => {
                self.requested = Some(Requested::Destroy);
                self.kill_all();
                (Reply::Ok, Vec::new())
            }
            Request::Shutdown { grace_ms, how } => {
                self.ask_init_to_stop(how);
                if self.requested.is_none() {
                    self.requested = Some(Requested::Shutdown);
                }
                let deadline = Instant::now() + Duration::from_millis(grace_ms);
                self.kill_deadline = Some(match self.kill_deadline {
                    Some(earlier) => earlier.min(deadline),
                    None => deadline,
                });
                (Reply::Ok, Vec::new())
            }
            Request::Console { index } => self.attach_console(index),
            Request::Enter {
                argv,
                env,
                cwd,
                noseclabel,
                tty,
            } => self.enter(argv, env, cwd, noseclabel, tty, fds),
        }
    }

    /// Asks init to stop as `how` says (as init wants it by default:
    /// systemd halts on SIGRTMIN+3 and ignores SIGTERM, sysvinit halts on
    /// a runlevel 0 request and ignores SIGTERM too). A FIFO nobody reads
    /// (the daemon checked it was there) falls back to SIGTERM: the kill
    /// at the end of the grace period stays the last word either way.
    fn ask_init_to_stop(&self, how: AskInit) {
        let how = match how {
            AskInit::AsItWants => self.init_wants(),
            other => other,
        };
        tracing::info!(how = ?how, "asking init to stop");
        let signal = match how {
            AskInit::Initctl => {
                match super::initctl::request_runlevel(self.init_pid.as_raw(), b'0') {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "initctl failed, sending SIGTERM");
                        libc::SIGTERM
                    }
                }
            }
            AskInit::Systemd => libc::SIGRTMIN() + 3,
            AskInit::Signal | AskInit::AsItWants => libc::SIGTERM,
        };
        // Init already gone: the exit is on its way.
        let _ = proc::pidfd_signal(self.init_pidfd.as_fd(), signal);
    }

    /// How init wants to be asked: by its name (`comm`; a container that
    /// renames its init only changes how it is asked) and its FIFO.
    fn init_wants(&self) -> AskInit {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.init_pid));
        if comm.is_ok_and(|c| c.trim_end() == "systemd") {
            AskInit::Systemd
        } else if super::initctl::present(self.init_pid.as_raw()) {
            AskInit::Initctl
        } else {
            AskInit::Signal
        }
    }

    fn attach_console(&mut self, index: u32) -> (Reply, Vec<OwnedFd>) {
        let count = self.consoles.len() as u32;
        let Some(console) = self.consoles.get_mut(index as usize) else {
            return error_reply(MonitorError::NoConsole { index, count });
        };
        let (ours, theirs) = match socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(pair) => pair,
            Err(e) => return error_reply(MonitorError::system(MonitorStep::ConsoleChannel, e)),
        };
        // The client's end blocks, as a terminal would.
        let _ = nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        );
        console.client = Some(ours);
        (Reply::Ok, vec![theirs])
    }

    fn console_output(&mut self, index: usize, flags: PollFlags) {
        let Some(console) = self.consoles.get_mut(index) else {
            return;
        };
        let mut buffer = [0u8; CONSOLE_CHUNK];
        match nix::unistd::read(&console.master, &mut buffer) {
            Ok(0) => console.closed = true,
            Ok(n) => {
                if let Some(client) = &console.client
                    && matches!(nix::unistd::write(client, &buffer[..n]), Err(e) if e != Errno::EAGAIN)
                {
                    console.client = None;
                }
                // Without a client the output is dropped (but for the
                // log), so the container never blocks on a full console.
                if index == 0
                    && let Some(log) = &mut self.console_log
                    && let Err(error) = log.write(&buffer[..n])
                {
                    tracing::warn!(error = %error, "cannot write the console log; no longer kept");
                    self.console_log = None;
                }
            }
            Err(Errno::EAGAIN) => {}
            Err(_) => {
                // EIO: no process holds the slave open (yet, or any more).
                if flags.contains(PollFlags::POLLHUP) {
                    console.closed = true;
                }
            }
        }
    }

    fn console_input(&mut self, index: usize) {
        let Some(console) = self.consoles.get_mut(index) else {
            return;
        };
        let Some(client) = &console.client else {
            return;
        };
        let mut buffer = [0u8; CONSOLE_CHUNK];
        match nix::unistd::read(client, &mut buffer) {
            Ok(0) => console.client = None,
            Ok(n) => {
                let _ = write_all_nonblocking(&console.master, &buffer[..n]);
            }
            Err(Errno::EAGAIN) => {}
            Err(_) => console.client = None,
        }
    }

    #[allow(clippy::too_many_arguments)] // the request's fields
    fn enter(
        &mut self,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        noseclabel: bool,
        tty: bool,
        fds: Vec<OwnedFd>,
    ) -> (Reply, Vec<OwnedFd>) {
        let (stdio, master) = if tty {
            match self.open_terminal() {
                Ok((master, stdio)) => (stdio, Some(master)),
                Err(error) => return error_reply(error),
            }
        } else {
            match fds.try_into() {
                Ok(stdio) => (stdio, None),
                Err(_) => return error_reply(MonitorError::NoStdio),
            }
        };
        let (exit_read, exit_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => pipe,
            Err(e) => return error_reply(MonitorError::system(MonitorStep::ExitPipe, e)),
        };
        let command = enter::EnterCommand {
            spec: self.spec,
            init_pid: self.init_pid,
            cgroup: &self.cgroup,
            argv,
            env,
            cwd,
            noseclabel,
            controlling_terminal: tty,
            stdio,
        };
        match enter::spawn(command) {
            Ok((pid, pidfd)) => {
                self.entered.push(Entered {
                    pidfd,
                    exit_pipe: exit_write,
                });
                let fds = std::iter::once(exit_read).chain(master).collect();
                (Reply::Entered { pid: pid.as_raw() }, fds)
            }
            Err(error) => error_reply(error),
        }
    }

    /// A new pty of the container's own devpts instance, its slave owned
    /// by root inside: the master, and the slave three times as stdio.
    fn open_terminal(&self) -> Result<(OwnedFd, [OwnedFd; 3]), MonitorError> {
        let owner = self
            .spec
            .namespaces
            .user
            .as_ref()
            .map(|m| (m.root_uid().unwrap_or(0), m.root_gid().unwrap_or(0)));
        let (master, slave) = super::terminal::open(self.init_pid.as_raw(), owner)
            .map_err(|e| MonitorError::system(MonitorStep::Terminal, e))?;
        let copy = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| MonitorError::system(MonitorStep::Terminal, io_errno(e)))
        };
        let stdio = [copy(&slave)?, copy(&slave)?, slave];
        Ok((master, stdio))
    }

    /// SIGKILL to init (which takes its whole PID namespace along) and to
    /// anything else left in the cgroup.
    fn kill_all(&mut self) {
        self.kill_init();
        let _ = self.cgroup.kill_all();
    }

    /// After init's exit: make sure nothing of the container is left, write
    /// the exit record, remove the socket.
    fn finish(self) {
        let mut cleanup_errors = Vec::new();
        // Processes that escaped init's PID namespace cannot exist, but
        // entered ones outlive a crashed init until the namespace is torn
        // down: wait a little for the cgroup to empty.
        let _ = self.cgroup.kill_and_wait(Duration::from_secs(5));
        // Entered commands died with the PID namespace; their waiting
        // parents exit right after: report each one's status.
        for entered in &self.entered {
            let mut fds = [PollFd::new(entered.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
            report_entered_exit(entered);
        }
        // Host interfaces back to the host, veth host ends deleted, while
        // the sockets still hold the container's network namespace.
        if let Some(network) = self.network {
            cleanup_errors.extend(network.tear_down().iter().map(|e| error_chain(e)));
        }
        let retired_cgroups = match self.cgroup.remove_retiring_memory() {
            Ok(retired) => retired,
            Err(e) => {
                cleanup_errors.push(error_chain(&e));
                Vec::new()
            }
        };
        for problem in &cleanup_errors {
            tracing::warn!(problem = %problem, "cleanup after the container left something");
        }
        let record = ExitRecord {
            init: self.init_exit.unwrap_or(InitExit::Signaled { signal: 9 }),
            requested: self.requested,
            cleanup_errors,
            retired_cgroups,
        };
        match record.init {
            InitExit::Exited { code } => {
                tracing::info!(status = code, requested = ?record.requested, "container ended: init exited")
            }
            InitExit::Signaled { signal } => {
                tracing::info!(signal, requested = ?record.requested, "container ended: init was killed")
            }
        }
        // The daemon finds no record and takes the container for crashed.
        if let Err(error) = persist::write_versioned(
            &self.files.exit_record,
            &record,
            0o600,
            Durability::Volatile,
        ) {
            tracing::warn!(error = %error_chain(&error), "cannot write the exit record");
        }
        let _ = std::fs::remove_file(&self.files.socket);
    }
}

/// In a delegated scope, the monitor leaves the scope's top for a cgroup
/// of its own beside the container's, before init is cloned (no process
/// may stay in a cgroup v2 whose children have controllers).
fn leave_delegated_top(cgroups: &Cgroups, spec: &ContainerSpec) -> Result<(), MonitorError> {
    match &spec.cgroup.delegated {
        Some(delegated) => cgroups.enter_supervisor(delegated, 0).map_err(cgroup_error),
        None => Ok(()),
    }
}

/// Attaches a loop device for each file-backed filesystem of `spec` (its
/// root, its mounts), names it in `spec.loop_devices` for the setup, and
/// allows it in the cgroup: the allow-list is fixed when the cgroup is
/// made, before the setup, which mounts it from inside the cgroup when
/// there is no user namespace (as libvirt's controller attaches loop
/// devices before it sets up the cgroup). The handles hold the devices
/// until the container runs; autoclear then ties each one to its mount.
fn attach_loop_devices(spec: &mut ContainerSpec) -> Result<Vec<LoopDevice>, MonitorError> {
    let root = match &spec.root {
        RootFs::File { path, readonly } => Some((path.clone(), *readonly)),
        _ => None,
    };
    let mounted = spec.mounts.iter().filter_map(|m| match &m.source {
        MountSource::File(file) => Some((file.clone(), m.readonly)),
        _ => None,
    });
    let files: Vec<(PathBuf, bool)> = root.into_iter().chain(mounted).collect();
    let mut loops = Vec::with_capacity(files.len());
    for (file, readonly) in files {
        let failed = |errno| MonitorError::System {
            step: MonitorStep::AttachLoop,
            path: Some(file.clone()),
            errno,
        };
        let device = Linux.loop_attach(&file, readonly).map_err(failed)?;
        let rdev = nix::sys::stat::stat(&device.path).map_err(failed)?.st_rdev;
        spec.cgroup.devices.push(block_rule(
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
            readonly,
        ));
        spec.loop_devices.push(AttachedLoop {
            file,
            device: device.path.clone(),
        });
        loops.push(device);
    }
    Ok(loops)
}

/// Creates the container's cgroup; an empty one left by a monitor that
/// died is removed first, a populated one is refused.
fn create_cgroup(cgroups: &Cgroups, spec: &ContainerSpec) -> Result<ContainerCgroup, MonitorError> {
    match cgroups.create(&spec.cgroup) {
        Err(CgroupError::Exists { .. }) => {
            let stale = cgroups.open(&spec.cgroup.path).map_err(cgroup_error)?;
            if !stale.is_empty().unwrap_or(false) {
                return Err(MonitorError::CgroupBusy {
                    path: spec.cgroup.path.clone(),
                });
            }
            stale.remove().map_err(cgroup_error)?;
            cgroups.create(&spec.cgroup).map_err(cgroup_error)
        }
        result => result.map_err(cgroup_error),
    }
}

/// A cgroup layer's error for the daemon: its message with its causes.
fn cgroup_error(error: CgroupError) -> MonitorError {
    MonitorError::Cgroup {
        reason: error_chain(&error),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Init,
    Listener,
    Signal,
    ConsoleMaster(usize),
    ConsoleClient(usize),
    Entered(usize),
}

/// Reaps an entered command and writes its status to its exit pipe.
fn report_entered_exit(entered: &Entered) {
    let exit = match proc::reap_pidfd(entered.pidfd.as_fd()) {
        Ok(proc::ExitStatus::Exited(code)) => EnterExit::Exited { code },
        Ok(proc::ExitStatus::Signaled(signal)) => EnterExit::Signaled { signal },
        Err(_) => EnterExit::Signaled { signal: 9 },
    };
    let _ = nix::unistd::write(&entered.exit_pipe, &exit.line());
}

/// Blocks SIGTERM, SIGINT and SIGHUP and returns a descriptor to read them.
fn termination_signals() -> Result<SignalFd, MonitorError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGHUP);
    mask.thread_block()
        .map_err(|e| MonitorError::system(MonitorStep::BlockSignals, e))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| MonitorError::system(MonitorStep::SignalFd, e))
}

fn error_reply(error: MonitorError) -> (Reply, Vec<OwnedFd>) {
    (Reply::Failed { error }, Vec::new())
}

fn listen_on(path: &Path) -> Result<OwnedFd, MonitorError> {
    let _ = std::fs::remove_file(path);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| MonitorError::system(MonitorStep::CreateSocket, e))?;
    let address = UnixAddr::new(path)
        .map_err(|e| MonitorError::system_at(MonitorStep::SocketPath, path, e))?;
    // Only root may talk to the monitor: the socket is created 0600.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &address);
    nix::sys::stat::umask(old);
    bound.map_err(|e| MonitorError::system_at(MonitorStep::BindSocket, path, e))?;
    listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| MonitorError::system_at(MonitorStep::ListenSocket, path, e))?;
    Ok(fd)
}

fn write_all_nonblocking(fd: &OwnedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            // A full pty input queue: drop the rest rather than stall.
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
