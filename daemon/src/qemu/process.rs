//! Starting a qemu process the way the QEMU driver runs every guest: in
//! a session of its own (so it outlives lxvirtd, which finds it again
//! through its pidfile and QMP socket, as containers' monitors do), as an
//! unprivileged uid, in the domain's cgroups from its first instruction,
//! with its output in a log file.
//!
//! lxvirtd daemonizes qemu itself rather than passing `-daemonize`: qemu
//! would fork and call `setsid` after its seccomp filter is in place,
//! which rules out `-sandbox spawn=deny,elevateprivileges=deny` (it dies
//! of SIGSYS). qemu is ready when its QMP socket takes a connection; if it
//! exits first, its log says why.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::Pid;

/// How to start one qemu.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `qemu-system-x86_64` or the `<emulator>` of the definition.
    pub emulator: PathBuf,
    /// Everything after the program name; `-pidfile` is added here.
    pub args: Vec<OsString>,
    /// Who qemu runs as (its supplementary groups are dropped).
    pub uid: u32,
    pub gid: u32,
    /// The `cgroup.procs` of the domain's cgroup in each hierarchy: qemu
    /// joins them before it runs, so every thread it makes is inside.
    pub cgroup_procs: Vec<PathBuf>,
    /// Written by qemu (so in a directory its uid may write).
    pub pidfile: PathBuf,
    /// qemu's stdout and stderr, appended.
    pub log: PathBuf,
    /// The SELinux context qemu runs in (`setexeccon`), if confined.
    pub exec_label: Option<String>,
    /// Descriptors qemu inherits (taps), at the same numbers; lxvirtd's
    /// copies stay close-on-exec for every other child.
    pub keep_fds: Vec<std::os::fd::RawFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open qemu's log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {emulator}")]
    Spawn {
        emulator: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu failed to start ({status}): {said}")]
    Failed { status: String, said: String },
    #[error("qemu started but its pidfile {path} {problem}")]
    Pidfile { path: PathBuf, problem: String },
}

