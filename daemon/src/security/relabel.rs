//! Recursive relabelling of a container's own root directory (Podman's
//! `:Z`; libvirt never relabels a container's root), refusing the host's
//! system directories.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::SecurityError;

/// Directories that are refused together with everything below them.
const SYSTEM_TREES: [&str; 8] = [
    "/usr", "/etc", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys",
];
/// Directories refused themselves; container roots may live below them.
const SYSTEM_DIRS: [&str; 5] = ["/var", "/home", "/root", "/run", "/srv"];

/// Why `path` (absolute, symlinks resolved) must not be relabelled.
pub fn protected_reason(path: &Path) -> Option<&'static str> {
    if path == Path::new("/") {
        return Some("it is the host's root directory");
    }
    if SYSTEM_DIRS.iter().any(|d| path == Path::new(d)) {
        return Some("it is a host system directory");
    }
    let first = path.components().find_map(|c| match c {
        Component::Normal(name) => Some(name.to_string_lossy()),
        _ => None,
    })?;
    let top = Path::new("/").join(first.as_ref());
    if SYSTEM_TREES.iter().any(|d| top == Path::new(d)) || first.starts_with("lib") {
        return Some("it is in a host system directory");
    }
    None
}

/// The directory to relabel, symlinks resolved; an error when it is the
/// host's root, a system directory, or missing.
pub fn check_root(domain: &str, root: &Path) -> Result<PathBuf, SecurityError> {
    let resolved = root
        .canonicalize()
        .map_err(|source| SecurityError::RelabelRead {
            domain: domain.to_owned(),
            path: root.to_owned(),
            source,
        })?;
    match protected_reason(&resolved) {
        Some(why) => Err(SecurityError::RelabelRefused {
            domain: domain.to_owned(),
            path: resolved,
            why,
        }),
        None => Ok(resolved),
    }
}

/// A tree to give one label before an instance starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelabelJob {
    pub root: PathBuf,
    pub label: String,
    /// Label it once: an image layer never changes, so when the directory
    /// holding it has the label (set after the tree) it is skipped.
    pub once: bool,
}

/// Runs `jobs` for `domain` with `set` (the security driver's labeler);
/// `get` reads a file's current label (for the `once` jobs). Returns how
/// many files were labelled.
pub fn run_jobs(
    domain: &str,
    jobs: &[RelabelJob],
    set: &mut dyn FnMut(&Path, &str) -> std::io::Result<()>,
    get: &dyn Fn(&Path) -> Option<String>,
) -> Result<u64, SecurityError> {
    let mut count = 0;
    for job in jobs {
        // The directory holding a layer says it is done: its label is set
        // after the whole tree.
        let done = job.once.then(|| job.root.parent()).flatten();
        if let Some(done) = done
            && get(done).as_deref() == Some(job.label.as_str())
        {
            continue;
        }
        count += relabel_tree(domain, &job.root, &job.label, set)?;
        if let Some(done) = done {
            set(done, &job.label).map_err(|source| SecurityError::RelabelWrite {
                domain: domain.to_owned(),
                path: done.to_owned(),
                source,
            })?;
        }
    }
    Ok(count)
}

