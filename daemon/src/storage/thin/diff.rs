//! A container's changes against its image, as an overlay-format layer:
//! the two trees are a thin volume and its snapshot, so an entry the
//! container did not touch has the same inode number and the same change
//! time (`ctime`, which no process can set) in both. Anything else is a
//! change: a new name is copied, a changed file is copied whole, a name
//! gone is a whiteout. Directories are walked on both sides (a change deep
//! below leaves its ancestors' times alone); one whose own metadata is
//! unchanged and that holds no change is left out.
//!
//! Both trees are container-written: walked with directory fds and `*at`
//! calls, following nothing (the copy is [`Copier`]'s).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::super::copy::{Copier, CopyStats, Target, kind};
use super::super::error::{Result, StorageError};
use super::super::sys;

/// A directory's own metadata is unchanged (its entries are compared one
/// by one).
fn same_dir(a: &FileStat, b: &FileStat) -> bool {
    a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
        && a.st_mode == b.st_mode
        && a.st_uid == b.st_uid
        && a.st_gid == b.st_gid
}

/// A non-directory is untouched since the snapshot: same inode, and no
/// change since (any write, chmod, chown or attribute change moves ctime).
fn same(a: &FileStat, b: &FileStat) -> bool {
    same_dir(a, b)
        && a.st_ino == b.st_ino
        && a.st_ctime == b.st_ctime
        && a.st_ctime_nsec == b.st_ctime_nsec
        && a.st_size == b.st_size
}

struct Differ<'c, 'p> {
    new_root: &'c Path,
    copier: Copier<'p>,
}

impl Differ<'_, '_> {
    fn err(&self, rel: &Path, errno: Errno) -> StorageError {
        StorageError::errno(self.new_root.join(rel), errno)
    }

