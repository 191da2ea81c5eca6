//! A recording double of [`Syscalls`] for unit tests: it logs every call as
//! one line of text, pretends the filesystem holds what the test says, and
//! fails the calls the test names.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{
    CloneFlags, Errno, FileKind, LoopDevice, MntFlags, MsFlags, NodeKind, SysResult, Syscalls,
};
use crate::seccomp::SockFilter;

/// Records calls; see the module documentation.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: RefCell<Vec<String>>,
    /// A call whose log line contains the text fails with the errno.
    failures: Vec<(String, Errno)>,
    /// Host paths that do not exist (until created through the double).
    missing: RefCell<HashSet<PathBuf>>,
    /// What a host path is; directories unless listed.
    kinds: HashMap<PathBuf, FileKind>,
    /// Contents of files for `read_file`.
    files: HashMap<PathBuf, Vec<u8>>,
    loops: RefCell<u32>,
    ptys: RefCell<u32>,
}

fn flag_names(flags: MsFlags) -> String {
    let names: Vec<&str> = flags.iter_names().map(|(name, _)| name).collect();
    if names.is_empty() {
        "0".to_string()
    } else {
        names.join("|")
    }
}

fn opt(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into())
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Calls whose log line contains `needle` fail with `errno`.
    pub fn fail(mut self, needle: &str, errno: Errno) -> Recorder {
        self.failures.push((needle.to_string(), errno));
        self
    }

    /// This host path does not exist.
    pub fn missing(self, path: impl Into<PathBuf>) -> Recorder {
        self.missing.borrow_mut().insert(path.into());
        self
    }

    /// This host path is of this kind.
    pub fn kind(mut self, path: impl Into<PathBuf>, kind: FileKind) -> Recorder {
        self.kinds.insert(path.into(), kind);
        self
    }

    /// `read_file` of this host path returns `contents`.
    pub fn file(mut self, path: impl Into<PathBuf>, contents: &str) -> Recorder {
        self.files.insert(path.into(), contents.as_bytes().to_vec());
        self
    }

    /// The log, one line per call.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// Index of the first logged call containing `needle`.
    pub fn position(&self, needle: &str) -> Option<usize> {
        self.calls.borrow().iter().position(|c| c.contains(needle))
    }

    /// Whether some logged call contains `needle`.
    pub fn has(&self, needle: &str) -> bool {
        self.position(needle).is_some()
    }

    fn log(&self, line: String) -> SysResult<()> {
        let failure = self
            .failures
            .iter()
            .find(|(needle, _)| line.contains(needle.as_str()))
            .map(|(_, errno)| *errno);
        self.calls.borrow_mut().push(line);
        match failure {
            Some(errno) => Err(errno),
            None => Ok(()),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        !self.missing.borrow().iter().any(|m| path.starts_with(m))
    }

    /// mkdir and file creation succeed (the double does not track what
    /// exists besides the `missing` list) and make the path exist.
    fn create(&self, path: &Path) -> SysResult<()> {
        self.missing.borrow_mut().remove(path);
        Ok(())
    }
}

