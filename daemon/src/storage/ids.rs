//! Mapping a committed layer's owners back from a container's host ids.
//!
//! A container with an allocated id range writes its overlay writable
//! layer in its host ids (root inside is host id `base`); an image layer
//! holds ids as they are inside (root is 0), so a commit maps every owner
//! in `base..base + count` back to `0..count`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::error::{Result, StorageError};

/// The host ids a writable layer's files are stored in: root inside is
/// host id `base`, `count` ids in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub base: u32,
    pub count: u32,
}

impl IdShift {
    /// The id inside for host id `id`, if the range holds it.
    fn back(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.base)?;
        (offset < self.count).then_some(offset)
    }
}

/// Maps the owners of everything under `dir` (itself included, symlinks
/// not followed) back from `shift`; returns how many entries changed.
/// chown clears set-user-ID and set-group-ID bits, so they are put back.
pub fn unshift_tree(dir: &Path, shift: IdShift) -> Result<u64> {
    let mut changed = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| StorageError::io(&path, e))?;
        let (uid, gid) = (shift.back(meta.uid()), shift.back(meta.gid()));
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid).map_err(|e| StorageError::io(&path, e))?;
            let mode = meta.mode();
            if meta.file_type().is_file() && mode & 0o6000 != 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| StorageError::io(&path, e))?;
            }
            changed += 1;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| StorageError::io(&path, e))? {
                pending.push(entry.map_err(|e| StorageError::io(&path, e))?.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn owners_in_the_range_go_back_the_rest_stay() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let shift = IdShift {
            base: 1_000_000,
            count: 65536,
        };
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/file"), "x").unwrap();
        fs::write(root.join("setuid"), "x").unwrap();
        fs::write(root.join("foreign"), "x").unwrap();
        symlink("file", root.join("etc/link")).unwrap();
        for (path, id) in [
            ("", 1_000_000),
            ("etc", 1_000_000),
            ("etc/file", 1_001_000),
            ("etc/link", 1_000_033),
            ("setuid", 1_000_000),
            ("foreign", 5),
        ] {
            std::os::unix::fs::lchown(root.join(path), Some(id), Some(id)).unwrap();
        }
        fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(unshift_tree(root, shift).unwrap(), 5);
        let owner = |p: &str| {
            let m = fs::symlink_metadata(root.join(p)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(""), (0, 0));
        assert_eq!(owner("etc/file"), (1000, 1000));
        assert_eq!(owner("etc/link"), (33, 33));
        assert_eq!(owner("foreign"), (5, 5), "ids outside the range stay");
        let mode = fs::metadata(root.join("setuid")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755, "the set-user-ID bit is kept");
        // Nothing left to map: a second pass changes nothing.
        assert_eq!(unshift_tree(root, shift).unwrap(), 0);
    }
}