/// How long qemu may take to open its QMP socket.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts qemu and waits until its QMP socket `qmp` takes connections;
/// returns its pid. qemu is a child of the caller, who reaps it (a pidfd
/// does); after a restart of lxvirtd, init does.
pub fn launch(launch: &Launch, qmp: &Path) -> Result<Pid, ProcessError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&launch.log)
        .map_err(|source| ProcessError::Log {
            path: launch.log.clone(),
            source,
        })?;
    let stderr = log.try_clone().map_err(|source| ProcessError::Log {
        path: launch.log.clone(),
        source,
    })?;
    let _ = std::fs::remove_file(&launch.pidfile);
    let _ = std::fs::remove_file(qmp);
    let mut command = Command::new(&launch.emulator);
    command
        .args(&launch.args)
        .arg("-pidfile")
        .arg(&launch.pidfile)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    let procs: Vec<std::ffi::CString> = launch
        .cgroup_procs
        .iter()
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok())
        .collect();
    let (uid, gid) = (launch.uid, launch.gid);
    let keep_fds = launch.keep_fds.clone();
    let exec_label = launch
        .exec_label
        .as_ref()
        .map(|l| std::ffi::CString::new(l.as_str()))
        .transpose()
        .map_err(|e| ProcessError::Spawn {
            emulator: launch.emulator.clone(),
            source: std::io::Error::other(e),
        })?;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (open, write, close, setsid,
    // setgroups, setgid, setuid) on memory prepared before the fork. The
    // cgroups are joined as root, then privileges dropped (std's own uid()
    // would drop them before this runs).
    unsafe {
        command.pre_exec(move || {
            for path in &procs {
                join_cgroup(path)?;
            }
            if let Some(label) = &exec_label {
                set_exec_label(label)?;
            }
            for fd in &keep_fds {
                keep_open(*fd)?;
            }
            // A session of its own: no signal for lxvirtd's process group
            // or terminal reaches it.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            drop_privileges(uid, gid)
        });
    }
    let started = std::time::Instant::now();
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        emulator: launch.emulator.clone(),
        source,
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if probe(qmp, launch.exec_label.as_deref()) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ProcessError::Failed {
                status: status.to_string(),
                said: last_lines(&launch.log, 5),
            });
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProcessError::Failed {
                status: format!("no QMP socket after {} s", READY_TIMEOUT.as_secs()),
                said: last_lines(&launch.log, 5),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
    tracing::debug!(
        pid = pid.as_raw(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "qemu ready"
    );
    Ok(pid)
}

/// Whether qemu takes connections on `qmp` yet. A confined qemu may only
/// use a connection made at its own level, so the probe's socket gets
/// qemu's context.
fn probe(qmp: &Path, context: Option<&str>) -> bool {
    let _creating = match context {
        Some(context) => match crate::sys::linux::SocketCreateLabel::set(context) {
            Ok(creating) => Some(creating),
            Err(_) => return false,
        },
        None => None,
    };
    std::os::unix::net::UnixStream::connect(qmp).is_ok()
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs` ("0" names the writer), between fork and exec.
fn join_cgroup(procs: &std::ffi::CStr) -> std::io::Result<()> {
    write_raw(procs, b"0")
}

/// Asks for `label` as the context of the next exec (`setexeccon`),
/// between fork and exec. An empty write would reset it; the label is
/// never empty.
fn set_exec_label(label: &std::ffi::CStr) -> std::io::Result<()> {
    write_raw(c"/proc/thread-self/attr/exec", label.to_bytes())
}

/// Writes `bytes` to the file `path` in one write, with raw calls only
/// (open, write, close): it runs between fork and exec.
fn write_raw(path: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path prepared before the fork; open returns
    // a new descriptor or -1.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened; `bytes` is valid for its length.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let error = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if written != bytes.len() as isize {
        return Err(error);
    }
    Ok(())
}

/// Lets `fd` through the exec (clears `FD_CLOEXEC`), between fork and exec.
fn keep_open(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number; it touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Becomes `uid`:`gid` with no supplementary group, between fork and exec.
fn drop_privileges(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls on values; a null list with size 0 drops
    // every supplementary group. The order matters: groups and gid while
    // still root, the uid last.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid in a pidfile qemu wrote.
pub fn read_pidfile(path: &Path) -> Result<Pid, ProcessError> {
    let problem = |problem: String| ProcessError::Pidfile {
        path: path.to_owned(),
        problem,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(format!("cannot be read: {e}")))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .map(Pid::from_raw)
        .ok_or_else(|| problem(format!("holds no pid: {:?}", text.trim())))
}

/// Whether the running process `pid` was started with `argument` (what
/// qemu runs under, read back after a daemon restart as well).
pub fn has_argument(pid: i32, argument: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|line| line.split(|b| *b == 0).any(|a| a == argument.as_bytes()))
        .unwrap_or(false)
}

/// The last `n` lines of `path`, for a refusal.
fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// Makes `dir` (and its parents) for a guest's files, owned by `uid`:`gid`
/// with mode 0700, so that its qemu can write its pidfile and sockets
/// there and nobody else can reach them.
pub fn guest_dir(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}

/// What the tests that run a real qemu share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use nix::unistd::Pid;

    pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";

    /// Whether the test cannot run here (said, and a failure under CI).
    pub fn qemu_missing() -> bool {
        if Path::new(QEMU).exists() && nix::unistd::geteuid().is_root() {
            return false;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the qemu tests as root with qemu installed"
        );
        println!("skipped: needs root and {QEMU}");
        true
    }

    /// Kills (and reaps) the qemu of a test on every path.
    pub struct Guard(pub Pid);

    impl Drop for Guard {
        fn drop(&mut self) {
            if nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL).is_ok() {
                let _ = nix::sys::wait::waitpid(self.0, None);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::test_support::{Guard, QEMU, qemu_missing};
    use super::*;
    use crate::qemu::qmp::{Qmp, RunState};

    const NOBODY: u32 = 65534;

    fn status_uid(pid: Pid) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn qemu_daemonizes_as_its_uid_in_its_cgroup_and_answers_qmp() {
        if qemu_missing() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("guest");
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        guest_dir(&dir, NOBODY, NOBODY).unwrap();
        // A cgroup of the test's own on the cgroup2 mount, if writable.
        let cgroup = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(Path::new)
            .find(|root| root.join("cgroup.procs").exists())
            .map(|root| root.join(format!("lxvirt-test-qemu-{}", std::process::id())))
            .filter(|path| std::fs::create_dir(path).is_ok());
        let qmp = dir.join("qmp.sock");
        let launch = Launch {
            emulator: QEMU.into(),
            args: [
                "-S",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-machine",
                "none",
                "-qmp",
            ]
            .iter()
            .map(OsString::from)
            .chain([format!("unix:{},server=on,wait=off", qmp.display()).into()])
            .collect(),
            uid: NOBODY,
            gid: NOBODY,
            cgroup_procs: cgroup.iter().map(|c| c.join("cgroup.procs")).collect(),
            pidfile: dir.join("qemu.pid"),
            log: dir.join("qemu.log"),
            exec_label: None,
            keep_fds: Vec::new(),
        };
        let pid = launch_checked(&launch, &qmp);
        let guard = Guard(pid);
        // A session of its own (field 6 of stat), its pid in its pidfile.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(fields[3], pid.to_string(), "session of {pid}: {stat}");
        assert_eq!(read_pidfile(&launch.pidfile).unwrap(), pid);
        assert_eq!(status_uid(pid), NOBODY);
        if let Some(cgroup) = &cgroup {
            let members = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
            assert!(members.lines().any(|l| l == pid.to_string()), "{members}");
        }
        let (client, _events) = Qmp::connect(&qmp).await.unwrap();
        assert_eq!(client.query_status().await.unwrap(), RunState::Prelaunch);
        client.quit().await.unwrap();
        // The caller's child: reaped here, as the driver's pidfd does.
        assert_eq!(
            nix::sys::wait::waitpid(pid, None).unwrap(),
            nix::sys::wait::WaitStatus::Exited(pid, 0)
        );
        drop(guard);
        if let Some(cgroup) = &cgroup {
            std::fs::remove_dir(cgroup).unwrap();
        }
    }

    fn launch_checked(launch: &Launch, qmp: &Path) -> Pid {
        match self::launch(launch, qmp) {
            Ok(pid) => pid,
            Err(e) => panic!("{e}; log: {}", last_lines(&launch.log, 20)),
        }
    }

    #[test]
    fn a_qemu_that_refuses_its_arguments_says_why() {
        if qemu_missing() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let launch = Launch {
            emulator: QEMU.into(),
            args: ["-machine", "no-such-machine", "-display", "none"]
                .iter()
                .map(OsString::from)
                .collect(),
            uid: 0,
            gid: 0,
            cgroup_procs: Vec::new(),
            pidfile: tmp.path().join("qemu.pid"),
            log: tmp.path().join("qemu.log"),
            exec_label: None,
            keep_fds: Vec::new(),
        };
        let error = launch_checked_err(&launch, &tmp.path().join("qmp.sock"));
        assert!(error.contains("unsupported machine type"), "{error}");
    }

    fn launch_checked_err(launch: &Launch, qmp: &Path) -> String {
        match self::launch(launch, qmp) {
            Ok(pid) => {
                let _guard = Guard(pid);
                panic!("started");
            }
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_pidfile_without_a_pid_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(
            read_pidfile(&path)
                .unwrap_err()
                .to_string()
                .contains("holds no pid")
        );
        std::fs::write(&path, "4242\n").unwrap();
        assert_eq!(read_pidfile(&path).unwrap(), Pid::from_raw(4242));
        assert!(read_pidfile(&tmp.path().join("none")).is_err());
    }
}
