//! The storage module's narrow seam to the kernel: opening paths without
//! following symbolic links, and extended attributes.
//!
//! Image layers and writable layers hold content chosen by whoever made the
//! image or runs the container. The store handles them as root, so it never
//! resolves a path inside them the ordinary way: directories are opened one
//! level at a time (or with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`)
//! and everything else is done with `*at` calls relative to a directory fd,
//! without following the final component.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;

/// How every path below a layer root is resolved.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// Opens the directory `rel` below `root` (which must be a directory fd),
/// refusing symbolic links anywhere on the way (ELOOP), `..` escapes (EXDEV)
/// and non-directories (ENOTDIR). An empty `rel` opens `root` again.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(beneath());
    openat2(root, rel, how)
}

/// Opens the directory `name` in `dir`, not following a symbolic link.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// Opens the regular file `name` in `dir` for reading, not following a
/// symbolic link.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<fs::File, Errno> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY,
        Mode::empty(),
    )?;
    Ok(fs::File::from(fd))
}

/// Creates the regular file `name` in `dir` (which must not exist), for
/// writing, mode 0600 until the caller sets the real mode.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<fs::File, Errno> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(fs::File::from(fd))
}

/// A path that names `name` inside the directory open as `dir` for the
/// `l*` calls: `/proc/self/fd/N/name` (an empty name: the directory). `/proc/self/fd/N` is the directory
/// itself, whatever its path; the final component is not followed by the
/// `l*` calls.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    // An empty name means the directory itself: "/proc/self/fd/N/." (the
    // bare link would name the magic link for the l* calls).
    path.push(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    });
    path
}

/// The entries of the directory open as `dir` (without `.` and `..`),
/// sorted by name, with their type as the directory reports it (not
/// following symbolic links).
pub fn read_dir_fd(dir: BorrowedFd<'_>) -> std::io::Result<Vec<(OsString, fs::FileType)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(proc_path(dir, OsStr::new("")))? {
        let entry = entry?;
        entries.push((entry.file_name(), entry.file_type()?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

fn cstring(bytes: &[u8]) -> Result<CString, Errno> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// Sets the extended attribute `key` of the file open as `fd`.
pub fn fsetxattr(fd: BorrowedFd<'_>, key: &OsStr, value: &[u8]) -> Result<(), Errno> {
    let key = cstring(key.as_bytes())?;
    // SAFETY: `key` is a NUL-terminated string and `value` a live buffer of
    // `value.len()` bytes, both outliving the call; the fd is borrowed open.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// The names of the extended attributes of `path` (final symbolic link not
/// followed).
pub fn llistxattr(path: &Path) -> Result<Vec<OsString>, Errno> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `cpath` is NUL-terminated; `buf` is a live, writable
        // buffer of `buf.len()` bytes.
        let rc = unsafe { libc::llistxattr(cpath.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|k| !k.is_empty())
                    .map(|k| OsString::from_vec(k.to_vec()))
                    .collect());
            }
            Err(Errno::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

/// The value of the extended attribute `key` of `path` (final symbolic
/// link not followed); `None` when it is not set.
pub fn lgetxattr(path: &Path, key: &OsStr) -> Result<Option<Vec<u8>>, Errno> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let ckey = cstring(key.as_bytes())?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; `buf` is a live, writable
        // buffer of `buf.len()` bytes.
        let rc = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                ckey.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        match Errno::result(rc) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENODATA) | Err(Errno::ENOTSUP) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}
