//! Unpacking a layer tar into a layer directory, safely.
//!
//! Every entry is checked before anything is written: absolute paths, `..`
//! components, device nodes (other than overlay whiteouts) and hard links
//! leaving the layer are refused; a relative symbolic link whose target
//! climbs above the root is refused too. Symbolic links are created as they
//! are and never followed: parent directories are opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so an entry below a
//! symbolic link of the same archive is refused rather than written through
//! it, and the final component is created with `O_EXCL | O_NOFOLLOW` or an
//! `*at` call that does not follow.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`, or a character device 0:0) become
//! overlayfs whiteouts in the layer: a character device 0:0 named `NAME`,
//! and `trusted.overlay.opaque=y` on the directory. A layer without a parent
//! has nothing to hide and drops them.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use super::error::{Result, StorageError, UnsafeEntry};
use super::id::HashingReader;
use super::sys;

/// What to do with device nodes in an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Refuse the archive (the default): containers get a fresh `/dev` at
    /// start and an image has no business carrying device nodes.
    #[default]
    Refuse,
    /// Leave them out and count them (for root file systems made by
    /// debootstrap and similar, which carry a few in `/dev`).
    Skip,
}

/// How to unpack.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// The layer has a parent: whiteouts are kept as overlay whiteouts.
    /// Without a parent they are dropped.
    pub has_parent: bool,
    pub devices: DevicePolicy,
    /// Set owners from the archive (needs root). Without it, files belong
    /// to the caller.
    pub owners: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// sha256 (hex) of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Bytes of regular file content written.
    pub size: u64,
    pub entries: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
    /// Extended attributes left out (trusted.*, security.selinux, …).
    pub dropped_xattrs: u64,
}

/// The extended attributes kept from an archive.
pub(crate) fn xattr_allowed(key: &[u8]) -> bool {
    key.starts_with(b"user.")
        || key == b"security.capability"
        || key == b"system.posix_acl_access"
        || key == b"system.posix_acl_default"
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The largest copy buffer of a file's content.
const COPY_BUFFER: usize = 256 << 10;

/// Splits an archive path into its components, refusing absolute paths and
/// `..`; `.` and empty components are dropped.
pub fn split_path(raw: &[u8]) -> Result<Vec<&OsStr>, UnsafeEntry> {
    if raw.contains(&0) {
        return Err(UnsafeEntry::BadPath);
    }
    if raw.starts_with(b"/") {
        return Err(UnsafeEntry::AbsolutePath);
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(UnsafeEntry::ParentComponent),
            _ => parts.push(OsStr::from_bytes(part)),
        }
    }
    Ok(parts)
}

/// Checks a symbolic link target: absolute targets are kept (they resolve
/// inside the container), relative ones must not climb above the root from
/// the link's directory (`depth` components deep).
pub fn check_symlink_target(depth: usize, target: &[u8]) -> Result<(), UnsafeEntry> {
    if target.contains(&0) || target.is_empty() {
        return Err(UnsafeEntry::BadPath);
    }
    if target.starts_with(b"/") {
        return Ok(());
    }
    let mut level = depth as i64;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                level -= 1;
                if level < 0 {
                    return Err(UnsafeEntry::LinkEscapes {
                        target: String::from_utf8_lossy(target).into_owned(),
                    });
                }
            }
            _ => level += 1,
        }
    }
    Ok(())
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

/// PAX records that matter here.
#[derive(Debug, Default)]
struct Pax {
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, i64)>,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

fn parse_mtime(text: &str) -> Option<(i64, i64)> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let scale = 10i64.pow(9 - digits.len() as u32);
        nanos = digits.parse::<i64>().ok()? * scale;
    }
    Some((secs, nanos))
}

/// The layer being written, and a cache of the last parent directory.
struct Layer<'a> {
    root: OwnedFd,
    /// Where `root` is, for errors.
    dir: &'a Path,
    archive: &'a Path,
    opts: ExtractOptions,
    cache: Option<(PathBuf, OwnedFd)>,
    /// Directories whose mode and mtime are set at the end, once their
    /// content no longer changes.
    dirs: Vec<(PathBuf, u32, (i64, i64))>,
    stats: ExtractStats,
    buf: Vec<u8>,
}