/// Sets `label` on `root` and everything below it on the same filesystem,
/// symlinks themselves but never what they point to. `set` applies one
/// label (`lsetxattr` of `security.selinux` on a real host). Returns how
/// many files were labelled.
pub fn relabel_tree(
    domain: &str,
    root: &Path,
    label: &str,
    set: &mut dyn FnMut(&Path, &str) -> std::io::Result<()>,
) -> Result<u64, SecurityError> {
    let root = check_root(domain, root)?;
    let read_err = |path: &Path, source| SecurityError::RelabelRead {
        domain: domain.to_owned(),
        path: path.to_owned(),
        source,
    };
    let device = std::fs::symlink_metadata(&root)
        .map_err(|e| read_err(&root, e))?
        .dev();
    let mut count = 0;
    let mut todo = vec![root];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| read_err(&path, e))?;
        if meta.dev() != device {
            // A mount point: another filesystem, not the container's tree.
            continue;
        }
        set(&path, label).map_err(|source| SecurityError::RelabelWrite {
            domain: domain.to_owned(),
            path: path.clone(),
            source,
        })?;
        count += 1;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| read_err(&path, e))? {
                todo.push(entry.map_err(|e| read_err(&path, e))?.path());
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn once_jobs_are_skipped_when_their_directory_is_labelled() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer").join("fs");
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(&upper).unwrap();
        let jobs = [
            RelabelJob {
                root: layer.clone(),
                label: "content".into(),
                once: true,
            },
            RelabelJob {
                root: upper.clone(),
                label: "own".into(),
                once: false,
            },
        ];
        let labels = std::cell::RefCell::new(BTreeMap::<PathBuf, String>::new());
        let get = |p: &Path| labels.borrow().get(p).cloned();
        let mut set = |p: &Path, l: &str| {
            labels.borrow_mut().insert(p.to_owned(), l.to_owned());
            Ok(())
        };
        // layer/fs, layer/fs/etc, upper; then the layer's directory.
        assert_eq!(run_jobs("web", &jobs, &mut set, &get).unwrap(), 3);
        assert_eq!(get(&dir.path().join("layer")).as_deref(), Some("content"));
        // Again: the layer is done, the container's own tree is not.
        assert_eq!(run_jobs("web", &jobs, &mut set, &get).unwrap(), 1);
    }

    #[test]
    fn system_directories_are_refused() {
        for path in [
            "/",
            "/usr",
            "/usr/lib/x",
            "/etc",
            "/etc/ssh",
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
            "/lib/modules",
            "/libx32",
            "/boot",
            "/dev",
            "/dev/shm",
            "/proc",
            "/proc/1",
            "/sys",
            "/var",
            "/home",
            "/root",
            "/run",
            "/srv",
        ] {
            assert!(protected_reason(Path::new(path)).is_some(), "{path}");
        }
        for path in [
            "/var/lib/lxvirt/web",
            "/home/alice/rootfs",
            "/root/containers/web",
            "/srv/web",
            "/tmp/x",
            "/opt/rootfs",
            "/run/lxvirt/web.root",
        ] {
            assert_eq!(protected_reason(Path::new(path)), None, "{path}");
        }
    }

    #[test]
    fn refusal_follows_symlinks_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("rootfs");
        std::os::unix::fs::symlink("/usr", &link).unwrap();
        let err = check_root("web", &link).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("'web'") && message.contains("/usr"),
            "{message}"
        );
        assert!(message.contains("relabel='no'"), "{message}");
        let mut calls = 0;
        assert!(
            relabel_tree("web", Path::new("/"), "u:r:t:s0", &mut |_, _| {
                calls += 1;
                Ok(())
            })
            .is_err()
        );
        assert_eq!(calls, 0);
        assert!(check_root("web", &dir.path().join("missing")).is_err());
    }

    #[test]
    fn labels_the_whole_tree_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/deep")).unwrap();
        std::fs::write(root.join("etc/deep/file"), "x").unwrap();
        std::fs::write(root.join("init"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        let mut labelled = BTreeMap::new();
        let count = relabel_tree("web", &root, "u:o:t:s0:c1,c2", &mut |p, l| {
            labelled.insert(p.strip_prefix(&root).unwrap().to_owned(), l.to_owned());
            Ok(())
        })
        .unwrap();
        let names: Vec<_> = labelled.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "",
                "etc",
                "etc/deep",
                "etc/deep/file",
                "init",
                "out",
                "passwd"
            ]
        );
        assert_eq!(count, 7);
        assert!(labelled.values().all(|l| l == "u:o:t:s0:c1,c2"));
    }

    #[test]
    fn write_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let err = relabel_tree("web", dir.path(), "u:o:t:s0", &mut |p, _| {
            if p.ends_with("f") {
                Err(std::io::Error::from_raw_os_error(libc::EPERM))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("/f"), "{err}");
    }

    /// With the real `lsetxattr`, where the filesystem keeps security
    /// xattrs without an active LSM (tmpfs, ext4 as root).
    #[test]
    fn real_xattrs_when_the_filesystem_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("d/link")).unwrap();
        let label = "system_u:object_r:svirt_sandbox_file_t:s0:c1,c2";
        match relabel_tree(
            "web",
            dir.path(),
            label,
            &mut crate::sys::linux::set_file_label,
        ) {
            Ok(count) => {
                assert_eq!(count, 3);
                let got = crate::sys::linux::file_label(&dir.path().join("d")).unwrap();
                assert_eq!(got, label);
                // The link itself, not /etc/hostname.
                assert_eq!(
                    crate::sys::linux::file_label(&dir.path().join("d/link")).unwrap(),
                    label
                );
                assert_ne!(
                    crate::sys::linux::file_label(Path::new("/etc/hostname"))
                        .ok()
                        .as_deref(),
                    Some(label)
                );
            }
            Err(err) => eprintln!("skipped: this filesystem keeps no security xattrs: {err}"),
        }
    }
}
