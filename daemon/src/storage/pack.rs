//! Writing image layers as a tar stream, for export.
//!
//! Either one layer as it is (whiteouts become `.wh.NAME` entries and
//! opaque directories a `.wh..wh..opq` entry, as in an OCI layer), or the
//! merged file system of a chain of layers, computed the way overlayfs
//! computes it: the topmost layer holding a name wins, a whiteout hides the
//! name below, a directory merges with the directories of the same name
//! below until one is opaque or a layer holds a non-directory there.
//!
//! Entries are written in name order with the layers' owners, modes, times
//! and kept extended attributes, so an export is reproducible.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, readlinkat};
use nix::sys::stat::{FileStat, SFlag, fstat, fstatat};

use super::compress::{Compression, Encoder};
use super::copy::{OPAQUE, is_whiteout, kind};
use super::error::{Result, StorageError};
use super::extract::xattr_allowed;
use super::id::HashingWriter;
use super::sys;

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    pub entries: u64,
    /// Bytes of file content.
    pub size: u64,
    /// Bytes of the uncompressed tar stream and its sha256 (hex): the
    /// diff_id when the export is one layer.
    pub tar_bytes: u64,
    pub diff_id: String,
}

struct Packer<'p, W: Write> {
    tar: tar::Builder<W>,
    layer_only: bool,
    roots: Vec<PathBuf>,
    links: HashMap<(u64, u64), PathBuf>,
    stats: PackStats,
    reported: u64,
    progress: &'p mut dyn FnMut(u64),
}

fn is_opaque(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<bool, Errno> {
    Ok(sys::lgetxattr(&sys::proc_path(dir, name), OsStr::new(OPAQUE))?.is_some_and(|v| v == b"y"))
}

fn header(st: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// A tar path for `rel` (a directory gets a trailing `/`).
fn tar_path(rel: &Path, dir: bool) -> PathBuf {
    if dir {
        let mut s = rel.as_os_str().to_owned();
        s.push("/");
        PathBuf::from(s)
    } else {
        rel.to_owned()
    }
}

impl<W: Write> Packer<'_, W> {
    fn io_err(&self, rel: &Path, e: io::Error) -> StorageError {
        StorageError::io(
            self.roots.first().map(|r| r.join(rel)).unwrap_or_default(),
            e,
        )
    }

    fn errno(&self, rel: &Path, e: Errno) -> StorageError {
        self.io_err(rel, io::Error::from_raw_os_error(e as i32))
    }

    /// PAX records for the kept extended attributes of `name` in `dir`.
    fn pax(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<()> {
        let path = sys::proc_path(dir, name);
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        for key in sys::llistxattr(&path).map_err(|e| self.errno(rel, e))? {
            if xattr_allowed(key.as_bytes())
                && let Some(value) = sys::lgetxattr(&path, &key).map_err(|e| self.errno(rel, e))?
            {
                records.push((format!("SCHILY.xattr.{}", key.to_string_lossy()), value));
            }
        }
        if !records.is_empty() {
            self.tar
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.io_err(rel, e))?;
        }
        Ok(())
    }

    fn empty_file(&mut self, rel: &Path) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        self.stats.entries += 1;
        self.tar
            .append_data(&mut h, rel, io::empty())
            .map_err(|e| self.io_err(rel, e))
    }

    /// Writes the entry `name` of `dir` (found in layer `dir`) as `rel`.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        rel: &Path,
    ) -> Result<()> {
        self.stats.entries += 1;
        match kind(st) {
            SFlag::S_IFDIR => {
                self.pax(dir, name, rel)?;
                let mut h = header(st, tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, tar_path(rel, true), io::empty())
                    .map_err(|e| self.io_err(rel, e))?;
            }
            SFlag::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1
                    && let Some(first) = self.links.get(&key).cloned()
                {
                    let mut h = header(st, tar::EntryType::Link);
                    self.tar
                        .append_link(&mut h, rel, &first)
                        .map_err(|e| self.io_err(rel, e))?;
                    return Ok(());
                }
                self.pax(dir, name, rel)?;
                let file = sys::open_file_at(dir, name).map_err(|e| self.errno(rel, e))?;
                let size = st.st_size.max(0) as u64;
                let mut h = header(st, tar::EntryType::Regular);
                h.set_size(size);
                let mut data = file.take(size);
                self.tar
                    .append_data(&mut h, rel, &mut data)
                    .map_err(|e| self.io_err(rel, e))?;
                if data.limit() != 0 {
                    return Err(self.io_err(
                        rel,
                        io::Error::other("the file shrank while it was exported"),
                    ));
                }
                self.stats.size += size;
                if st.st_nlink > 1 {
                    self.links.insert(key, rel.to_owned());
                }
                if self.stats.size - self.reported >= super::store::PROGRESS_STEP {
                    self.reported = self.stats.size;
                    (self.progress)(self.stats.size);
                }
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(dir, name).map_err(|e| self.errno(rel, e))?;
                let mut h = header(st, tar::EntryType::Symlink);
                self.tar
                    .append_link(&mut h, rel, Path::new(&target))
                    .map_err(|e| self.io_err(rel, e))?;
            }
            SFlag::S_IFIFO => {
                let mut h = header(st, tar::EntryType::Fifo);
                self.tar
                    .append_data(&mut h, rel, io::empty())
                    .map_err(|e| self.io_err(rel, e))?;
            }
            _ => {
                // Device nodes never enter the store (import refuses them,
                // commit leaves them out); whiteouts are handled by the
                // caller.
                self.stats.entries -= 1;
            }
        }
        Ok(())
    }

    /// Writes the directory `rel`, present in `dirs` (top first, already
    /// cut below an opaque one).
    fn walk(&mut self, dirs: &[OwnedFd], rel: &Path) -> Result<()> {
        let mut names = BTreeSet::<OsString>::new();
        for dir in dirs {
            for (name, _) in sys::read_dir_fd(dir.as_fd()).map_err(|e| self.io_err(rel, e))? {
                names.insert(name);
            }
        }
        for name in names {
            let path = rel.join(&name);
            let mut found = None;
            for (i, dir) in dirs.iter().enumerate() {
                match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        found = Some((i, st));
                        break;
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(self.errno(&path, e)),
                }
            }
            let Some((top, st)) = found else { continue };
            let dir = dirs[top].as_fd();
            if is_whiteout(&st) {
                if self.layer_only {
                    let mut wh = OsString::from(".wh.");
                    wh.push(&name);
                    self.empty_file(&rel.join(wh))?;
                }
                continue;
            }
            self.entry(dir, &name, &st, &path)?;
            if kind(&st) != SFlag::S_IFDIR {
                continue;
            }
            let opaque = is_opaque(dir, &name).map_err(|e| self.errno(&path, e))?;
            if self.layer_only && opaque {
                self.empty_file(&path.join(".wh..wh..opq"))?;
            }
            let mut sub = vec![sys::open_dir_at(dir, &name).map_err(|e| self.errno(&path, e))?];
            if !opaque {
                for lower in &dirs[top + 1..] {
                    match fstatat(
                        lower.as_fd(),
                        name.as_os_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    ) {
                        Ok(st) if kind(&st) == SFlag::S_IFDIR => {
                            sub.push(
                                sys::open_dir_at(lower.as_fd(), &name)
                                    .map_err(|e| self.errno(&path, e))?,
                            );
                            if is_opaque(lower.as_fd(), &name).map_err(|e| self.errno(&path, e))? {
                                break;
                            }
                        }
                        Ok(_) => break,
                        Err(Errno::ENOENT) => {}
                        Err(e) => return Err(self.errno(&path, e)),
                    }
                }
            }
            self.walk(&sub, &path)?;
        }
        Ok(())
    }
}

