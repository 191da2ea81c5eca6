//! The real kernel: [`Linux`] implements [`Syscalls`], plus the calls
//! that are not part of the trait (the fork-like clone, `_exit`, joining a
//! namespace from the parent). Every `unsafe` block of the LXC driver is in
//! this file.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};

use super::{
    CloneFlags, Errno, FileKind, LoopDevice, MntFlags, MsFlags, NodeKind, SysResult, Syscalls,
};
use crate::seccomp::SockFilter;

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

fn cstr(path: &Path) -> SysResult<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// The errno of an I/O error (EIO when it has none).
/// Opens `path` (absolute, as seen inside) under the directory `root`
/// as if `root` were `/` (a container's `/proc/INIT/root`): openat2(2)
/// with `RESOLVE_IN_ROOT`, so neither a link the container planted nor
/// `..` leads outside it, and no magic link is followed.
pub fn open_in_root(root: &Path, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let root = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = nix::fcntl::OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(
            nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    nix::fcntl::openat2(root.as_fd(), path, how)
}

pub fn io_errno(err: std::io::Error) -> Errno {
    err.raw_os_error()
        .map(Errno::from_raw)
        .unwrap_or(Errno::EIO)
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (`LOOP_CONFIGURE`).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct clone_args` of clone3(2).
#[repr(C, align(8))]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// capset(2) header and data (`_LINUX_CAPABILITY_VERSION_3`: two 32-bit
/// words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl Syscalls for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        nix::mount::umount2(target, flags)
    }

    fn set_readonly(&self, target: &Path, recursive: bool) -> SysResult<()> {
        let path = cstr(target)?;
        let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
        set_readonly_at(libc::AT_FDCWD, &path, flags, true)
    }

    fn idmap_bind(
        &self,
        source: &Path,
        target: &Path,
        userns: BorrowedFd<'_>,
        recursive: bool,
    ) -> SysResult<()> {
        let tree = detached_copy(source, recursive)?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        set_tree_attr(tree.as_fd(), &attr, recursive)?;
        self.attach_tree(tree.as_fd(), target)
    }

    fn detach_readonly(&self, source: &Path) -> SysResult<OwnedFd> {
        let tree = detached_copy(source, false)?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        set_tree_attr(tree.as_fd(), &attr, false)?;
        Ok(tree)
    }

    fn attach_tree(&self, tree: BorrowedFd<'_>, target: &Path) -> SysResult<()> {
        let target = cstr(target)?;
        // SAFETY: `tree` is an open detached mount; the empty path and
        // `target` are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        Errno::result(rc).map(drop)
    }

    fn setns(&self, ns: BorrowedFd<'_>, kind: CloneFlags) -> SysResult<()> {
        nix::sched::setns(ns, kind)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn clone_tree(&self, source: &Path) -> SysResult<OwnedFd> {
        detached_copy(source, true)
    }

    fn hold_mount_namespace(&self) -> SysResult<OwnedFd> {
        open_namespace(Path::new("/proc/thread-self/ns/mnt"))
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> SysResult<()> {
        nix::unistd::fchdir(dir)
    }

    fn chroot(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chroot(path)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        nix::unistd::mkdir(path, Mode::from_bits_truncate(mode))
    }

    fn create_file(&self, path: &Path, mode: u32) -> SysResult<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }

    fn mknod(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> SysResult<()> {
        let kind = match kind {
            NodeKind::Char => SFlag::S_IFCHR,
            NodeKind::Block => SFlag::S_IFBLK,
        };
        nix::sys::stat::mknod(
            path,
            kind,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::makedev(major.into(), minor.into()),
        )
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        std::os::unix::fs::symlink(target, link).map_err(io_errno)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()> {
        nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
    }

    fn ensure_owner(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()> {
        let found = nix::sys::stat::stat(path)?;
        if (found.st_uid, found.st_gid) == (uid, gid) {
            return Ok(());
        }
        self.chown(path, uid, gid)
    }

    fn file_kind(&self, path: &Path) -> SysResult<FileKind> {
        let ft = std::fs::metadata(path).map_err(io_errno)?.file_type();
        Ok(if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_file() {
            FileKind::File
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        })
    }

    fn resolve_in_root(&self, root: &Path, path: &Path) -> SysResult<PathBuf> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let rel = path.strip_prefix("/").unwrap_or(path);
        let rel = if rel.as_os_str().is_empty() {
            CString::from(c".")
        } else {
            cstr(rel)?
        };
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT,
        };
        // SAFETY: `root_fd` is an open directory, `rel` a valid C string and
        // `how` a properly laid out `struct open_how` whose size is passed;
        // all outlive the call. The returned fd is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root_fd.as_raw_fd(),
                rel.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        let fd = Errno::result(fd)?;
        // SAFETY: openat2 succeeded, so `fd` is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let real_path = |fd: &OwnedFd| {
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io_errno)
        };
        let resolved = real_path(&fd)?;
        // The kernel guarantees the result is under `root`; check anyway,
        // against the root's own real path (`root` may contain symlinks).
        if resolved.starts_with(real_path(&root_fd)?) {
            Ok(resolved)
        } else {
            Err(Errno::EXDEV)
        }
    }

    fn read_file(&self, path: &Path) -> SysResult<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io_errno)?;
        Ok(buf)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> SysResult<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .and_then(|mut f| f.write_all(data))
            .map_err(io_errno)
    }

    fn sethostname(&self, name: &str) -> SysResult<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&self) -> SysResult<()> {
        let socket = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: `request` is a valid ifreq naming "lo" that outlives the
        // call; SIOCGIFFLAGS fills in its flags.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
        Errno::result(rc)?;
        // SAFETY: the ioctl above initialised the flags member of the union.
        unsafe {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: as above; SIOCSIFFLAGS reads the request.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
        Errno::result(rc).map(drop)
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        nix::sched::unshare(flags)
    }

    fn umask(&self, mask: u32) -> u32 {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask)).bits()
    }

    fn reset_signals(&self) -> SysResult<()> {
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for signal in Signal::iterator() {
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: installing SIG_DFL runs no handler code, so no
            // signal-safety requirement can be violated.
            unsafe { nix::sys::signal::sigaction(signal, &default) }?;
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
    }

    fn setsid(&self) -> SysResult<()> {
        nix::unistd::setsid().map(drop)
    }

    fn open_pty(&self, ptmx: &Path) -> SysResult<(OwnedFd, u32)> {
        let master = nix::fcntl::open(
            ptmx,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int through the pointer, which is
        // valid for the call; it only acts on the open master `master`.
        Errno::result(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
        let mut number: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int through the pointer,
        // which is valid and exclusively ours for the call.
        Errno::result(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) })?;
        Ok((master, number))
    }

    fn send_fds(
        &self,
        socket: BorrowedFd<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> SysResult<()> {
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let iov = [std::io::IoSlice::new(bytes)];
        let rights = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        let cmsgs: &[nix::sys::socket::ControlMessage<'_>] =
            if raw.is_empty() { &[] } else { &rights };
        nix::sys::socket::sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .map(drop)
    }

    fn console_stdio(&self, path: &Path) -> SysResult<()> {
        let fd = nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty())?;
        // SAFETY: TIOCSCTTY takes an int argument (0: do not steal) and
        // only acts on the open terminal `fd`.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
        Errno::result(rc)?;
        for target in 0..3 {
            if fd.as_raw_fd() == target {
                continue;
            }
            // SAFETY: dup2 onto the standard descriptors; both are plain
            // integers and no Rust object owns fds 0..2 here.
            Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
        }
        if fd.as_raw_fd() <= 2 {
            // It is now one of the standard descriptors: keep it open.
            std::mem::forget(fd);
        }
        Ok(())
    }

    fn cap_bounding_drop(&self, cap: u8) -> SysResult<()> {
        // SAFETY: PR_CAPBSET_DROP takes an integer argument and touches no
        // memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        Errno::result(rc).map(drop)
    }

    fn cap_ambient_clear(&self) -> SysResult<()> {
        // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        Errno::result(rc).map(drop)
    }

    fn cap_permitted(&self) -> SysResult<u64> {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: `header` and the two-element `data` array match the
        // kernel's version-3 layout, are writable and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            )
        };
        Errno::result(rc)?;
        Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let word = |set: u64, i: u32| (set >> (32 * i)) as u32;
        let data = [0, 1].map(|i| CapData {
            effective: word(effective, i),
            permitted: word(permitted, i),
            inheritable: word(inheritable, i),
        });
        // SAFETY: `header` and the two-element `data` array match the
        // kernel's version-3 layout and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        };
        Errno::result(rc).map(drop)
    }

    fn setgroups(&self, groups: &[u32]) -> SysResult<()> {
        let groups: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
        nix::unistd::setgroups(&groups)
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        let gid = Gid::from_raw(gid);
        nix::unistd::setresgid(gid, gid, gid)
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        let uid = Uid::from_raw(uid);
        nix::unistd::setresuid(uid, uid, uid)
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn install_seccomp(&self, program: &[SockFilter]) -> SysResult<()> {
        const _: () = assert!(
            std::mem::size_of::<SockFilter>() == std::mem::size_of::<libc::sock_filter>()
                && std::mem::align_of::<SockFilter>() == std::mem::align_of::<libc::sock_filter>()
        );
        let prog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(|_| Errno::EINVAL)?,
            filter: program.as_ptr().cast_mut().cast(),
        };
        // SAFETY: `SockFilter` is `#[repr(C)]` with the fields, size and
        // alignment of `struct sock_filter`; `prog` points at `program`,
        // which outlives the call, with its length; the kernel only reads
        // (copies) the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &raw const prog,
            )
        };
        Errno::result(rc).map(drop)
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chdir(path)
    }

    fn cloexec_from(&self, first: u32) -> SysResult<()> {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
        // descriptors; nothing is closed under an owner's feet.
        let rc = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
        Errno::result(rc).map(drop)
    }

    fn loop_attach(&self, file: &Path, readonly: bool) -> SysResult<LoopDevice> {
        let backing = std::fs::OpenOptions::new()
            .read(true)
            .write(!readonly)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)
            .map_err(io_errno)?;
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")
            .map_err(io_errno)?;
        // Another process may take the free device between GET_FREE and
        // CONFIGURE (EBUSY): ask again a few times.
        let mut last = Errno::EBUSY;
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a
            // device number.
            let n = Errno::result(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let device = std::fs::OpenOptions::new()
                .read(true)
                .write(!readonly)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_errno)?;
            let mut flags = LO_FLAGS_AUTOCLEAR;
            if readonly {
                flags |= LO_FLAGS_READ_ONLY;
            }
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info: LoopInfo64 {
                    lo_device: 0,
                    lo_inode: 0,
                    lo_rdevice: 0,
                    lo_offset: 0,
                    lo_sizelimit: 0,
                    lo_number: 0,
                    lo_encrypt_type: 0,
                    lo_encrypt_key_size: 0,
                    lo_flags: flags,
                    lo_file_name: [0; 64],
                    lo_crypt_name: [0; 64],
                    lo_encrypt_key: [0; 32],
                    lo_init: [0; 2],
                },
                reserved: [0; 8],
            };
            // SAFETY: `config` is a properly laid out `struct loop_config`
            // that outlives the call; the kernel only reads it.
            let rc = unsafe {
                libc::ioctl(
                    device.as_raw_fd(),
                    LOOP_CONFIGURE,
                    &config as *const LoopConfig,
                )
            };
            match Errno::result(rc) {
                Ok(_) => {
                    return Ok(LoopDevice {
                        path,
                        fd: Some(OwnedFd::from(device)),
                    });
                }
                Err(Errno::EBUSY) => last = Errno::EBUSY,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn execve(&self, path: &Path, args: &[String], env: &[String]) -> Errno {
        let to_c = |s: &String| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL);
        let prepared = cstr(path).and_then(|p| {
            let args = args.iter().map(to_c).collect::<SysResult<Vec<_>>>()?;
            let env = env.iter().map(to_c).collect::<SysResult<Vec<_>>>()?;
            Ok((p, args, env))
        });
        match prepared {
            Ok((p, args, env)) => match nix::unistd::execve(&p, &args, &env) {
                Err(e) => e,
                Ok(never) => match never {},
            },
            Err(e) => e,
        }
    }
}

