//! What the daemon and a container's monitor say to each other.
//!
//! - At start, the daemon writes the launch spec as one JSON line on the
//!   monitor's stdin; the monitor writes one [`LaunchReport`] line to the
//!   pipe it was given, then closes it. After a `Started` report it waits
//!   for the daemon's [`START_RECORDED`] line on stdin, sent once the
//!   daemon has recorded the container (its live status file): should the
//!   daemon die before, stdin ends first and the monitor kills the
//!   container, so that no start nobody recorded leaves one running.
//! - While the container runs, the monitor answers [`Request`]s on a unix
//!   `SOCK_SEQPACKET` socket (`NAME.sock` in the run directory): one JSON
//!   message per packet, file descriptors alongside as `SCM_RIGHTS`.
//! - When init is gone, the monitor writes an [`ExitRecord`] (`NAME.exit`)
//!   atomically and exits; the daemon learns of it through a pidfd, also
//!   after a daemon restart.
//!
//! Failures cross as a [`MonitorError`]: the step and its details (errno,
//! path, init's own setup report) as fields, never a preformatted message,
//! so the daemon keeps the kind and names the domain itself.
//!
//! Compatibility: the daemon starts monitors from its own build (a spare
//! monitor of the daemon that started it exits with it), so launch spec
//! and launch report always match; the spec carries [`SPEC_VERSION`]
//! anyway. A running monitor outlives daemon upgrades, though: a daemon
//! reads every [`Reply`] an earlier monitor sends (see [`Reply::Error`])
//! and the [`ExitRecord`] is versioned.
//!
//! [`SPEC_VERSION`]: super::spec::SPEC_VERSION

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use super::launch::LaunchError;
use crate::persist::Versioned;
use crate::sys::Errno;

/// The line the daemon sends a monitor once it has recorded the start.
pub const START_RECORDED: &str = "recorded";

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors in one message (an `enter` passes stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Files of one container in the run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub socket: PathBuf,
    pub exit_record: PathBuf,
    pub log: PathBuf,
}

impl RunFiles {
    pub fn new(run_dir: &Path, name: &str) -> RunFiles {
        RunFiles {
            socket: run_dir.join(format!("{name}.sock")),
            exit_record: run_dir.join(format!("{name}.exit")),
            log: run_dir.join(format!("{name}.log")),
        }
    }
}

/// Where a monitor's log messages go, chosen by the daemon and given on
/// the monitor's command line. Its stderr goes to `NAME.log` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MonitorLog {
    /// `RUN-DIR/NAME.log`.
    #[default]
    File,
    /// The journal, each entry with the domain's name and UUID
    /// (`lxvirt-monitor RUN-DIR --journal`).
    Journal,
}

impl MonitorLog {
    const JOURNAL_FLAG: &'static str = "--journal";

    /// The monitor's arguments after the run directory.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            MonitorLog::File => &[],
            MonitorLog::Journal => &[Self::JOURNAL_FLAG],
        }
    }

    /// The choice the arguments after the run directory make.
    pub fn from_args<A: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = A>) -> MonitorLog {
        if args.into_iter().any(|a| a.as_ref() == Self::JOURNAL_FLAG) {
            MonitorLog::Journal
        } else {
            MonitorLog::File
        }
    }
}

/// The argument that tells a spare monitor the namespaces of the early init
/// it is to make when asked (the daemon's guess: the last start's).
pub const EARLY_CLONE_ARG: &str = "--early-clone=";

/// The line that asks a spare given `--early-clone` for its early init,
/// before its spec: the daemon sends it once no start is under way.
pub const EARLY_REQUEST: &str = "early";

/// `--early-clone=FLAGS`, the flags in hexadecimal.
pub fn early_clone_arg(flags: nix::sched::CloneFlags) -> String {
    format!("{EARLY_CLONE_ARG}{:x}", flags.bits())
}

/// The flags of an `--early-clone=` among the monitor's arguments.
pub fn early_clone_from_args<A: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = A>,
) -> Option<nix::sched::CloneFlags> {
    args.into_iter().find_map(|arg| {
        let hex = arg.as_ref().to_str()?.strip_prefix(EARLY_CLONE_ARG)?;
        let bits = i32::from_str_radix(hex, 16).ok()?;
        nix::sched::CloneFlags::from_bits(bits)
    })
}

/// The argument that hands a monitor the daemon's template mount
/// namespace: the number of a descriptor it inherits.
pub const MOUNT_TEMPLATE_ARG: &str = "--mount-template=";

/// `--mount-template=FD`.
pub fn mount_template_arg(fd: std::os::fd::RawFd) -> String {
    format!("{MOUNT_TEMPLATE_ARG}{fd}")
}