impl Syscalls for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        self.log(format!(
            "mount {} {} type={} flags={} data={}",
            opt(source),
            target.display(),
            fstype.unwrap_or("-"),
            flag_names(flags),
            data.unwrap_or("-"),
        ))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
        self.log(format!("umount2 {} {}", target.display(), names.join("|")))
    }

    fn set_readonly(&self, target: &Path, recursive: bool) -> SysResult<()> {
        let how = if recursive { "recursive" } else { "single" };
        self.log(format!("readonly {} {how}", target.display()))
    }

    fn idmap_bind(
        &self,
        source: &Path,
        target: &Path,
        _userns: BorrowedFd<'_>,
        recursive: bool,
    ) -> SysResult<()> {
        let how = if recursive { "recursive" } else { "single" };
        self.log(format!(
            "idmap_bind {} {} {how}",
            source.display(),
            target.display()
        ))
    }

    fn detach_readonly(&self, source: &Path) -> SysResult<OwnedFd> {
        self.log(format!("detach_readonly {}", source.display()))?;
        let null = std::fs::File::open("/dev/null").map_err(|_| Errno::EIO)?;
        Ok(null.into())
    }

    fn attach_tree(&self, _tree: BorrowedFd<'_>, target: &Path) -> SysResult<()> {
        self.log(format!("attach_tree {}", target.display()))
    }

    fn setns(&self, _ns: BorrowedFd<'_>, kind: CloneFlags) -> SysResult<()> {
        let names: Vec<&str> = kind.iter_names().map(|(n, _)| n).collect();
        self.log(format!("setns {}", names.join("|")))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        self.log(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }

    fn clone_tree(&self, source: &Path) -> SysResult<OwnedFd> {
        self.log(format!("clone_tree {}", source.display()))?;
        let null = std::fs::File::open("/dev/null").map_err(|_| Errno::EIO)?;
        Ok(null.into())
    }

    fn hold_mount_namespace(&self) -> SysResult<OwnedFd> {
        self.log("hold_mount_namespace".into())?;
        let null = std::fs::File::open("/dev/null").map_err(|_| Errno::EIO)?;
        Ok(null.into())
    }

    fn fchdir(&self, _dir: BorrowedFd<'_>) -> SysResult<()> {
        self.log("fchdir".into())
    }

    fn chroot(&self, path: &Path) -> SysResult<()> {
        self.log(format!("chroot {}", path.display()))
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        self.log(format!("mkdir {} {mode:o}", path.display()))?;
        self.create(path)
    }

    fn create_file(&self, path: &Path, mode: u32) -> SysResult<()> {
        self.log(format!("create {} {mode:o}", path.display()))?;
        self.create(path)
    }

    fn mknod(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> SysResult<()> {
        let k = match kind {
            NodeKind::Char => 'c',
            NodeKind::Block => 'b',
        };
        self.log(format!(
            "mknod {} {k} {major}:{minor} {mode:o}",
            path.display()
        ))
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        self.log(format!(
            "symlink {} -> {}",
            link.display(),
            target.display()
        ))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()> {
        self.log(format!("chown {} {uid}:{gid}", path.display()))
    }

    fn ensure_owner(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()> {
        self.log(format!("ensure_owner {} {uid}:{gid}", path.display()))
    }

    fn file_kind(&self, path: &Path) -> SysResult<FileKind> {
        if !self.exists(path) {
            return Err(Errno::ENOENT);
        }
        Ok(self.kinds.get(path).copied().unwrap_or(FileKind::Dir))
    }

    fn resolve_in_root(&self, root: &Path, path: &Path) -> SysResult<PathBuf> {
        let host = root.join(path.strip_prefix("/").unwrap_or(path));
        if self.exists(&host) {
            Ok(host)
        } else {
            Err(Errno::ENOENT)
        }
    }

    fn read_file(&self, path: &Path) -> SysResult<Vec<u8>> {
        self.files.get(path).cloned().ok_or(Errno::ENOENT)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> SysResult<()> {
        self.log(format!(
            "write {} {}",
            path.display(),
            String::from_utf8_lossy(data)
        ))
    }

    fn sethostname(&self, name: &str) -> SysResult<()> {
        self.log(format!("sethostname {name}"))
    }

    fn loopback_up(&self) -> SysResult<()> {
        self.log("loopback_up".to_owned())
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
        self.log(format!("unshare {}", names.join("|")))
    }

    fn umask(&self, mask: u32) -> u32 {
        let _ = self.log(format!("umask {mask:o}"));
        0o022
    }

    fn reset_signals(&self) -> SysResult<()> {
        self.log("reset_signals".into())
    }

    fn setsid(&self) -> SysResult<()> {
        self.log("setsid".into())
    }

    fn console_stdio(&self, path: &Path) -> SysResult<()> {
        self.log(format!("console_stdio {}", path.display()))
    }

    /// Pty n is the n-th opened (from 0); its master is /dev/null.
    fn open_pty(&self, ptmx: &Path) -> SysResult<(OwnedFd, u32)> {
        let number = {
            let mut ptys = self.ptys.borrow_mut();
            *ptys += 1;
            *ptys - 1
        };
        self.log(format!("open_pty {} -> {number}", ptmx.display()))?;
        let null = std::fs::File::open("/dev/null").map_err(|_| Errno::EIO)?;
        Ok((null.into(), number))
    }

    fn send_fds(
        &self,
        _socket: BorrowedFd<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> SysResult<()> {
        self.log(format!(
            "send_fds {} with {} fds",
            String::from_utf8_lossy(bytes),
            fds.len()
        ))
    }

    fn cap_bounding_drop(&self, cap: u8) -> SysResult<()> {
        self.log(format!("capbset_drop {cap}"))
    }

    fn cap_ambient_clear(&self) -> SysResult<()> {
        self.log("ambient_clear".into())
    }

    fn cap_permitted(&self) -> SysResult<u64> {
        Ok(u64::MAX)
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
        self.log(format!(
            "capset e={effective:#x} p={permitted:#x} i={inheritable:#x}"
        ))
    }

    fn setgroups(&self, groups: &[u32]) -> SysResult<()> {
        self.log(format!("setgroups {groups:?}"))
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        self.log(format!("setresgid {gid}"))
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        self.log(format!("setresuid {uid}"))
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        self.log("no_new_privs".into())
    }

    fn install_seccomp(&self, program: &[SockFilter]) -> SysResult<()> {
        self.log(format!("seccomp {} instructions", program.len()))
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        self.log(format!("chdir {}", path.display()))
    }

    fn cloexec_from(&self, first: u32) -> SysResult<()> {
        self.log(format!("cloexec_from {first}"))
    }

    fn loop_attach(&self, file: &Path, readonly: bool) -> SysResult<LoopDevice> {
        self.log(format!("loop_attach {} ro={readonly}", file.display()))?;
        let mut n = self.loops.borrow_mut();
        let path = PathBuf::from(format!("/dev/loop{n}"));
        *n += 1;
        Ok(LoopDevice { path, fd: None })
    }

    fn execve(&self, path: &Path, args: &[String], env: &[String]) -> Errno {
        let line = format!("execve {} {:?} env={}", path.display(), args, env.join(","));
        match self.log(line) {
            Err(errno) => errno,
            // The double cannot replace the process: report "success" as
            // an errno the setup turns into its final error.
            Ok(()) => Errno::UnknownErrno,
        }
    }
}
