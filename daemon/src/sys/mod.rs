//! The syscall seam: every kernel call the container setup makes goes
//! through [`Syscalls`], so the setup logic can be driven by a recording
//! double in unit tests and by [`Linux`] for real.
//!
//! All `unsafe` code and every raw `libc` call of the LXC driver lives in
//! [`linux`]. The few calls that only make sense for real (the fork-like
//! clone, `_exit`) are free functions there rather than trait methods.

pub mod linux;
pub mod mountinfo;
pub mod process;
#[cfg(test)]
pub mod recorder;

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use nix::errno::Errno;
pub use nix::mount::{MntFlags, MsFlags};
pub use nix::sched::CloneFlags;

pub use linux::Linux;

use crate::seccomp::SockFilter;

/// The result of one system call.
pub type SysResult<T> = Result<T, Errno>;

/// What a path is (following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    CharDevice,
    BlockDevice,
    Other,
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
}

/// A loop device attached with autoclear: it detaches itself once the last
/// reference (this handle's fd, then the mount made from it) goes away.
/// Keep it until the mount is made, then drop it.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// The open device; `None` for the recording double.
    pub fd: Option<OwnedFd>,
}

/// The kernel calls of the container setup.
///
/// Paths are host paths as the calling process sees them. Methods report
/// the raw errno; the caller adds which step and which path failed.
pub trait Syscalls {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult<()>;
    /// Make the mount at `target` read-only without touching its other
    /// (possibly locked) flags; with `recursive`, its submounts too
    /// (mount_setattr(2) with `MOUNT_ATTR_RDONLY`).
    fn set_readonly(&self, target: &Path, recursive: bool) -> SysResult<()>;
    /// A copy of the mount tree at `source` (its submounts too with
    /// `recursive`) shown through the id mapping of the user namespace
    /// `userns` (an idmapped mount: files owned by host id N appear as the
    /// id N maps to inside), attached at `target` (open_tree(2),
    /// mount_setattr(2) with `MOUNT_ATTR_IDMAP`, move_mount(2)).
    fn idmap_bind(
        &self,
        source: &Path,
        target: &Path,
        userns: BorrowedFd<'_>,
        recursive: bool,
    ) -> SysResult<()>;
    /// A detached copy of the mount at the directory `source` (just that
    /// directory and what is below it on the same mount), read-only,
    /// nosuid, nodev and noexec: open_tree(2) and mount_setattr(2). It
    /// keeps that directory even once something is mounted over it.
    fn detach_readonly(&self, source: &Path) -> SysResult<OwnedFd>;
    /// Mounts the detached tree `tree` at `target`: move_mount(2).
    fn attach_tree(&self, tree: BorrowedFd<'_>, target: &Path) -> SysResult<()>;
    /// setns(2) of the calling thread into the namespace `ns`.
    fn setns(&self, ns: BorrowedFd<'_>, kind: CloneFlags) -> SysResult<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()>;
    /// A detached copy of the mount tree at `source` with every mount
    /// below it: open_tree(2) with `OPEN_TREE_CLONE | AT_RECURSIVE`.
    fn clone_tree(&self, source: &Path) -> SysResult<OwnedFd>;
    /// A descriptor of the calling thread's mount namespace
    /// (`/proc/thread-self/ns/mnt`), which keeps it alive after the thread
    /// leaves it.
    fn hold_mount_namespace(&self) -> SysResult<OwnedFd>;
    /// fchdir(2).
    fn fchdir(&self, dir: BorrowedFd<'_>) -> SysResult<()>;
    /// chroot(2).
    fn chroot(&self, path: &Path) -> SysResult<()>;
    /// mkdir(2); `EEXIST` when it exists.
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()>;
    /// Create an empty regular file (a bind-mount target); `EEXIST` when
    /// something exists there.
    fn create_file(&self, path: &Path, mode: u32) -> SysResult<()>;
    /// mknod(2) of a device node.
    fn mknod(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> SysResult<()>;
    /// symlink(2): a link at `link` pointing to `target`.
    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()>;
    /// chown(2).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()>;
    /// chown(2) unless `path` has that owner already: a chown writes the
    /// inode (its ctime) even when nothing changes, which on a disk file
    /// system waits for the journal.
    fn ensure_owner(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()>;
    /// stat(2), reduced to the file type.
    fn file_kind(&self, path: &Path) -> SysResult<FileKind>;
    /// Resolve `path` (absolute, as seen inside the container) under
    /// `root` as if `root` were `/`: symlinks and `..` cannot leave it
    /// (openat2(2) with `RESOLVE_IN_ROOT`). Returns the host path of the
    /// result; `ENOENT` when it does not exist.
    fn resolve_in_root(&self, root: &Path, path: &Path) -> SysResult<PathBuf>;
    /// Read a small file whole.
    fn read_file(&self, path: &Path) -> SysResult<Vec<u8>>;
    /// Write a small file that must exist (opened write-only, never
    /// created: `/proc` attribute and map files).
    fn write_file(&self, path: &Path, data: &[u8]) -> SysResult<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> SysResult<()>;
    /// Bring the loopback interface of the current network namespace up.
    fn loopback_up(&self) -> SysResult<()>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> SysResult<()>;
    /// umask(2); returns the previous mask.
    fn umask(&self, mask: u32) -> u32;
    /// Unblock every signal and set every signal's action to the default,
    /// so that init starts with a clean slate (ignored signals and the
    /// blocked mask survive execve).
    fn reset_signals(&self) -> SysResult<()>;
    /// setsid(2).
    fn setsid(&self) -> SysResult<()>;
    /// Open the terminal at `path`, make it the controlling terminal
    /// (`TIOCSCTTY`) and stdin, stdout and stderr.
    fn console_stdio(&self, path: &Path) -> SysResult<()>;
    /// A new pty from the devpts instance whose multiplexer `ptmx` is,
    /// unlocked: its master (close-on-exec, non-blocking, nobody's
    /// controlling terminal) and the number of its slave in that instance.
    fn open_pty(&self, ptmx: &Path) -> SysResult<(OwnedFd, u32)>;
    /// One message of `bytes` with `fds` attached (`SCM_RIGHTS`) on the
    /// connected socket `socket`.
    fn send_fds(
        &self,
        socket: BorrowedFd<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> SysResult<()>;
    /// Drop one capability from the bounding set (`PR_CAPBSET_DROP`).
    fn cap_bounding_drop(&self, cap: u8) -> SysResult<()>;
    /// Clear the ambient capability set.
    fn cap_ambient_clear(&self) -> SysResult<()>;
    /// The permitted set of the calling thread (capget(2)): bit N is
    /// capability N.
    fn cap_permitted(&self) -> SysResult<u64>;
    /// capset(2) of the calling thread: bit N is capability N.
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()>;
    /// setgroups(2).
    fn setgroups(&self, groups: &[u32]) -> SysResult<()>;
    /// setresgid(2) with all three ids equal.
    fn setresgid(&self, gid: u32) -> SysResult<()>;
    /// setresuid(2) with all three ids equal.
    fn setresuid(&self, uid: u32) -> SysResult<()>;
    /// `PR_SET_NO_NEW_PRIVS`.
    fn set_no_new_privs(&self) -> SysResult<()>;
    /// Install a seccomp filter on the calling thread (seccomp(2)
    /// `SECCOMP_SET_MODE_FILTER`, no flags). Needs `no_new_privs` or
    /// `CAP_SYS_ADMIN` in the thread's user namespace.
    fn install_seccomp(&self, program: &[SockFilter]) -> SysResult<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> SysResult<()>;
    /// Mark every fd from `first` up close-on-exec.
    fn cloexec_from(&self, first: u32) -> SysResult<()>;
    /// Attach `file` to a free loop device with autoclear.
    fn loop_attach(&self, file: &Path, readonly: bool) -> SysResult<LoopDevice>;
    /// execve(2); returns only on failure.
    fn execve(&self, path: &Path, args: &[String], env: &[String]) -> Errno;
}
