//! Errors of the cgroup layer.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong creating, driving or removing a container's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "{element} cannot be removed from a running domain's cgroup; set a value instead, or change the definition (--config) and restart it"
    )]
    CannotRemove { element: &'static str },
    #[error("this host has no cgroup hierarchy mounted; mount cgroup2 on /sys/fs/cgroup")]
    NoHierarchy,
    #[error(
        "invalid cgroup path '{}': it must name a cgroup below the hierarchy root, without '..'",
        path.display()
    )]
    InvalidPath { path: PathBuf },
    #[error("cannot apply {element}: {reason}")]
    InvalidSpec {
        element: &'static str,
        reason: String,
    },
    /// The host lacks the controller or the interface file for a limit.
    #[error("cannot apply {element}: {reason}")]
    Unsupported {
        element: &'static str,
        reason: String,
    },
    #[error(
        "cgroup {} already exists; a container of that name may still run, or remove the stale cgroup",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error("cannot create cgroup {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write '{value}' to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    /// The kernel refused a limit's value (the file exists).
    #[error("cannot apply {element}: writing '{value}' to {} failed{hint}", path.display())]
    Refused {
        element: &'static str,
        path: PathBuf,
        value: String,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move process {pid} into {}", path.display())]
    AddProcess {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot hand {} to the container's root", path.display())]
    Chown {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "this host has no freezer controller; mount the v1 freezer hierarchy or use cgroup v2 (linux 5.2 or later)"
    )]
    NoFreezer,
    #[error(
        "cgroup {} did not freeze within {} ms and was thawed again; retry, or look for tasks stuck in the kernel (D state)",
        path.display(),
        timeout.as_millis()
    )]
    FreezeTimeout { path: PathBuf, timeout: Duration },
    #[error("cannot kill process {pid}")]
    Kill {
        pid: i32,
        #[source]
        source: nix::errno::Errno,
    },
    /// cgroup2: the device program could not be loaded or attached.
    #[error("cannot enforce the device allow-list on cgroup {}: {hint}", path.display())]
    DeviceProgram {
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
        #[source]
        source: super::BpfError,
    },
    #[error("cgroup {} still has processes; kill them and retry", path.display())]
    Busy { path: PathBuf },
    #[error(
        "cannot move the container's processes into cgroup {}: they fork faster than \
         they can be moved; retry",
        path.display()
    )]
    MoveRacing { path: PathBuf },
    #[error(
        "{} is not a retired memory cgroup (a v1 memory cgroup named .lxvirt-retired.*); \
         it is left alone",
        path.display()
    )]
    NotRetired { path: PathBuf },
    #[error("cannot remove cgroup {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