    fn names(&self, dir: &OwnedFd, rel: &Path) -> Result<BTreeSet<OsString>> {
        Ok(sys::read_dir_fd(dir.as_fd())
            .map_err(|e| StorageError::io(self.new_root.join(rel), e))?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Writes the changes of directory `new` against `old` into `dst`;
    /// returns whether there were any.
    fn dir(&mut self, new: &OwnedFd, old: &OwnedFd, dst: &OwnedFd, rel: &Path) -> Result<bool> {
        let new_names = self.names(new, rel)?;
        let old_names = self.names(old, rel)?;
        let mut changed = false;
        for gone in old_names.difference(&new_names) {
            self.copier.whiteout(dst.as_fd(), gone, rel)?;
            changed = true;
        }
        for name in &new_names {
            let path = rel.join(name);
            if !old_names.contains(name) {
                self.copier.copy_entry(new, dst, name, rel)?;
                changed = true;
                continue;
            }
            let st_new = fstatat(new.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.err(&path, e))?;
            let st_old = fstatat(old.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.err(&path, e))?;
            let both_dirs = kind(&st_new) == SFlag::S_IFDIR && kind(&st_old) == SFlag::S_IFDIR;
            if both_dirs {
                mkdirat(
                    dst.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(|e| self.err(&path, e))?;
                let n = sys::open_dir_at(new.as_fd(), name).map_err(|e| self.err(&path, e))?;
                let o = sys::open_dir_at(old.as_fd(), name).map_err(|e| self.err(&path, e))?;
                let d = sys::open_dir_at(dst.as_fd(), name).map_err(|e| self.err(&path, e))?;
                let below = self.dir(&n, &o, &d, &path)?;
                if below || !same_dir(&st_new, &st_old) {
                    self.copier
                        .copy_dir_meta(new.as_fd(), name, d.as_fd(), &st_new, rel)?;
                    changed = true;
                } else {
                    unlinkat(dst.as_fd(), name.as_os_str(), UnlinkatFlags::RemoveDir)
                        .map_err(|e| self.err(&path, e))?;
                }
            } else if !same(&st_new, &st_old) {
                // A changed file, or another kind of entry: copied whole
                // (a directory over a non-directory hides it in overlay).
                self.copier.copy_entry(new, dst, name, rel)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// Writes the changes of the tree `new` against `old` into the new
/// directory `dest`, in overlay format.
pub fn diff(
    new: &Path,
    old: &Path,
    dest: &Path,
    owners: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyStats> {
    let open = |p: &Path| -> Result<OwnedFd> {
        Ok(File::open(p).map_err(|e| StorageError::io(p, e))?.into())
    };
    let (new_fd, old_fd) = (open(new)?, open(old)?);
    std::fs::create_dir(dest).map_err(|e| StorageError::io(dest, e))?;
    let dst_fd = open(dest)?;
    let root_dst = dst_fd.try_clone().map_err(|e| StorageError::io(dest, e))?;
    let mut differ = Differ {
        new_root: new,
        copier: Copier::new(new, root_dst, owners, Target::Layer, progress),
    };
    differ.dir(&new_fd, &old_fd, &dst_fd, Path::new(""))?;
    differ.copier.finish_root(new_fd.as_fd())?;
    Ok(differ.copier.into_stats())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::copy::is_whiteout;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A copy that keeps inode numbers and change times is what a thin
    /// snapshot is; here the "snapshot" is the same tree changed in place,
    /// compared with a copy taken before (hard links keep the inodes).
    #[test]
    fn changes_against_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        fs::create_dir_all(live.join("etc/sub")).unwrap();
        fs::create_dir_all(live.join("keep/deep")).unwrap();
        fs::create_dir_all(live.join("gone-dir/x")).unwrap();
        fs::write(live.join("etc/passwd"), "root\n").unwrap();
        fs::write(live.join("etc/sub/same"), "same\n").unwrap();
        fs::write(live.join("keep/deep/file"), "x\n").unwrap();
        fs::write(live.join("gone"), "bye\n").unwrap();
        fs::write(live.join("touched"), "m\n").unwrap();
        // The "old" tree shares every file's inode with the live one, as a
        // snapshot does, until the live one changes; directories get the
        // live ones' times.
        let old = dir.path().join("old");
        link_tree(&live, &old);
        // A file the container rewrote in place: another inode.
        fs::remove_file(old.join("touched")).unwrap();
        fs::write(old.join("touched"), "m\n").unwrap();

        fs::remove_file(live.join("gone")).unwrap();
        fs::remove_dir_all(live.join("gone-dir")).unwrap();
        fs::remove_file(live.join("etc/passwd")).unwrap();
        fs::write(live.join("etc/passwd"), "root\nweb\n").unwrap();
        fs::write(live.join("new-file"), "hello\n").unwrap();
        fs::set_permissions(live.join("touched"), fs::Permissions::from_mode(0o600)).unwrap();

        let out = dir.path().join("out");
        let stats = diff(&live, &old, &out, false, &mut |_| {}).unwrap();
        let mut names: Vec<String> = walk(&out);
        names.sort();
        assert_eq!(
            names,
            [
                "etc",
                "etc/passwd",
                "gone",
                "gone-dir",
                "new-file",
                "touched"
            ],
            "{stats:?}"
        );
        assert_eq!(
            fs::read_to_string(out.join("etc/passwd")).unwrap(),
            "root\nweb\n"
        );
        let st = nix::sys::stat::lstat(&out.join("gone")).unwrap();
        assert!(is_whiteout(&st));
        assert_eq!(stats.whiteouts, 2);
    }

    fn link_tree(from: &Path, to: &Path) {
        fs::create_dir(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                link_tree(&entry.path(), &dest);
            } else {
                fs::hard_link(entry.path(), dest).unwrap();
            }
        }
        let st = nix::sys::stat::stat(from).unwrap();
        let (atime, mtime) = (
            nix::sys::time::TimeSpec::new(st.st_atime, st.st_atime_nsec),
            nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        );
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            to,
            &atime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    go(root, &path, out);
                }
            }
        }
        go(root, root, &mut out);
        out
    }
}