/// The descriptor of a `--mount-template=` among the monitor's arguments.
pub fn mount_template_from_args<A: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = A>,
) -> Option<std::os::fd::RawFd> {
    args.into_iter().find_map(|arg| {
        arg.as_ref()
            .to_str()?
            .strip_prefix(MOUNT_TEMPLATE_ARG)?
            .parse()
            .ok()
    })
}

/// The monitor's answer to "did the container start?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchReport {
    /// Init has been executed.
    Started { init_pid: i32 },
    /// The container could not start; nothing is left behind.
    Failed { error: MonitorError },
}

/// A request to a monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Ask init to stop (`how`), SIGKILL to the container after
    /// `grace_ms`. (`how` is absent from an older daemon's request: it
    /// asked with SIGTERM.)
    Shutdown {
        grace_ms: u64,
        #[serde(default = "AskInit::older_daemon")]
        how: AskInit,
    },
    /// SIGKILL to every process of the container.
    Destroy,
    /// Attach to console `index`: the reply carries one end of a socket
    /// pair relayed to the console's pty. A new attach replaces the old.
    Console { index: u32 },
    /// Run a command inside the container with the three descriptors of
    /// the message as its stdin, stdout and stderr. The reply carries a
    /// pipe that yields an [`EnterExit`] line when the command ends.
    Enter {
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        /// Skip the container's SELinux process label.
        noseclabel: bool,
        /// Give the command a terminal of the container's own devpts as
        /// stdio and controlling terminal, instead of descriptors in the
        /// message; the reply carries its master after the exit pipe.
        #[serde(default)]
        tty: bool,
    },
    /// Liveness and the pids the monitor knows.
    Status,
}

/// A monitor's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Status {
        init_pid: i32,
        monitor_pid: i32,
    },
    /// The command runs as this host pid.
    Entered {
        pid: i32,
    },
    /// The request failed.
    Failed {
        error: MonitorError,
    },
    /// The request failed, as monitors of lxvirtd before [`MonitorError`]
    /// say it. Never sent any more; read because such a monitor may still
    /// run its container after a daemon upgrade.
    Error {
        message: String,
    },
}

/// Why a monitor could not start its container or do what a request
/// asked. Serialized with its kind and details; the daemon names the
/// domain (the monitor's errors are all about its one container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MonitorError {
    /// The launch spec on stdin does not decode.
    #[error(
        "cannot decode the launch spec ({reason}); lxvirtd and lxvirt-monitor must come from the same build, restart lxvirtd after an upgrade"
    )]
    Spec { reason: String },
    /// A system call of the monitor itself failed.
    #[error("{}", step.describe(path.as_deref()))]
    System {
        step: MonitorStep,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        #[source]
        #[serde(with = "errno_number")]
        errno: Errno,
    },
    /// The cgroup layer failed; its message, causes included.
    #[error("{reason}")]
    Cgroup { reason: String },
    #[error(
        "cgroup {} still has processes: another instance of this domain runs outside lxvirtd's control; stop it first",
        path.display()
    )]
    CgroupBusy { path: PathBuf },
    /// Launching init failed: the step with its errno, or init's own
    /// setup report.
    #[error(transparent)]
    Launch { error: LaunchError },
    #[error("no console {index}; it has {count}")]
    NoConsole { index: u32, count: u32 },
    #[error("enter needs a command to run")]
    NoCommand,
    #[error("enter needs stdin, stdout and stderr descriptors")]
    NoStdio,
    #[error("cannot build the seccomp filter: {reason}")]
    Seccomp { reason: String },
    #[error("the monitor cannot read the request: {reason}")]
    BadRequest { reason: String },
}

impl MonitorError {
    /// A failed system call of the monitor at `step`.
    pub fn system(step: MonitorStep, errno: Errno) -> MonitorError {
        MonitorError::System {
            step,
            path: None,
            errno,
        }
    }

    /// A failed system call of the monitor at `step`, on `path`.
    pub fn system_at(step: MonitorStep, path: &Path, errno: Errno) -> MonitorError {
        MonitorError::System {
            step,
            path: Some(path.to_owned()),
            errno,
        }
    }

    /// Init's own failure, when the setup inside the container failed.
    pub fn setup_error(&self) -> Option<&super::setup::SetupError> {
        match self {
            MonitorError::Launch { error } => error.setup_error(),
            _ => None,
        }
    }
}

impl From<LaunchError> for MonitorError {
    fn from(error: LaunchError) -> MonitorError {
        MonitorError::Launch { error }
    }
}

/// The steps of the monitor's own work that can fail with an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorStep {
    BlockSignals,
    SignalFd,
    ReadSpec,
    CreateSocket,
    SocketPath,
    BindSocket,
    ListenSocket,
    ConsoleChannel,
    ExitPipe,
    OpenNamespace,
    Fork,
    AttachLoop,
    Terminal,
}