/// Writes `layers` (top first; one layer when `layer_only`) as a tar
/// stream, compressed with `compression`, to `out`. `progress` gets the
/// bytes of file content written so far.
pub fn pack(
    layers: &[PathBuf],
    layer_only: bool,
    compression: Compression,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<PackStats> {
    let out_err = |e: io::Error| StorageError::io("export", e);
    let encoder = Encoder::new(out, compression).map_err(out_err)?;
    let mut tar = tar::Builder::new(HashingWriter::new(encoder));
    tar.mode(tar::HeaderMode::Complete);
    let mut roots = Vec::new();
    for layer in layers {
        let fd: OwnedFd = File::open(layer)
            .map_err(|e| StorageError::io(layer, e))?
            .into();
        roots.push(fd);
    }
    let mut packer = Packer {
        tar,
        layer_only,
        roots: layers.to_vec(),
        links: HashMap::new(),
        stats: PackStats::default(),
        reported: 0,
        progress,
    };
    if let Some(top) = roots.first() {
        let st = fstat(top.as_fd()).map_err(|e| packer.errno(Path::new(""), e))?;
        let mut h = header(&st, tar::EntryType::Directory);
        packer
            .tar
            .append_data(&mut h, "./", io::empty())
            .map_err(|e| packer.io_err(Path::new(""), e))?;
        packer.stats.entries += 1;
    }
    packer.walk(&roots, Path::new(""))?;
    (packer.progress)(packer.stats.size);
    let mut stats = packer.stats;
    let hashing = packer.tar.into_inner().map_err(out_err)?;
    let (encoder, diff_id, tar_bytes) = hashing.finish();
    let out = encoder.finish().map_err(out_err)?;
    out.flush().map_err(out_err)?;
    stats.diff_id = diff_id;
    stats.tar_bytes = tar_bytes;
    Ok(stats)
}