impl Layer<'_> {
    fn unsafe_entry(&self, entry: &[u8], reason: UnsafeEntry) -> StorageError {
        StorageError::UnsafeEntry {
            archive: self.archive.to_owned(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason,
        }
    }

    /// An error writing `rel` in the layer: the path written names it (the
    /// device it is on failed or is full, not the archive).
    fn write_error(&self, rel: &Path, errno: Errno) -> StorageError {
        StorageError::errno(self.dir.join(rel), errno)
    }

    /// The owner (when owners are kept) and the mtime of the entry `name`
    /// in `dir`, not following a symlink: every entry gets its archive's
    /// mtime, so an export of the layer gives back the same bytes.
    fn set_owner_and_mtime(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        (uid, gid): (u64, u64),
        mtime: (i64, i64),
        rel: &Path,
    ) -> Result<()> {
        if self.opts.owners {
            fchownat(
                dir.as_fd(),
                name,
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.write_error(rel, e))?;
        }
        let t = timespec(mtime);
        utimensat(dir.as_fd(), name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.write_error(rel, e))
    }

    /// Opens (creating as needed, mode 0755) the directory `rel` of the
    /// layer.
    fn parent(&mut self, entry: &[u8], rel: &Path, create: bool) -> Result<OwnedFd> {
        if let Some((path, fd)) = &self.cache
            && path == rel
        {
            return fd
                .try_clone()
                .map_err(|e| StorageError::io(self.archive, e));
        }
        let fd = match sys::open_dir_beneath(self.root.as_fd(), rel) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                let mut cur = self
                    .root
                    .try_clone()
                    .map_err(|e| StorageError::io(self.archive, e))?;
                for part in rel.iter() {
                    match mkdirat(cur.as_fd(), part, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.write_error(rel, e)),
                    }
                    cur = match sys::open_dir_beneath(cur.as_fd(), Path::new(part)) {
                        Ok(fd) => fd,
                        Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => {
                            return Err(self.unsafe_entry(entry, UnsafeEntry::ThroughSymlink));
                        }
                        Err(e) => return Err(self.write_error(rel, e)),
                    };
                }
                cur
            }
            Err(Errno::ENOENT) => {
                return Err(self.unsafe_entry(entry, UnsafeEntry::ThroughSymlink));
            }
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV) => {
                return Err(self.unsafe_entry(entry, UnsafeEntry::ThroughSymlink));
            }
            Err(e) => return Err(self.write_error(rel, e)),
        };
        let copy = fd
            .try_clone()
            .map_err(|e| StorageError::io(self.archive, e))?;
        self.cache = Some((rel.to_owned(), copy));
        Ok(fd)
    }

    /// Removes whatever `name` is in `dir` (a directory with its content).
    fn clear(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<Option<FileStat>> {
        let stat = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.write_error(rel, e)),
        };
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            self.cache = None;
            std::fs::remove_dir_all(sys::proc_path(dir.as_fd(), name))
                .map_err(|e| StorageError::io(self.dir.join(rel), e))?;
        } else {
            unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.write_error(rel, e))?;
        }
        Ok(Some(stat))
    }

    fn entry(&mut self, entry: &mut tar::Entry<'_, impl Read>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let header = entry.header().clone();
        let kind = header.entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        self.stats.entries += 1;
        let parts = split_path(&raw_path).map_err(|r| self.unsafe_entry(&raw_path, r))?;
        let bad_archive = |source: io::Error| StorageError::BadArchive {
            archive: self.archive.to_owned(),
            source,
        };

        let mut pax = Pax::default();
        if let Some(exts) = entry.pax_extensions().map_err(bad_archive)? {
            for ext in exts {
                let ext = ext.map_err(bad_archive)?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr_allowed(name) {
                        pax.xattrs
                            .push((OsStr::from_bytes(name).to_owned(), value.to_vec()));
                    } else {
                        self.stats.dropped_xattrs += 1;
                    }
                } else {
                    let text = std::str::from_utf8(value).unwrap_or("");
                    match key {
                        b"uid" => pax.uid = text.parse().ok(),
                        b"gid" => pax.gid = text.parse().ok(),
                        b"mtime" => pax.mtime = parse_mtime(text),
                        _ => {}
                    }
                }
            }
        }
        let uid = pax.uid.or_else(|| header.uid().ok()).unwrap_or(0);
        let gid = pax.gid.or_else(|| header.gid().ok()).unwrap_or(0);
        let mtime = pax
            .mtime
            .unwrap_or_else(|| (header.mtime().map(|m| m as i64).unwrap_or(0), 0));
        let mode = header.mode().unwrap_or(0o644) & 0o7777;

        // The root directory itself.
        let Some((name, dirs)) = parts.split_last() else {
            if kind.is_dir() {
                let root = self
                    .root
                    .try_clone()
                    .map_err(|e| StorageError::io(self.archive, e))?;
                self.set_owner_xattrs(&root, &pax, uid, gid, Path::new(""))?;
                self.dirs.push((PathBuf::new(), mode, mtime));
                return Ok(());
            }
            return Err(self.unsafe_entry(&raw_path, UnsafeEntry::BadPath));
        };
        let name: &OsStr = name;
        let rel_parent = join(dirs);
        let rel = rel_parent.join(name);

        // Whiteouts.
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER {
            self.stats.whiteouts += 1;
            if self.opts.has_parent {
                let dir = self.parent(&raw_path, &rel_parent, true)?;
                sys::fsetxattr(dir.as_fd(), OsStr::new(OPAQUE_XATTR), b"y")
                    .map_err(|e| self.write_error(&rel_parent, e))?;
            }
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            self.stats.whiteouts += 1;
            if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
                // Other AUFS metadata (.wh..wh.plnk, …): nothing to apply.
                return Ok(());
            }
            if self.opts.has_parent {
                let hidden = OsStr::from_bytes(hidden);
                self.whiteout(&raw_path, &rel_parent, hidden)?;
            }
            return Ok(());
        }

        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let dir = self.parent(&raw_path, &rel_parent, true)?;
                self.clear(&dir, name, &rel)?;
                let mut file = sys::create_file_at(dir.as_fd(), name)
                    .map_err(|e| self.write_error(&rel, e))?;
                // The copy buffer grows to the largest file met, within
                // COPY_BUFFER: most files are small, and a layer of small
                // files should not pay for zeroing a large buffer.
                let wanted = usize::try_from(entry.size())
                    .unwrap_or(COPY_BUFFER)
                    .clamp(1, COPY_BUFFER);
                if self.buf.len() < wanted {
                    self.buf.resize(wanted, 0);
                }
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(bad_archive(e)),
                    };
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n])
                        .map_err(|e| StorageError::io(self.dir.join(&rel), e))?;
                    written += n as u64;
                }
                self.stats.size += written;
                let fd: OwnedFd = file.into();
                self.set_owner_xattrs(&fd, &pax, uid, gid, &rel)?;
                fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| self.write_error(&rel, e))?;
                let t = timespec(mtime);
                futimens(fd.as_fd(), &t, &t).map_err(|e| self.write_error(&rel, e))?;
            }
            tar::EntryType::Directory => {
                let dir = self.parent(&raw_path, &rel_parent, true)?;
                match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR => {}
                    Ok(_) => {
                        self.clear(&dir, name, &rel)?;
                        mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755))
                            .map_err(|e| self.write_error(&rel, e))?;
                    }
                    Err(Errno::ENOENT) => {
                        mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755))
                            .map_err(|e| self.write_error(&rel, e))?;
                    }
                    Err(e) => return Err(self.write_error(&rel, e)),
                }
                let fd =
                    sys::open_dir_at(dir.as_fd(), name).map_err(|e| self.write_error(&rel, e))?;
                self.set_owner_xattrs(&fd, &pax, uid, gid, &rel)?;
                self.dirs.push((rel, mode, mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                check_symlink_target(dirs.len(), &target)
                    .map_err(|r| self.unsafe_entry(&raw_path, r))?;
                let dir = self.parent(&raw_path, &rel_parent, true)?;
                self.clear(&dir, name, &rel)?;
                symlinkat(OsStr::from_bytes(&target), dir.as_fd(), name)
                    .map_err(|e| self.write_error(&rel, e))?;
                self.set_owner_and_mtime(&dir, name, (uid, gid), mtime, &rel)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let escapes = || UnsafeEntry::LinkEscapes {
                    target: String::from_utf8_lossy(&target).into_owned(),
                };
                let tparts =
                    split_path(&target).map_err(|_| self.unsafe_entry(&raw_path, escapes()))?;
                let Some((tname, tdirs)) = tparts.split_last() else {
                    return Err(self.unsafe_entry(&raw_path, escapes()));
                };
                let missing = || UnsafeEntry::LinkTargetMissing {
                    target: String::from_utf8_lossy(&target).into_owned(),
                };
                let tdir = self
                    .parent(&raw_path, &join(tdirs), false)
                    .map_err(|_| self.unsafe_entry(&raw_path, missing()))?;
                let dir = self.parent(&raw_path, &rel_parent, true)?;
                if tparts == parts {
                    return Ok(());
                }
                self.clear(&dir, name, &rel)?;
                match linkat(tdir.as_fd(), *tname, dir.as_fd(), name, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::ENOENT) => return Err(self.unsafe_entry(&raw_path, missing())),
                    Err(e) => return Err(self.write_error(&rel, e)),
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let block = matches!(kind, tar::EntryType::Block);
                if !block && major == 0 && minor == 0 {
                    // An overlay whiteout, as in an exported upper directory.
                    self.stats.whiteouts += 1;
                    if self.opts.has_parent {
                        self.whiteout(&raw_path, &rel_parent, name)?;
                    }
                    return Ok(());
                }
                match self.opts.devices {
                    DevicePolicy::Refuse => {
                        return Err(self.unsafe_entry(
                            &raw_path,
                            UnsafeEntry::DeviceNode {
                                block,
                                major,
                                minor,
                            },
                        ));
                    }
                    DevicePolicy::Skip => self.stats.skipped_devices += 1,
                }
            }
            tar::EntryType::Fifo => {
                let dir = self.parent(&raw_path, &rel_parent, true)?;
                self.clear(&dir, name, &rel)?;
                mknodat(
                    dir.as_fd(),
                    name,
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(mode),
                    0,
                )
                .map_err(|e| self.write_error(&rel, e))?;
                self.set_owner_and_mtime(&dir, name, (uid, gid), mtime, &rel)?;
            }
            other => {
                return Err(self.unsafe_entry(
                    &raw_path,
                    UnsafeEntry::UnsupportedType(format!("{other:?}")),
                ));
            }
        }
        Ok(())
    }

    /// Creates an overlay whiteout for `name` in the directory `rel_parent`.
    fn whiteout(&mut self, raw_path: &[u8], rel_parent: &Path, name: &OsStr) -> Result<()> {
        let dir = self.parent(raw_path, rel_parent, true)?;
        let rel = rel_parent.join(name);
        self.clear(&dir, name, &rel)?;
        mknodat(dir.as_fd(), name, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| self.write_error(&rel, e))
    }

    fn set_owner_xattrs(
        &self,
        fd: &OwnedFd,
        pax: &Pax,
        uid: u64,
        gid: u64,
        rel: &Path,
    ) -> Result<()> {
        if self.opts.owners {
            fchown(
                fd.as_fd(),
                Some(Uid::from_raw(uid as u32)),
                Some(Gid::from_raw(gid as u32)),
            )
            .map_err(|e| self.write_error(rel, e))?;
        }
        for (key, value) in &pax.xattrs {
            sys::fsetxattr(fd.as_fd(), key, value).map_err(|e| self.write_error(rel, e))?;
        }
        Ok(())
    }

    /// Sets the modes and times of directories, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, mode, mtime) in dirs.iter().rev() {
            let fd = sys::open_dir_beneath(self.root.as_fd(), rel)
                .map_err(|e| self.write_error(rel, e))?;
            fchmod(fd.as_fd(), Mode::from_bits_truncate(*mode))
                .map_err(|e| self.write_error(rel, e))?;
            let t = timespec(*mtime);
            futimens(fd.as_fd(), &t, &t).map_err(|e| self.write_error(rel, e))?;
        }
        Ok(())
    }
}