impl MonitorStep {
    /// What failed, with the path it concerned.
    fn describe(self, path: Option<&Path>) -> String {
        let path = path.map(|p| p.display().to_string()).unwrap_or_default();
        match self {
            MonitorStep::BlockSignals => "cannot block the termination signals".into(),
            MonitorStep::SignalFd => "cannot create a signalfd".into(),
            MonitorStep::ReadSpec => "cannot read the launch spec from lxvirtd".into(),
            MonitorStep::CreateSocket => "cannot create the monitor socket".into(),
            MonitorStep::SocketPath => {
                format!("cannot use {path} as the monitor socket; use a shorter run directory")
            }
            MonitorStep::BindSocket => format!("cannot bind the monitor socket {path}"),
            MonitorStep::ListenSocket => format!("cannot listen on the monitor socket {path}"),
            MonitorStep::ConsoleChannel => "cannot create a console channel".into(),
            MonitorStep::ExitPipe => "cannot create the exit pipe of the command".into(),
            MonitorStep::OpenNamespace => {
                format!("cannot open the container's namespace {path}")
            }
            MonitorStep::Fork => "cannot fork the command".into(),
            MonitorStep::Terminal => "cannot open a terminal in the container's /dev/pts \
                 (is /dev/pts the devpts lxvirt mounted?)"
                .into(),
            MonitorStep::AttachLoop => format!(
                "cannot attach {path} to a loop device; check that it is a raw image file \
                 and that the loop module is loaded"
            ),
        }
    }
}

/// serde for an [`Errno`] as its number, so that it crosses to the daemon
/// and shows there as it would here.
pub mod errno_number {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::sys::Errno;

    pub fn serialize<S: Serializer>(errno: &Errno, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(*errno as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Errno, D::Error> {
        i32::deserialize(deserializer).map(Errno::from_raw)
    }
}

/// How an `enter`ed command ended, written to its exit pipe; the seam's
/// format, which the QEMU driver writes too.
pub use crate::driver::EnterExit;

/// How init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitExit {
    Exited { code: i32 },
    Signaled { signal: i32 },
}

/// How a shutdown asks init to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AskInit {
    /// As init wants it: [`AskInit::Systemd`] when init is systemd,
    /// [`AskInit::Initctl`] when the container has sysvinit's
    /// `/run/initctl`, else [`AskInit::Signal`].
    AsItWants,
    /// SIGTERM.
    Signal,
    /// SIGRTMIN+3, systemd's `halt`.
    Systemd,
    /// A runlevel 0 request written to `/run/initctl`.
    Initctl,
}

impl AskInit {
    fn older_daemon() -> AskInit {
        AskInit::Signal
    }
}

/// What a client asked that ended the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requested {
    Shutdown,
    Destroy,
}

/// Written by the monitor when init is gone and the container cleaned up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub init: InitExit,
    pub requested: Option<Requested>,
    /// Problems while cleaning up (a cgroup that would not go away, …).
    pub cleanup_errors: Vec<String>,
    /// Memory cgroups renamed for the daemon to remove later (see
    /// [`crate::cgroup::retired`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_cgroups: Vec<std::path::PathBuf>,
}

impl Versioned for ExitRecord {
    const VERSION: u32 = 1;
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("monitor socket error")]
    Io(#[from] nix::Error),
    #[error("malformed message")]
    Json(#[from] serde_json::Error),
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("the peer closed the connection")]
    Closed,
}

