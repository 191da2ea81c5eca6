//! Monitors started from a thread with a descriptor table of its own.
//!
//! The daemon holds a pidfd per running container. Spawning a process
//! copies the spawning thread's descriptor table into the child, and exec
//! then closes every copy: with 6,000 containers running that is about a
//! millisecond of each start, growing with the host. A thread that made
//! its table private while the daemon had only a few descriptors, and kept
//! none of them but its socket, spawns from a table of four instead.
//!
//! The daemon asks over a seqpacket socket and gets the monitor's pid, its
//! stdin and stdout and a pidfd back as descriptors. The monitor is still
//! the daemon's child (a thread's child belongs to its process), reaped
//! through its pidfd as before. If the thread cannot serve, the driver
//! spawns from the daemon's own table, as it did before.
//!
//! The thread's table also holds the template mount namespace (see
//! [`mount_template`](super::mount_template)), made when the thread
//! starts and inherited by every monitor it spawns: only monitors get it.
//!
//! The thread runs at a lower priority than the daemon (`SPARE_NICE`
//! more), and so do the monitors it spawns while they wait: the next
//! spare, spawned while a start is under way, gives way to that start on
//! a busy CPU instead of taking it for its fork and exec. The daemon gives
//! a spare its own priority back before it sends the spec, so that the
//! spare wakes at it; that needs `CAP_SYS_NICE`, and a daemon without it
//! spawns at its own priority.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::protocol::{self, MonitorLog};
use crate::sys::process::pidfd_open;

/// How monitors are started: `EXE RUN-DIR [--journal]`.
#[derive(Debug, Clone)]
pub struct MonitorCommand {
    pub exe: PathBuf,
    pub run_dir: PathBuf,
    pub log: MonitorLog,
}

/// A monitor process, spawned and waiting for its spec on stdin.
#[derive(Debug)]
pub struct SpawnedMonitor {
    pub pid: Pid,
    pub stdin: File,
    pub stdout: File,
    pub pidfd: OwnedFd,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// With the monitor's stdin, stdout and pidfd, in that order.
    Spawned {
        pid: i32,
    },
    Failed {
        errno: i32,
    },
}

/// Why the spawner gave no monitor.
#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    /// The spawn failed (the monitor program is missing, …).
    #[error(transparent)]
    Spawn(std::io::Error),
    /// The thread does not answer: spawn from another table.
    #[error("the monitor spawner thread does not answer")]
    Gone(#[source] std::io::Error),
}

/// The daemon's end of the spawning thread.
#[derive(Debug)]
pub struct Spawner {
    socket: Mutex<OwnedFd>,
}

impl Spawner {
    /// Starts the thread; call it while the daemon has few descriptors.
    pub fn start(command: MonitorCommand) -> io::Result<Spawner> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        std::thread::Builder::new()
            .name("monitor-spawner".into())
            .spawn(move || serve(theirs, &command))?;
        Ok(Spawner {
            socket: Mutex::new(ours),
        })
    }

    /// A new monitor; a spare, with an early init in the namespaces of
    /// `early`.
    pub fn spawn(&self, early: Option<CloneFlags>) -> Result<SpawnedMonitor, SpawnerError> {
        let gone = |e| SpawnerError::Gone(io::Error::other(e));
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let early = early.map(|flags| flags.bits());
        protocol::send(socket.as_fd(), &early, &[]).map_err(gone)?;
        let (reply, fds) = protocol::recv::<Reply>(socket.as_fd()).map_err(gone)?;
        match reply {
            Reply::Spawned { pid } => {
                let [stdin, stdout, pidfd]: [OwnedFd; 3] = fds.try_into().map_err(|_| {
                    SpawnerError::Gone(io::Error::other("the spawner sent the wrong descriptors"))
                })?;
                Ok(SpawnedMonitor {
                    pid: Pid::from_raw(pid),
                    stdin: File::from(stdin),
                    stdout: File::from(stdout),
                    pidfd,
                })
            }
            Reply::Failed { errno } => {
                Err(SpawnerError::Spawn(io::Error::from_raw_os_error(errno)))
            }
        }
    }
}