/// Which side of [`clone_fork`] we are on.
#[derive(Debug)]
pub enum Forked {
    /// The new process. It must end with [`exit_now`] or a successful
    /// execve, never by returning up the caller's stack.
    Child,
    /// The caller, with the child's pid and a pidfd for it.
    Parent { pid: Pid, pidfd: OwnedFd },
}

/// A fork-like clone3(2): no new stack (the child runs on a copy of the
/// caller's), `CLONE_PIDFD`, `SIGCHLD` on exit, and `flags` (namespace
/// flags) all at once.
///
/// The child is a copy of the calling thread only. Call this from a
/// single-threaded process: in a multi-threaded one, a lock held by another
/// thread (such as the allocator's) stays locked forever in the child.
pub fn clone_fork(flags: CloneFlags) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: (flags.bits() | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    // SAFETY: without CLONE_VM and with no stack given, clone3 behaves as
    // fork: the child gets a private copy of the address space, so neither
    // side can corrupt the other's memory, and execution continues in both
    // from here. `args` and `pidfd` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(rc)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: Pid::from_raw(pid as libc::pid_t),
            // SAFETY: CLONE_PIDFD succeeded, so the kernel stored a new
            // descriptor in `pidfd` that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// `_exit(2)`: end the process now, without running destructors or atexit
/// handlers (which belong to the parent in a forked child).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// The index of the network interface `name` in the network namespace of
/// `socket` (any socket: a netlink one serves), `None` when there is none:
/// `SIOCGIFINDEX`, which reads one field where an `RTM_GETLINK` reply
/// carries the whole device.
pub fn interface_index(socket: BorrowedFd<'_>, name: &str) -> SysResult<Option<u32>> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= request.ifr_name.len() || name.contains('\0') {
        return Ok(None);
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq with a NUL-terminated name (the
    // rest of the array is zero) that outlives the call; SIOCGIFINDEX
    // writes the index into it.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFINDEX, &mut request) };
    match Errno::result(rc) {
        // SAFETY: the ioctl succeeded, so it initialised the index member.
        Ok(_) => Ok(Some(unsafe { request.ifr_ifru.ifru_ifindex } as u32)),
        Err(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Open a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn open_namespace(path: &Path) -> SysResult<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
}

/// setns(2) of the calling thread into the namespace `fd` refers to.
pub fn setns(fd: impl AsFd, nstype: CloneFlags) -> SysResult<()> {
    nix::sched::setns(fd, nstype)
}

/// Runs `work` on a thread of its own that has joined the mount namespace
/// of process `pid` (its root and working directory become that
/// namespace's root), and returns what it returns. Only that thread moves:
/// it first stops sharing the process's root and working directory
/// (`unshare(CLONE_FS)`, which setns(2) into a mount namespace requires of
/// a multi-threaded process), and it ends with `work`.
pub fn in_mount_namespace_of<T: Send, E: Send + From<Errno>>(
    pid: i32,
    work: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E> {
    let namespace = open_namespace(Path::new(&format!("/proc/{pid}/ns/mnt")))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNS)?;
                work()
            })
            .join()
            .unwrap_or(Err(E::from(Errno::EIO)))
    })
}