fn timespec((secs, nanos): (i64, i64)) -> TimeSpec {
    TimeSpec::new(secs, nanos)
}

/// Unpacks the (uncompressed) tar stream `reader` into the existing, empty
/// directory `layer`. `archive` names the source in errors. The whole stream
/// is read, so [`ExtractStats::diff_id`] is the sha256 of all of it.
///
/// On error the layer is left half-written: the caller removes it.
pub fn extract(
    reader: impl Read,
    layer: &Path,
    archive: &Path,
    opts: ExtractOptions,
) -> Result<ExtractStats> {
    let root: OwnedFd = std::fs::File::open(layer)
        .map_err(|e| StorageError::io(layer, e))?
        .into();
    let mut hashing = HashingReader::new(reader);
    let mut state = Layer {
        dir: layer,
        root,
        archive,
        opts,
        cache: None,
        dirs: Vec::new(),
        stats: ExtractStats::default(),
        buf: Vec::new(),
    };
    {
        let mut tar = tar::Archive::new(&mut hashing);
        let bad_archive = |source: io::Error| StorageError::BadArchive {
            archive: archive.to_owned(),
            source,
        };
        let entries = tar.entries().map_err(bad_archive)?;
        for entry in entries {
            let mut entry = entry.map_err(bad_archive)?;
            state.entry(&mut entry)?;
        }
    }
    state.finish_dirs()?;
    let (diff_id, tar_bytes) = hashing
        .finish()
        .map_err(|source| StorageError::BadArchive {
            archive: archive.to_owned(),
            source,
        })?;
    state.stats.diff_id = diff_id;
    state.stats.tar_bytes = tar_bytes;
    Ok(state.stats)
}
