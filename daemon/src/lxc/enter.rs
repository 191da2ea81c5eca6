//! Running a command inside a running container (`lxvirt enter`), with the
//! container's own confinement: its namespaces (user namespace included),
//! its cgroup, its capability bounding set, `no_new_privs`, its seccomp
//! filter, and its SELinux label unless the caller asks to skip it. libvirt's lxc-enter-namespace
//! keeps the caller's full capabilities; lxvirt does not.
//!
//! Runs in the monitor, which is single-threaded, so forking is safe.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::protocol::{MonitorError, MonitorStep};
use super::spec::ContainerSpec;
use crate::cgroup::ContainerCgroup;
use crate::seccomp::{Placement, Policy, SockFilter, placement};
use crate::sys::linux::{Forked, clone_fork, exit_now, open_namespace, setns};
use crate::sys::process::{ExitStatus, reap_pidfd};
use crate::sys::{Linux, Syscalls};

/// Exit status when the command cannot be started (as a shell uses it).
const EXIT_CANNOT_RUN: i32 = 127;

/// What to run and how.
pub struct EnterCommand<'a> {
    pub spec: &'a ContainerSpec,
    pub init_pid: Pid,
    pub cgroup: &'a ContainerCgroup,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub noseclabel: bool,
    /// stdin is a terminal to make the command's controlling terminal (its
    /// job control works then).
    pub controlling_terminal: bool,
    /// stdin, stdout, stderr of the command.
    pub stdio: [OwnedFd; 3],
}

/// Namespaces joined, in order: the user namespace first (it grants the
/// capabilities for the others), the PID namespace last (it applies to
/// children only).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// Starts the command; returns the pid and a pidfd of the process the
/// monitor reaps (it exits with the command's status).
pub fn spawn(command: EnterCommand<'_>) -> Result<(Pid, OwnedFd), MonitorError> {
    if command.argv.is_empty() {
        return Err(MonitorError::NoCommand);
    }
    // Open everything that can fail in the monitor, so errors reach the caller.
    let filter = match &command.spec.seccomp {
        Some(s) => Some(
            Policy::new(s.deny_mount, &s.deny)
                .and_then(|policy| policy.program())
                .map_err(|e| MonitorError::Seccomp {
                    reason: e.to_string(),
                })?,
        ),
        None => None,
    };
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = PathBuf::from(format!("/proc/{}/ns/{name}", command.init_pid));
        if same_namespace(&path, name) {
            continue;
        }
        let fd = open_namespace(&path)
            .map_err(|e| MonitorError::system_at(MonitorStep::OpenNamespace, &path, e))?;
        namespaces.push((fd, flag));
    }
    match clone_fork(CloneFlags::empty()).map_err(|e| MonitorError::system(MonitorStep::Fork, e))? {
        Forked::Parent { pid, pidfd } => Ok((pid, pidfd)),
        Forked::Child => {
            let code = match join_and_run(&command, namespaces, filter.as_deref()) {
                Ok(code) => code,
                Err(message) => {
                    let line = format!("lxvirt enter: {message}\n");
                    let _ = nix::unistd::write(&command.stdio[2], line.as_bytes());
                    EXIT_CANNOT_RUN
                }
            };
            exit_now(code)
        }
    }
}

/// Whether this process is already in the namespace at `path`.
fn same_namespace(path: &Path, name: &str) -> bool {
    let ours = std::fs::metadata(format!("/proc/self/ns/{name}"));
    let theirs = std::fs::metadata(path);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.ino() == b.ino() && a.dev() == b.dev()
        }
        _ => false,
    }
}

/// In the forked child: join the cgroup and the namespaces, then fork once
/// more (a PID namespace applies to children) and wait for the command.
fn join_and_run(
    command: &EnterCommand<'_>,
    namespaces: Vec<(OwnedFd, CloneFlags)>,
    filter: Option<&[SockFilter]>,
) -> Result<i32, String> {
    command
        .cgroup
        .add_process(Pid::this().as_raw())
        .map_err(|e| format!("cannot join the container's cgroup: {e}"))?;
    for (fd, flag) in namespaces {
        setns(&fd, flag).map_err(|e| format!("cannot join namespace {flag:?}: {e}"))?;
    }
    match clone_fork(CloneFlags::empty()).map_err(|e| format!("cannot fork: {e}"))? {
        Forked::Child => {
            let error = exec(command, filter);
            let line = format!("lxvirt enter: {error}\n");
            let _ = nix::unistd::write(&command.stdio[2], line.as_bytes());
            exit_now(EXIT_CANNOT_RUN)
        }
        Forked::Parent { pidfd, .. } => {
            // Nothing else to do here: block until the command ends.
            loop {
                let mut fds = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&pidfd),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
                match reap_pidfd(std::os::fd::AsFd::as_fd(&pidfd)) {
                    Ok(ExitStatus::Exited(code)) => return Ok(code),
                    Ok(ExitStatus::Signaled(signal)) => return Ok(128 + signal),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("cannot wait for the command: {e}")),
                }
            }
        }
    }
}