/// A detached copy of the mount at `source` (and, `recursive`, of those
/// below it): open_tree(2) with `OPEN_TREE_CLONE`.
fn detached_copy(source: &Path, recursive: bool) -> SysResult<OwnedFd> {
    let source = cstr(source)?;
    let recursive = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `source` is a valid NUL-terminated string that outlives the
    // call; the flags are plain integers.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | recursive as libc::c_uint,
        )
    };
    let tree = Errno::result(tree)?;
    // SAFETY: open_tree(2) returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) })
}

/// mount_setattr(2) of `attr` on the mount `tree` refers to (and,
/// `recursive`, on those below it).
fn set_tree_attr(tree: BorrowedFd<'_>, attr: &MountAttr, recursive: bool) -> SysResult<()> {
    let recursive = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `tree` is an open mount descriptor, the empty path a
    // NUL-terminated string and `attr` a properly laid out `struct
    // mount_attr` whose size is passed; all outlive the call and are only
    // read.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | recursive,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// A detached copy of the mount tree at `path` (relative to `dir`, or
/// `dir` itself when `path` is empty): open_tree(2) with
/// `OPEN_TREE_CLONE | AT_RECURSIVE`, ready to be made read-only and moved.
pub fn clone_tree(dir: BorrowedFd<'_>, path: &Path) -> SysResult<OwnedFd> {
    let empty = path.as_os_str().is_empty();
    let path = cstr(path)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_RECURSIVE as libc::c_uint
        | if empty {
            libc::AT_EMPTY_PATH as libc::c_uint
        } else {
            0
        };
    // SAFETY: `dir` is an open descriptor and `path` a NUL-terminated
    // string, both outliving the call; the flags are plain integers.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), path.as_ptr(), flags) };
    let tree = Errno::result(tree)?;
    // SAFETY: open_tree(2) returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) })
}

/// Makes the mount `mount` refers to (a detached tree, or an open mount
/// point) and every mount below it read-only or writable.
pub fn set_tree_readonly(mount: BorrowedFd<'_>, readonly: bool) -> SysResult<()> {
    set_readonly_at(
        mount.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
        readonly,
    )
}

/// mount_setattr(2) setting or clearing `MOUNT_ATTR_RDONLY`.
fn set_readonly_at(
    dir: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    readonly: bool,
) -> SysResult<()> {
    let (attr_set, attr_clr) = if readonly {
        (MOUNT_ATTR_RDONLY, 0)
    } else {
        (0, MOUNT_ATTR_RDONLY)
    };
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a
    // properly laid out `struct mount_attr` whose size is passed; both
    // outlive the call, and the kernel only reads them. A bad `dir` is an
    // error (EBADF), not undefined behaviour.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// Mounts the detached tree `tree` on the directory or file `target`
/// refers to, which must be in the caller's mount namespace:
/// move_mount(2) between two descriptors.
pub fn move_tree(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> SysResult<()> {
    let empty = c"";
    // SAFETY: both descriptors are open and `empty` a NUL-terminated
    // string, all outliving the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// The errno's symbolic name (`ENOENT`), for messages.
pub fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// The errno's description (`No such file or directory`).
pub fn errno_desc(errno: Errno) -> &'static str {
    errno.desc()
}

/// The xattr holding a file's SELinux label.
const SELINUX_XATTR: &[u8] = b"security.selinux\0";

/// Sets `path`'s SELinux label (`lsetxattr`: a symlink itself, never
/// what it points to).
pub fn set_file_label(path: &Path, label: &str) -> std::io::Result<()> {
    let path = cstr(path).map_err(std::io::Error::from)?;
    // SAFETY: `path` and the xattr name are NUL-terminated strings, and the
    // value pointer and length describe `label`'s bytes, which outlive the
    // call; lsetxattr only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            SELINUX_XATTR.as_ptr().cast(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `path`'s SELinux label (`lgetxattr`), without a trailing NUL.
pub fn file_label(path: &Path) -> std::io::Result<String> {
    let path = cstr(path).map_err(std::io::Error::from)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `path` and the name are NUL-terminated strings and `buf` is
    // writable for its whole length, which is what we pass.
    let rc = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            SELINUX_XATTR.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(rc).map_err(|_| std::io::Error::last_os_error())?;
    buf.truncate(len);
    while buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The SELinux context of process `pid` (`/proc/PID/attr/current`),
/// without the trailing NUL; an error where SELinux is not active.
pub fn process_label(pid: i32) -> std::io::Result<String> {
    if !Path::new("/sys/fs/selinux/enforce").exists() {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    let bytes = std::fs::read(format!("/proc/{pid}/attr/current"))?;
    Ok(String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\0', '\n'])
        .to_owned())
}

/// While alive, sockets the calling thread creates get `context`
/// (`setsockcreatecon`); dropping it restores the default. Keep it on one
/// thread, without an await in between (a blocking task does).
#[derive(Debug)]
pub struct SocketCreateLabel(std::fs::File);

impl SocketCreateLabel {
    const PATH: &str = "/proc/thread-self/attr/sockcreate";

    pub fn set(context: &str) -> std::io::Result<SocketCreateLabel> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().write(true).open(Self::PATH)?;
        file.write_all(context.as_bytes())?;
        Ok(SocketCreateLabel(file))
    }
}

impl Drop for SocketCreateLabel {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a write of zero bytes from a null pointer on our open
        // descriptor: the kernel reads nothing, and an empty write is how
        // the attribute is reset (std's write_all would skip it).
        unsafe { libc::write(self.0.as_raw_fd(), std::ptr::null(), 0) };
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    use super::*;

    /// A chown to the owner a file has already is skipped: its ctime (the
    /// inode written) stays, where a plain chown moves it.
    #[test]
    fn ensure_owner_writes_the_inode_only_for_a_new_owner() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upper");
        std::fs::create_dir(&path).unwrap();
        let ctime = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.ctime(), m.ctime_nsec())
        };
        // Timestamps move by the clock tick: wait more than one between.
        let tick = || std::thread::sleep(Duration::from_millis(20));

        Linux.ensure_owner(&path, 100_000, 100_001).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100_000, 100_001));
        let changed = ctime(&path);
        tick();
        Linux.ensure_owner(&path, 100_000, 100_001).unwrap();
        assert_eq!(ctime(&path), changed, "an unneeded chown wrote the inode");
        tick();
        Linux.chown(&path, 100_000, 100_001).unwrap();
        assert_ne!(
            ctime(&path),
            changed,
            "a chown left ctime: the test sees nothing"
        );
        assert_eq!(
            Linux.ensure_owner(&dir.path().join("none"), 1, 1),
            Err(Errno::ENOENT)
        );
    }
}
