//! Process plumbing of the monitor and the daemon: ptys, pidfds, reaping,
//! process identity. Raw calls live here, each with its safety argument.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Raises the soft limit of open descriptors to the hard one: lxvirtd
/// holds a pidfd per running container (and systemd starts services with
/// a soft limit of 1,024). What it starts inherits it (monitors, their
/// containers, qemu), as a container inherits libvirtd's or Podman sets
/// one of its own. Returns the limits before and after.
pub fn raise_nofile_limit() -> nix::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}

/// Closes every descriptor from `first` up: a process started by another
/// (the monitor by lxvirtd) must not keep descriptors it inherited by
/// accident, such as a client's pipe the daemon held at that moment.
pub fn close_from(first: u32) -> nix::Result<()> {
    close_range(first, u32::MAX)
}

/// Closes the descriptors `first..=last` of this thread's table (none when
/// `last < first`). The caller must own none of them: whatever referred
/// to them stops working.
pub fn close_range(first: u32, last: u32) -> nix::Result<()> {
    if last < first {
        return Ok(());
    }
    // SAFETY: close_range only closes descriptors of this thread's table,
    // which the caller owns none of in that range.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Closes every descriptor from 3 up but `keep`, which is taken if it is
/// a mount namespace's (the template a monitor inherits; close-on-exec
/// from now on) and closed too if it is anything else.
pub fn close_from_keeping_mount_namespace(keep: Option<i32>) -> nix::Result<Option<OwnedFd>> {
    let Some(keep) = keep
        .and_then(|fd| u32::try_from(fd).ok())
        .filter(|fd| *fd >= 3)
    else {
        close_from(3)?;
        return Ok(None);
    };
    close_range(3, keep - 1)?;
    close_range(keep + 1, u32::MAX)?;
    let fd = keep as i32;
    // SAFETY: NS_GET_NSTYPE takes no argument and touches no memory of
    // ours; on a descriptor that is not open or not a namespace it fails.
    let kind = unsafe { libc::ioctl(fd, libc::NS_GET_NSTYPE) };
    let is_mount_namespace = kind == libc::CLONE_NEWNS
        && nix::fcntl::fcntl(
            // SAFETY: `fd` is open (the ioctl answered) for this call.
            unsafe { BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .is_ok();
    if !is_mount_namespace {
        close_range(keep, keep)?;
        return Ok(None);
    }
    // SAFETY: the descriptor is open and nothing else in this process
    // refers to it: it was inherited for the caller to own.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A pidfd for `pid` (pidfd_open(2)); fails with `ESRCH` when it is gone.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this new descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (pidfd_send_signal(2)):
/// never to another process that took its pid.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    pidfd_signal(pidfd, signal as libc::c_int)
}

/// [`pidfd_kill`] with a signal number, real-time signals included.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> nix::Result<()> {
    // SAFETY: the descriptor is valid for the call; a null siginfo asks
    // the kernel to fill in the sender as kill(2) does; no memory of ours
    // is written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// A signal by name or number, as `kill` takes it: `SIGTERM`, `TERM`,
/// `term`, `15`, `SIGRTMIN+3`, `RTMAX-1`; `0` or `nop` is none (the
/// process is only checked). `None` for anything else.
pub fn signal_number(name: &str) -> Option<i32> {
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let name = name.trim();
    if let Ok(number) = name.parse::<i32>() {
        return (0..=rtmax).contains(&number).then_some(number);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str, sign: i32| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(if sign > 0 { '+' } else { '-' })?;
        digits.parse::<i32>().ok().map(|n| sign * n)
    };
    if bare == "NOP" {
        return Some(0);
    }
    let realtime = if let Some(rest) = bare.strip_prefix("RTMIN") {
        rtmin + offset(rest, 1)?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        rtmax + offset(rest, -1)?
    } else {
        return nix::sys::signal::Signal::iterator()
            .find(|s| s.as_str().strip_prefix("SIG") == Some(bare))
            .map(|s| s as i32);
    };
    (rtmin..=rtmax).contains(&realtime).then_some(realtime)
}

/// Reaps the child behind `pidfd` if it has exited (`EAGAIN` if not yet;
/// `ECHILD` if it is not our child).
pub fn reap_pidfd(pidfd: BorrowedFd<'_>) -> nix::Result<ExitStatus> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the call's duration;
    // P_PIDFD takes the descriptor number as the id.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: waitid filled `info` (or left it zeroed under WNOHANG, which
    // si_pid() == 0 tells apart).
    let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
    if pid == 0 {
        return Err(Errno::EAGAIN);
    }
    Ok(match code {
        libc::CLD_EXITED => ExitStatus::Exited(status),
        _ => ExitStatus::Signaled(status),
    })
}

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`): with the pid, it names a process uniquely.
pub fn start_time(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Completes when the process behind `pidfd` has exited; reaps it if it
/// is the daemon's child (a monitor adopted after a restart is not).
pub async fn wait_exit(pidfd: OwnedFd) {
    // The pidfd itself is watched (no duplicate): the daemon holds one
    // descriptor per running container, not two.
    // SAFETY: the AsyncFd owns the pidfd, which stays open and refers to
    // the same process until `into_inner` hands it back.
    let pidfd =
        match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
            Ok(watched) => {
                if let Ok(guard) = watched.readable().await {
                    drop(guard);
                }
                watched.into_inner()
            }
            Err(_) => return,
        };
    let _ = reap_pidfd(pidfd.as_fd());
}

/// Completes when the process behind `pidfd` has exited, without reaping
/// it (whoever holds the pidfd's owner does). When it cannot be watched,
/// at once: the caller's exit record tells the rest.
pub async fn exited(pidfd: &OwnedFd) {
    let Ok(fd) = pidfd.try_clone() else { return };
    // SAFETY: the clone is a valid, open descriptor that keeps referring
    // to the same pidfd for as long as the AsyncFd owns it.
    if let Ok(fd) = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        && let Ok(guard) = fd.readable().await
    {
        drop(guard);
    }
}

/// Whether the process behind `pidfd` still runs (its pidfd is not yet
/// readable).
pub fn is_alive(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// Waits for the process behind `pidfd` to exit and reaps it (the
/// blocking form of [`wait_exit`]).
pub fn wait_exit_blocking(pidfd: BorrowedFd<'_>) -> nix::Result<ExitStatus> {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::NONE)?;
    reap_pidfd(pidfd)
}

/// A child of this process that does nothing but hold a place: a systemd
/// scope needs a process to start with, before the one it is for (qemu)
/// exists. It keeps no descriptor of ours, ends with SIGTERM as systemd
/// sends it, and ends of itself after `lifetime_secs` should nobody come
/// back for it (a daemon killed meanwhile). Dropping it kills and reaps it.
#[derive(Debug)]
pub struct Placeholder {
    pid: Pid,
    pidfd: OwnedFd,
}

impl Placeholder {
    pub fn spawn(lifetime_secs: u32) -> nix::Result<Placeholder> {
        // SAFETY: fork in a multithreaded process; the child makes only
        // async-signal-safe calls (sigprocmask, signal, prctl, close_range,
        // alarm, pause, _exit) on its own stack, and never returns.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                // SAFETY: as above; `set` and the name are on this stack.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGALRM] {
                        libc::signal(signal, libc::SIG_DFL);
                    }
                    libc::prctl(libc::PR_SET_NAME, c"lxvirt-hold".as_ptr());
                    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                    libc::alarm(lifetime_secs);
                    loop {
                        libc::pause();
                    }
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                // It cannot end before its alarm: the pid is still its own.
                let pidfd = pidfd_open(child)?;
                Ok(Placeholder { pid: child, pidfd })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        let _ = pidfd_kill(self.pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL);
        let _ = wait_exit_blocking(self.pidfd.as_fd());
    }
}

/// Whether the process `pid` started at `start` still runs; if so, a
/// pidfd for it.
pub fn find_process(pid: i32, start: u64) -> Option<OwnedFd> {
    let pid = Pid::from_raw(pid);
    let fd = pidfd_open(pid).ok()?;
    // Check after opening the pidfd: then the pidfd refers to that process.
    (start_time(pid) == Some(start)).then_some(fd)
}

/// Caps the allocator's arenas at `count`. glibc gives threads arenas of
/// their own, up to 8 per CPU; the daemon's short bursts of allocation
/// (thousands of starts, a list of thousands of domains) from tokio's
/// workers and blocking threads then leave free memory scattered over all
/// of them, which RSS keeps. Call before any thread is made. An
/// administrator's `MALLOC_ARENA_MAX` wins.
pub fn limit_heap_arenas(count: i32) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called from main
    // before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, count);
    }
}

/// Whether the calling thread holds capability number `cap` in its
/// effective set.
pub fn has_effective_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|set| u64::from_str_radix(set.trim(), 16).ok())
        })
        .is_some_and(|set| cap < 64 && set & (1 << cap) != 0)
}

/// The nice value of thread `tid` (0: the calling thread; a process's id
/// names its main thread).
pub fn nice_of(tid: i32) -> nix::Result<i32> {
    // SAFETY: getpriority(2) takes two integers and no pointer. The raw
    // call returns 20 - nice (1 to 40), so a negative result is an error.
    let raw = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if raw < 0 {
        return Err(Errno::last());
    }
    Ok(20 - raw as i32)
}

/// Sets thread `tid`'s nice value (0: the calling thread); lowering it
/// needs `CAP_SYS_NICE`.
pub fn set_nice(tid: i32, nice: i32) -> nix::Result<()> {
    let tid = libc::id_t::try_from(tid).map_err(|_| Errno::EINVAL)?;
    // SAFETY: setpriority(2) takes integers and no pointer.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    Errno::result(rc).map(drop)
}

/// Returns the allocator's free pages to the kernel (glibc keeps up to
/// 128 KiB of freed heap by default, per process).
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no
    // pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The identity (inode number) of the namespace behind `fd`.
fn namespace_inode(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_ino)
}

/// The pid namespace of `pid` (`/proc/PID/ns/pid`'s inode number): one
/// `stat`.
pub fn pid_namespace(pid: u32) -> std::io::Result<u64> {
    Ok(nix::sys::stat::stat(format!("/proc/{pid}/ns/pid").as_str())?.st_ino)
}

/// The caller's own pid namespace, which never changes: read once.
pub fn own_pid_namespace() -> std::io::Result<u64> {
    static OWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(own) = OWN.get() {
        return Ok(*own);
    }
    let own = pid_namespace(std::process::id())?;
    Ok(*OWN.get_or_init(|| own))
}

// `NS_GET_PARENT` (linux/nsfs.h): a descriptor of the parent of a pid or
// user namespace.
nix::ioctl_none!(ns_get_parent, 0xb7, 2);

/// Deepest nesting of pid namespaces the kernel allows (`MAX_PID_NS_LEVEL`).
const MAX_PID_NAMESPACE_DEPTH: usize = 32;

/// The pid namespaces `pid` is in, innermost first, up to but not
/// including the caller's own: empty when `pid` shares the caller's. A
/// process cannot leave its pid namespace, nor can anything it starts,
/// so this tells whether it runs inside a container whatever it does.
pub fn pid_namespaces(pid: u32) -> std::io::Result<Vec<u64>> {
    let own = own_pid_namespace()?;
    let mut fd = OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/pid"))?);
    let mut chain = Vec::new();
    loop {
        let inode = namespace_inode(fd.as_fd())?;
        if inode == own || chain.len() > MAX_PID_NAMESPACE_DEPTH {
            return Ok(chain);
        }
        chain.push(inode);
        // SAFETY: `fd` is an open nsfs descriptor; the ioctl takes no
        // argument and returns a new descriptor, which is owned below.
        let parent = match unsafe { ns_get_parent(fd.as_raw_fd()) } {
            Ok(parent) => parent,
            // The parent lies outside the caller's namespace: it is not
            // below the caller's own, so the chain ends here.
            Err(Errno::EPERM) => return Ok(chain),
            Err(errno) => return Err(errno.into()),
        };
        // SAFETY: NS_GET_PARENT returned a fresh descriptor nothing else owns.
        fd = unsafe { OwnedFd::from_raw_fd(parent) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_are_named_as_kill_names_them() {
        use super::signal_number;
        let rtmin = libc::SIGRTMIN();
        for (name, want) in [
            ("SIGTERM", Some(15)),
            ("term", Some(15)),
            ("Kill", Some(9)),
            ("9", Some(9)),
            ("0", Some(0)),
            ("nop", Some(0)),
            ("SIGRTMIN", Some(rtmin)),
            ("SIGRTMIN+3", Some(rtmin + 3)),
            ("rtmax-1", Some(libc::SIGRTMAX() - 1)),
            ("SIGRTMIN+99", None),
            ("SIGRTMIN3", None),
            ("SIGFOO", None),
            ("-1", None),
            ("99", None),
            ("", None),
        ] {
            assert_eq!(signal_number(name), want, "{name:?}");
        }
    }

    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pidfd_reaps_a_child_and_start_time_names_it() {
        #[allow(clippy::zombie_processes)] // reaped through the pidfd below
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let fd = pidfd_open(pid).unwrap();
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
        assert_eq!(reap_pidfd(fd.as_fd()), Ok(ExitStatus::Exited(7)));
        assert!(start_time(Pid::this()).is_some());
        assert!(start_time(pid).is_none(), "reaped");
    }

    /// A thread's nice value is read and set on that thread alone.
    #[test]
    fn nice_values_are_per_thread() {
        let before = nice_of(0).unwrap();
        let lowered = std::thread::spawn(|| {
            let own = nice_of(0).unwrap();
            set_nice(0, (own + 3).min(19)).unwrap();
            nice_of(nix::unistd::gettid().as_raw()).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 3).min(19));
        assert_eq!(nice_of(0).unwrap(), before, "the caller's thread changed");
        assert_eq!(set_nice(-5, 0), Err(Errno::EINVAL));
    }

    #[test]
    fn capabilities_are_read_from_the_effective_set() {
        // CAP_CHOWN (0) is effective for root and for nobody else here.
        assert_eq!(
            has_effective_capability(0),
            nix::unistd::geteuid().is_root()
        );
        assert!(!has_effective_capability(64));
    }
}
