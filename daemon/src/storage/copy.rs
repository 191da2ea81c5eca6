//! Copying a writable layer (an overlay upper directory) into a new image
//! layer, for commit.
//!
//! The upper directory is written by the container, so it is walked the
//! same careful way as an archive is unpacked: directory fds, `*at` calls,
//! nothing followed. Whiteouts (character devices 0:0) and
//! `trusted.overlay.opaque` carry over; overlay's bookkeeping attributes
//! (`origin`, `impure`, …) do not; `redirect` and `metacopy`, which would
//! need the lower layers to make sense, are refused. Other device nodes (a
//! privileged container could make some) are left out and counted.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, readlinkat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use super::error::{Result, StorageError};
use super::extract::xattr_allowed;
use super::sys;

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes of regular file content.
    pub size: u64,
    /// Entries copied (files, directories, links, whiteouts).
    pub files: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
}

pub(crate) const OPAQUE: &str = "trusted.overlay.opaque";

/// What kind of file a stat describes.
pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// A character device 0:0: an overlay whiteout.
pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// What a [`Copier`] does with the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A new, empty layer directory: whiteouts and opaque markers are
    /// copied as they are.
    Layer,
    /// A file system holding the layers below (a thin volume): the layer
    /// is applied to it, whiteouts delete what they name, an opaque
    /// directory empties its counterpart, and an entry replaces what was
    /// there (a directory over a directory merges).
    Apply,
}

pub(crate) struct Copier<'p> {
    src_root: PathBuf,
    dst_root: OwnedFd,
    owners: bool,
    target: Target,
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
    reported: u64,
    progress: &'p mut dyn FnMut(u64),
}

impl std::fmt::Debug for Copier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copier")
            .field("src_root", &self.src_root)
            .field("target", &self.target)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Removes `name` in `dir`, a whole tree if it is a directory, following
/// nothing; a missing name is not an error.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<(), Errno> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if kind(&st) == SFlag::S_IFDIR {
        let sub = sys::open_dir_at(dir, name)?;
        clear_dir(sub.as_fd())?;
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Removes everything in the directory open as `dir`.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    let entries = sys::read_dir_fd(dir)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    for (name, _) in entries {
        remove_tree_at(dir, &name)?;
    }
    Ok(())
}