/// In the grandchild, inside every namespace: take the container's
/// identity and confinement, then exec. Returns only on failure.
fn exec(command: &EnterCommand<'_>, filter: Option<&[SockFilter]>) -> String {
    let sys = Linux;
    let [stdin, stdout, stderr] = &command.stdio;
    if let Err(e) = nix::unistd::dup2_stdin(stdin)
        .and_then(|()| nix::unistd::dup2_stdout(stdout))
        .and_then(|()| nix::unistd::dup2_stderr(stderr))
    {
        return format!("cannot set up stdio: {e}");
    }
    let _ = sys.setsid();
    if command.controlling_terminal {
        // SAFETY: TIOCSCTTY takes an int by value (0: do not steal a
        // terminal another session has); stdin is the new pty's slave.
        let taken = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        if taken != 0 {
            return format!(
                "cannot make the terminal the controlling one: {}",
                nix::errno::Errno::last()
            );
        }
    }
    let spec = command.spec;
    if spec.namespaces.user.is_some() {
        // Root of the container, not the host's root (unmapped inside).
        if let Err(e) = sys
            .setgroups(&[])
            .and_then(|()| sys.setresgid(0))
            .and_then(|()| sys.setresuid(0))
        {
            return format!("cannot become the container's root: {e}");
        }
    }
    let cwd = command.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
    if let Err(e) = sys.chdir(&cwd) {
        return format!("cannot change to directory {}: {e}", cwd.display());
    }
    // As for init (see `placement`): before the capabilities go when that
    // takes CAP_SYS_ADMIN away without no_new_privs, else last.
    let kept = spec.capabilities.iter().fold(0u64, |m, &c| m | (1u64 << c));
    let mut filter = filter;
    if let Some(program) = filter
        && placement(spec.no_new_privs, 0, kept) == Placement::BeforeIdentity
    {
        if let Err(e) = sys.install_seccomp(program) {
            return format!("cannot install the seccomp filter: {e}");
        }
        filter = None;
    }
    if let Err(e) = drop_capabilities(&sys, &spec.capabilities) {
        return format!("cannot drop capabilities: {e}");
    }
    if spec.no_new_privs
        && let Err(e) = sys.set_no_new_privs()
    {
        return format!("cannot set no_new_privs: {e}");
    }
    if let Some(security) = &spec.security
        && !command.noseclabel
        && let Err(e) = sys.write_file(
            Path::new("/proc/thread-self/attr/exec"),
            security.process_label.as_bytes(),
        )
    {
        return format!(
            "cannot set the process label {}: {e}",
            security.process_label
        );
    }
    let _ = sys.reset_signals();
    let _ = sys.cloexec_from(3);
    let program = match find_program(&command.argv[0], &command.env) {
        Some(program) => program,
        None => return format!("{}: command not found in the container", command.argv[0]),
    };
    if let Some(program) = filter
        && let Err(e) = sys.install_seccomp(program)
    {
        return format!("cannot install the seccomp filter: {e}");
    }
    let errno = sys.execve(&program, &command.argv, &command.env);
    format!("cannot execute {}: {errno}", program.display())
}

/// Keeps only `kept` (kernel numbers) in the bounding, effective,
/// permitted and inheritable sets, and clears the ambient set.
fn drop_capabilities(sys: &impl Syscalls, kept: &[u8]) -> nix::Result<()> {
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(40);
    for cap in 0..=last_cap {
        if !kept.contains(&cap) {
            sys.cap_bounding_drop(cap)?;
        }
    }
    sys.cap_ambient_clear()?;
    // Less whatever the monitor itself lacks (a restricted host).
    let mask = kept.iter().fold(0u64, |m, &c| m | (1u64 << c)) & sys.cap_permitted()?;
    sys.capset(mask, mask, mask)
}

/// argv[0] as a path, or looked up in the command's PATH.
fn find_program(name: &str, env: &[String]) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
}

impl std::fmt::Debug for EnterCommand<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterCommand")
            .field("domain", &self.spec.name)
            .field("init_pid", &self.init_pid)
            .field("argv", &self.argv)
            .field(
                "stdio",
                &self
                    .stdio
                    .iter()
                    .map(AsRawFd::as_raw_fd)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_commands_path() {
        assert_eq!(find_program("/x/y", &[]), Some(PathBuf::from("/x/y")));
        let env = vec!["PATH=/nonexistent:/bin".to_owned()];
        assert_eq!(find_program("sh", &env), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("no-such-program-here", &env), None);
    }
}