/// Sends one message with optional descriptors on a seqpacket socket.
pub fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fds: &[RawFd],
) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(message)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives one message and the descriptors that came with it. Blocks
/// unless the socket is non-blocking (then `EAGAIN` comes back as an error).
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
) -> Result<(T, Vec<OwnedFd>), ProtocolError> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // SAFETY: the kernel just installed `fd` in this process
                    // for us (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    if len == 0 {
        return Err(ProtocolError::Closed);
    }
    let message = serde_json::from_slice(&buffer[..len])?;
    Ok((message, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    #[test]
    fn the_log_choice_survives_the_command_line() {
        for log in [MonitorLog::File, MonitorLog::Journal] {
            assert_eq!(MonitorLog::from_args(log.args()), log);
        }
        assert_eq!(
            MonitorLog::from_args(["--other"]),
            MonitorLog::File,
            "an unknown argument is no choice"
        );
    }

    #[test]
    fn the_early_clone_flags_survive_the_command_line() {
        let flags = crate::lxc::launch::USUAL_FLAGS;
        let arg = early_clone_arg(flags);
        assert_eq!(arg, "--early-clone=7c000000");
        assert_eq!(
            early_clone_from_args(["--journal", arg.as_str()]),
            Some(flags)
        );
        for none in [
            &["--journal"][..],
            &["--early-clone=zz"],
            &["--early-clone="],
        ] {
            assert_eq!(early_clone_from_args(none), None, "{none:?}");
        }
    }

    #[test]
    fn messages_and_descriptors_cross_a_seqpacket_pair() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let request = Request::Enter {
            argv: vec!["hostname".into()],
            env: vec![],
            cwd: None,
            noseclabel: true,
            tty: false,
        };
        send(a.as_fd(), &request, &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let (got, fds): (Request, _) = recv(b.as_fd()).unwrap();
        assert_eq!(got, request);
        assert_eq!(fds.len(), 2);
        // The passed write end works.
        nix::unistd::write(&fds[1], b"x").unwrap();
        let mut buf = [0u8; 1];
        nix::unistd::read(&r, &mut buf).unwrap();
        assert_eq!(&buf, b"x");
        drop(a);
        assert!(matches!(
            recv::<Request>(b.as_fd()),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn wire_format_is_stable() {
        assert_eq!(
            serde_json::to_string(&Request::Shutdown {
                grace_ms: 5000,
                how: AskInit::Systemd
            })
            .unwrap(),
            r#"{"op":"shutdown","grace_ms":5000,"how":"systemd"}"#
        );
        // An older daemon's request, to a monitor of this build.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"shutdown","grace_ms":5000}"#).unwrap(),
            Request::Shutdown {
                grace_ms: 5000,
                how: AskInit::Signal
            }
        );
        assert_eq!(
            serde_json::to_string(&LaunchReport::Started { init_pid: 7 }).unwrap(),
            r#"{"started":{"init_pid":7}}"#
        );
    }

    /// Errors cross with their kind, step and details, and read back the
    /// same, causes included.
    #[test]
    fn errors_cross_typed() {
        let setup = crate::lxc::setup::SetupError {
            step: crate::lxc::setup::Step::Exec,
            path: Some("/sbin/init".into()),
            errno: Errno::ENOENT as i32,
            detail: None,
        };
        let cases = [
            (
                MonitorError::from(LaunchError::Setup {
                    error: setup.clone(),
                }),
                r#"{"kind":"launch","error":{"kind":"setup","error":{"step":"exec","path":"/sbin/init","errno":2,"detail":null}}}"#,
                "cannot execute init /sbin/init inside the container: No such file or directory (ENOENT); check <init> and the root filesystem",
            ),
            (
                MonitorError::system_at(
                    MonitorStep::BindSocket,
                    Path::new("/run/lxvirt/web.sock"),
                    Errno::EADDRINUSE,
                ),
                r#"{"kind":"system","step":"bind_socket","path":"/run/lxvirt/web.sock","errno":98}"#,
                "cannot bind the monitor socket /run/lxvirt/web.sock: EADDRINUSE: Address already in use",
            ),
            (
                MonitorError::system(MonitorStep::ConsoleChannel, Errno::EMFILE),
                r#"{"kind":"system","step":"console_channel","errno":24}"#,
                "cannot create a console channel: EMFILE: Too many open files",
            ),
            (
                MonitorError::NoConsole { index: 7, count: 2 },
                r#"{"kind":"no_console","index":7,"count":2}"#,
                "no console 7; it has 2",
            ),
        ];
        for (error, json, message) in cases {
            let reply = Reply::Failed {
                error: error.clone(),
            };
            let wire = serde_json::to_string(&reply).unwrap();
            assert_eq!(wire, format!(r#"{{"failed":{{"error":{json}}}}}"#));
            let back: Reply = serde_json::from_str(&wire).unwrap();
            assert_eq!(back, reply);
            let Reply::Failed { error: back } = back else {
                unreachable!()
            };
            assert_eq!(crate::error_chain::error_chain(&back), message);
        }
        assert_eq!(
            MonitorError::from(LaunchError::Setup {
                error: setup.clone()
            })
            .setup_error(),
            Some(&setup)
        );
    }

    /// A monitor of an earlier lxvirtd still runs its container after an
    /// upgrade: its replies must still read.
    #[test]
    fn replies_of_earlier_monitors_still_read() {
        let reply: Reply =
            serde_json::from_str(r#"{"error":{"message":"no console 7; it has 2"}}"#).unwrap();
        assert_eq!(
            reply,
            Reply::Error {
                message: "no console 7; it has 2".into()
            }
        );
        for old in [
            r#""ok""#,
            r#"{"status":{"init_pid":10,"monitor_pid":9}}"#,
            r#"{"entered":{"pid":12}}"#,
        ] {
            serde_json::from_str::<Reply>(old).unwrap();
        }
    }
}