impl<'p> Copier<'p> {
    /// A copier from the tree at `src_root` into the directory open as
    /// `dst_root`.
    pub(crate) fn new(
        src_root: &Path,
        dst_root: OwnedFd,
        owners: bool,
        target: Target,
        progress: &'p mut dyn FnMut(u64),
    ) -> Copier<'p> {
        Copier {
            src_root: src_root.to_owned(),
            dst_root,
            owners,
            target,
            links: HashMap::new(),
            stats: CopyStats::default(),
            reported: 0,
            progress,
        }
    }

    pub(crate) fn into_stats(self) -> CopyStats {
        self.stats
    }

    /// Writes an overlay whiteout `name` in `dst`.
    pub(crate) fn whiteout(&mut self, dst: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<()> {
        mknodat(dst, name, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| self.err(&rel.join(name), e))?;
        self.stats.files += 1;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Gives the directory open as `dst` the owner, mode, times and kept
    /// attributes of the directory `name` in `src` (stat `st`).
    pub(crate) fn copy_dir_meta(
        &mut self,
        src: BorrowedFd<'_>,
        name: &OsStr,
        dst: BorrowedFd<'_>,
        st: &FileStat,
        rel: &Path,
    ) -> Result<()> {
        let path = rel.join(name);
        let xattrs = self.xattrs(src, name, &path)?;
        self.finish_meta(dst, st, &xattrs, &path)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Copies the owner, mode, times and kept attributes of the source
    /// root to the destination root, and reports the final progress.
    pub(crate) fn finish_root(&mut self, src: BorrowedFd<'_>) -> Result<()> {
        let st = nix::sys::stat::fstat(src).map_err(|e| StorageError::errno(&self.src_root, e))?;
        let xattrs = self.xattrs(src, OsStr::new(""), Path::new(""))?;
        let dst = self
            .dst_root
            .try_clone()
            .map_err(|e| StorageError::io(&self.src_root, e))?;
        self.finish_meta(dst.as_fd(), &st, &xattrs, Path::new(""))?;
        (self.progress)(self.stats.size);
        Ok(())
    }

    fn err(&self, rel: &Path, errno: Errno) -> StorageError {
        StorageError::errno(self.src_root.join(rel), errno)
    }

    /// The extended attributes of `name` in `dir` worth keeping.
    fn xattrs(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
    ) -> Result<Vec<(std::ffi::OsString, Vec<u8>)>> {
        let path = sys::proc_path(dir, name);
        let mut out = Vec::new();
        for key in sys::llistxattr(&path).map_err(|e| self.err(rel, e))? {
            let bytes = key.as_bytes();
            let keep = if bytes == OPAQUE.as_bytes() {
                // Applied, an opaque directory has emptied its counterpart.
                self.target == Target::Layer
            } else if bytes == b"trusted.overlay.redirect" || bytes == b"trusted.overlay.metacopy" {
                return Err(StorageError::UnsupportedOverlay {
                    path: self.src_root.join(rel),
                    what: String::from_utf8_lossy(bytes).into_owned(),
                });
            } else {
                xattr_allowed(bytes)
            };
            if keep
                && let Some(value) = sys::lgetxattr(&path, &key).map_err(|e| self.err(rel, e))?
            {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Owner, extended attributes, mode and times of a copied file or
    /// directory, open as `fd`.
    fn finish_meta(
        &self,
        fd: BorrowedFd<'_>,
        st: &FileStat,
        xattrs: &[(std::ffi::OsString, Vec<u8>)],
        rel: &Path,
    ) -> Result<()> {
        if self.owners {
            fchown(
                fd,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| self.err(rel, e))?;
        }
        for (key, value) in xattrs {
            sys::fsetxattr(fd, key, value).map_err(|e| self.err(rel, e))?;
        }
        fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777)).map_err(|e| self.err(rel, e))?;
        let (atime, mtime) = times(st);
        futimens(fd, &atime, &mtime).map_err(|e| self.err(rel, e))
    }

    /// Copies (or applies) every entry of the directory `src` into `dst`;
    /// `rel` is their path below the roots.
    pub(crate) fn copy_dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> Result<()> {
        let entries = sys::read_dir_fd(src.as_fd())
            .map_err(|e| StorageError::io(self.src_root.join(rel), e))?;
        for (name, _) in entries {
            self.copy_entry(src, dst, &name, rel)?;
        }
        Ok(())
    }

    /// Copies (or applies) the entry `name` of `src` into `dst`, a whole
    /// tree for a directory.
    pub(crate) fn copy_entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &OsStr,
        rel: &Path,
    ) -> Result<()> {
        let path = rel.join(name);
        let st = match fstatat(src.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.err(&path, e)),
        };
        // Applied: make room (or merge a directory into a directory).
        let mut merge = false;
        if self.target == Target::Apply {
            let existing = match fstatat(dst.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(existing) => Some(existing),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(self.err(&path, e)),
            };
            if is_whiteout(&st) {
                self.stats.whiteouts += 1;
                return remove_tree_at(dst.as_fd(), name).map_err(|e| self.err(&path, e));
            }
            match existing {
                Some(existing)
                    if kind(&existing) == SFlag::S_IFDIR && kind(&st) == SFlag::S_IFDIR =>
                {
                    merge = true;
                    let opaque =
                        sys::lgetxattr(&sys::proc_path(src.as_fd(), name), OsStr::new(OPAQUE))
                            .map_err(|e| self.err(&path, e))?;
                    if opaque.as_deref() == Some(b"y") {
                        let d =
                            sys::open_dir_at(dst.as_fd(), name).map_err(|e| self.err(&path, e))?;
                        clear_dir(d.as_fd()).map_err(|e| self.err(&path, e))?;
                    }
                }
                Some(_) => remove_tree_at(dst.as_fd(), name).map_err(|e| self.err(&path, e))?,
                None => {}
            }
        }
        self.stats.files += 1;
        {
            match kind(&st) {
                SFlag::S_IFDIR => {
                    if !merge {
                        mkdirat(dst.as_fd(), name, Mode::from_bits_truncate(0o700))
                            .map_err(|e| self.err(&path, e))?;
                    }
                    let s = sys::open_dir_at(src.as_fd(), name).map_err(|e| self.err(&path, e))?;
                    let d = sys::open_dir_at(dst.as_fd(), name).map_err(|e| self.err(&path, e))?;
                    self.copy_dir(&s, &d, &path)?;
                    let xattrs = self.xattrs(src.as_fd(), name, &path)?;
                    self.finish_meta(d.as_fd(), &st, &xattrs, &path)?;
                }
                SFlag::S_IFREG => {
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1
                        && let Some(first) = self.links.get(&key)
                    {
                        let (first_dir, first_name) = (
                            first.parent().unwrap_or(Path::new("")),
                            first.file_name().unwrap_or_default(),
                        );
                        let fd = sys::open_dir_beneath(self.dst_root.as_fd(), first_dir)
                            .map_err(|e| self.err(&path, e))?;
                        linkat(fd.as_fd(), first_name, dst.as_fd(), name, AtFlags::empty())
                            .map_err(|e| self.err(&path, e))?;
                        return Ok(());
                    }
                    let mut from =
                        sys::open_file_at(src.as_fd(), name).map_err(|e| self.err(&path, e))?;
                    let mut to =
                        sys::create_file_at(dst.as_fd(), name).map_err(|e| self.err(&path, e))?;
                    // std's copy uses copy_file_range (and reflinks where
                    // the file system can).
                    let n = io::copy(&mut from, &mut to)
                        .map_err(|e| StorageError::io(self.src_root.join(&path), e))?;
                    self.stats.size += n;
                    let xattrs = self.xattrs(src.as_fd(), name, &path)?;
                    self.finish_meta(to.as_fd(), &st, &xattrs, &path)?;
                    if st.st_nlink > 1 {
                        self.links.insert(key, path.clone());
                    }
                    if self.stats.size - self.reported >= super::store::PROGRESS_STEP {
                        self.reported = self.stats.size;
                        (self.progress)(self.stats.size);
                    }
                }
                SFlag::S_IFLNK => {
                    let target = readlinkat(src.as_fd(), name).map_err(|e| self.err(&path, e))?;
                    symlinkat(target.as_os_str(), dst.as_fd(), name)
                        .map_err(|e| self.err(&path, e))?;
                    if self.owners {
                        fchownat(
                            dst.as_fd(),
                            name,
                            Some(Uid::from_raw(st.st_uid)),
                            Some(Gid::from_raw(st.st_gid)),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.err(&path, e))?;
                    }
                    let (atime, mtime) = times(&st);
                    utimensat(
                        dst.as_fd(),
                        name,
                        &atime,
                        &mtime,
                        UtimensatFlags::NoFollowSymlink,
                    )
                    .map_err(|e| self.err(&path, e))?;
                }
                SFlag::S_IFCHR if is_whiteout(&st) => {
                    self.stats.whiteouts += 1;
                    mknodat(dst.as_fd(), name, SFlag::S_IFCHR, Mode::empty(), 0)
                        .map_err(|e| self.err(&path, e))?;
                }
                SFlag::S_IFIFO => {
                    mknodat(
                        dst.as_fd(),
                        name,
                        SFlag::S_IFIFO,
                        Mode::from_bits_truncate(st.st_mode & 0o7777),
                        0,
                    )
                    .map_err(|e| self.err(&path, e))?;
                    if self.owners {
                        fchownat(
                            dst.as_fd(),
                            name,
                            Some(Uid::from_raw(st.st_uid)),
                            Some(Gid::from_raw(st.st_gid)),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.err(&path, e))?;
                    }
                }
                _ => {
                    self.stats.files -= 1;
                    self.stats.skipped_devices += 1;
                }
            }
        }
        Ok(())
    }
}

/// Copies the layer directory `src` to the new directory `dest`.
pub fn copy_layer(
    src: &Path,
    dest: &Path,
    owners: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyStats> {
    let src_fd: OwnedFd = File::open(src)
        .map_err(|e| StorageError::io(src, e))?
        .into();
    std::fs::create_dir(dest).map_err(|e| StorageError::io(dest, e))?;
    let dst_fd: OwnedFd = File::open(dest)
        .map_err(|e| StorageError::io(dest, e))?
        .into();
    let mut copier = Copier::new(
        src,
        dst_fd.try_clone().map_err(|e| StorageError::io(dest, e))?,
        owners,
        Target::Layer,
        progress,
    );
    copier.copy_dir(&src_fd, &dst_fd, Path::new(""))?;
    copier.finish_root(src_fd.as_fd())?;
    Ok(copier.stats)
}