/// Spawns a monitor from the calling thread's descriptor table. It waits
/// for its spec on stdin and writes its own log (`NAME.log` in the run
/// directory) once it knows its name. `mount_template` must be
/// inheritable (not close-on-exec) in the calling thread's table.
pub fn spawn_monitor(
    command: &MonitorCommand,
    early: Option<CloneFlags>,
    mount_template: Option<BorrowedFd<'_>>,
) -> io::Result<SpawnedMonitor> {
    let mut child = Command::new(&command.exe)
        .arg(&command.run_dir)
        .args(command.log.args())
        .args(early.map(protocol::early_clone_arg))
        .args(mount_template.map(|fd| protocol::mount_template_arg(fd.as_raw_fd())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: signals meant for the daemon (a Ctrl-C on
        // its terminal) must not reach monitors, which outlive it.
        .process_group(0)
        .spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    let pidfd = pidfd_open(pid)?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("no pipes to the monitor"));
    };
    // Dropping the handle neither waits for nor kills the child: the
    // pidfd reaps it.
    drop(child);
    Ok(SpawnedMonitor {
        pid,
        stdin: File::from(OwnedFd::from(stdin)),
        stdout: File::from(OwnedFd::from(stdout)),
        pidfd,
    })
}

/// How much lower a spare monitor's priority is than the daemon's, in
/// nice steps, until its spec arrives.
const SPARE_NICE: i32 = 10;

/// `CAP_SYS_NICE`.
const CAP_SYS_NICE: u32 = 23;

fn serve(socket: OwnedFd, command: &MonitorCommand) {
    if let Err(error) = private_table(socket.as_fd()) {
        // Dropping the socket tells the driver to spawn by itself.
        tracing::warn!(error = %error, "cannot give the monitor spawner a descriptor table of its own; monitors start from the daemon's");
        return;
    }
    let mount_template = inheritable_mount_template(&command.run_dir);
    lower_priority();
    // Until the driver is gone (its end closes).
    while let Ok((early, _)) = protocol::recv::<Option<i32>>(socket.as_fd()) {
        let early = early.and_then(CloneFlags::from_bits);
        let template = mount_template.as_ref().map(|fd| fd.as_fd());
        let sent = match spawn_monitor(command, early, template) {
            Ok(monitor) => protocol::send(
                socket.as_fd(),
                &Reply::Spawned {
                    pid: monitor.pid.as_raw(),
                },
                &[
                    monitor.stdin.as_raw_fd(),
                    monitor.stdout.as_raw_fd(),
                    monitor.pidfd.as_raw_fd(),
                ],
            ),
            Err(error) => protocol::send(
                socket.as_fd(),
                &Reply::Failed {
                    errno: error.raw_os_error().unwrap_or(Errno::EIO as i32),
                },
                &[],
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The template mount namespace, inheritable in this thread's own table;
/// `None` (monitors pivot into each root) if it cannot be made.
fn inheritable_mount_template(run_dir: &std::path::Path) -> Option<OwnedFd> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let made = super::mount_template::make(run_dir).and_then(|fd| {
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map(|_| fd)
            .map_err(|errno| super::mount_template::TemplateError {
                step: "making it inheritable",
                errno,
            })
    });
    made.inspect_err(|error| {
        tracing::warn!(%error, "containers' roots are made with pivot_root, slower with many running");
    })
    .ok()
}

/// Gives monitor `pid` (a spare about to get its spec) the daemon's
/// priority: the nice value of the daemon's main thread.
pub fn give_daemon_priority(pid: Pid) -> nix::Result<()> {
    use crate::sys::process::{nice_of, set_nice};
    let daemon = nice_of(std::process::id() as i32)?;
    if nice_of(pid.as_raw())? > daemon {
        set_nice(pid.as_raw(), daemon)?;
    }
    Ok(())
}

/// Lowers this thread's priority, which the monitors it spawns inherit,
/// if they can raise theirs again (see the module's comment).
fn lower_priority() {
    use crate::sys::process::{has_effective_capability, nice_of, set_nice};
    if !has_effective_capability(CAP_SYS_NICE) {
        return;
    }
    let tid = nix::unistd::gettid().as_raw();
    if let Ok(nice) = nice_of(tid) {
        let _ = set_nice(tid, (nice + SPARE_NICE).min(19));
    }
}

/// Makes this thread's descriptor table its own and closes every copied
/// descriptor but stdio and `keep`.
fn private_table(keep: BorrowedFd<'_>) -> nix::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_FILES)?;
    let keep = keep.as_raw_fd() as u32;
    crate::sys::process::close_range(3, keep.saturating_sub(1))?;
    crate::sys::process::close_range(keep + 1, u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::path::Path;

    /// A stand-in monitor: a shell that reads its spec, then runs `body`.
    fn stand_in(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("monitor");
        std::fs::write(&path, format!("#!/bin/sh\nread spec\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    /// One that reports the descriptors it has.
    fn script(dir: &Path) -> PathBuf {
        stand_in(dir, "echo \"$spec $1 ${2:--} $(ls /proc/self/fd | wc -l)\"")
    }

    fn command(exe: PathBuf, log: MonitorLog) -> MonitorCommand {
        MonitorCommand {
            exe,
            run_dir: "/run/x".into(),
            log,
        }
    }

    #[test]
    fn monitors_come_from_a_small_table_whatever_the_daemon_holds() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = Spawner::start(command(script(dir.path()), MonitorLog::Journal)).unwrap();
        // The daemon opens many descriptors after the spawner started
        // (without close-on-exec here, so that a child spawned from the
        // daemon's table would show them).
        let null = File::open("/dev/null").unwrap();
        let held: Vec<OwnedFd> = (0..200).map(|_| nix::unistd::dup(&null).unwrap()).collect();
        for _ in 0..2 {
            let out = spec_and_output(&spawner);
            let fields: Vec<&str> = out.split_whitespace().collect();
            assert_eq!(fields[..3], ["spec", "/run/x", "--journal"], "{out}");
            // stdin, stdout, stderr and ls's directory: none of the
            // daemon's 200.
            let count: usize = fields[3].parse().unwrap();
            assert!(count <= 5, "{out}");
        }
        drop(held);
    }

    /// A monitor's output once given its spec, the monitor reaped (the
    /// daemon's child, through its pidfd).
    fn spec_and_output(spawner: &Spawner) -> String {
        let mut monitor = spawner.spawn(None).unwrap();
        monitor.stdin.write_all(b"spec\n").unwrap();
        drop(monitor.stdin);
        let mut out = String::new();
        monitor.stdout.read_to_string(&mut out).unwrap();
        crate::sys::process::wait_exit_blocking(monitor.pidfd.as_fd()).unwrap();
        out
    }

    /// As root, every monitor inherits a descriptor of the template mount
    /// namespace (another one than its own) and is told its number.
    #[test]
    fn monitors_inherit_the_template_mount_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let exe = stand_in(
            dir.path(),
            "for a in \"$@\"; do case $a in --mount-template=*) fd=${a#--mount-template=};; esac; done\n\
             echo \"${fd:-none} $(readlink /proc/self/fd/${fd:-0}) $(readlink /proc/self/ns/mnt)\"",
        );
        let mut command = command(exe, MonitorLog::File);
        command.run_dir = dir.path().to_owned();
        let spawner = Spawner::start(command).unwrap();
        for _ in 0..2 {
            let out = spec_and_output(&spawner);
            let fields: Vec<&str> = out.split_whitespace().collect();
            if !nix::unistd::geteuid().is_root() {
                assert_eq!(fields[0], "none", "{out}");
                continue;
            }
            assert_ne!(fields[0], "none", "{out}");
            assert!(fields[1].starts_with("mnt:["), "{out}");
            assert_ne!(fields[1], fields[2], "{out}");
        }
    }

    /// A spare waits below the daemon's priority when the daemon can
    /// give it its own back (as root), at the daemon's otherwise; it has
    /// the daemon's when it reads its spec.
    #[test]
    fn spares_wait_below_the_daemons_priority_and_get_it_with_their_spec() {
        let dir = tempfile::tempdir().unwrap();
        // Field 19 of /proc/PID/stat is the nice value; `$$` is the shell.
        let path = stand_in(dir.path(), "cut -d' ' -f19 /proc/$$/stat");
        let spawner = Spawner::start(command(path, MonitorLog::File)).unwrap();
        let mut monitor = spawner.spawn(None).unwrap();
        let nice = |pid: Pid| crate::sys::process::nice_of(pid.as_raw()).unwrap();
        let daemon = nice(Pid::this());
        let waiting = nice(monitor.pid);
        if crate::sys::process::has_effective_capability(CAP_SYS_NICE) {
            assert_eq!(waiting, (daemon + SPARE_NICE).min(19));
        } else {
            assert_eq!(waiting, daemon);
        }
        give_daemon_priority(monitor.pid).unwrap();
        monitor.stdin.write_all(b"spec\n").unwrap();
        drop(monitor.stdin);
        let mut out = String::new();
        monitor.stdout.read_to_string(&mut out).unwrap();
        crate::sys::process::wait_exit_blocking(monitor.pidfd.as_fd()).unwrap();
        assert_eq!(out.trim().parse::<i32>().unwrap(), daemon, "{out}");
    }

    /// A spare is asked for its early init on its command line; a monitor
    /// needed at once is not.
    #[test]
    fn spares_are_asked_for_an_early_init() {
        let dir = tempfile::tempdir().unwrap();
        let spawner = Spawner::start(command(script(dir.path()), MonitorLog::File)).unwrap();
        for early in [Some(crate::lxc::launch::USUAL_FLAGS), None] {
            let mut monitor = spawner.spawn(early).unwrap();
            monitor.stdin.write_all(b"spec\n").unwrap();
            drop(monitor.stdin);
            let mut out = String::new();
            monitor.stdout.read_to_string(&mut out).unwrap();
            crate::sys::process::wait_exit_blocking(monitor.pidfd.as_fd()).unwrap();
            let second = out.split_whitespace().nth(2).unwrap();
            let args = [second];
            assert_eq!(protocol::early_clone_from_args(args), early, "{out}");
        }
    }

    #[test]
    fn a_monitor_that_cannot_run_is_an_error_and_the_spawner_serves_on() {
        let dir = tempfile::tempdir().unwrap();
        let spawner =
            Spawner::start(command(dir.path().join("missing"), MonitorLog::File)).unwrap();
        for _ in 0..2 {
            match spawner.spawn(None).unwrap_err() {
                SpawnerError::Spawn(err) => {
                    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}")
                }
                other => panic!("{other}"),
            }
        }
    }
}
