//! Which cgroup hierarchies the host has mounted, read from a mountinfo
//! text: v1 hierarchies with their controllers, and the cgroup2 (unified)
//! mount with the controllers its root offers.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::CgroupError;
use crate::sys::mountinfo::{self, MountInfo};

/// A controller this layer applies limits with or reads statistics from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Cpu,
    Cpuacct,
    Cpuset,
    Memory,
    Devices,
    Freezer,
    Blkio,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 8] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Devices,
        Controller::Freezer,
        Controller::Blkio,
        Controller::Pids,
    ];

    /// The v1 name, as in mount options and `/proc/cgroups`.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Blkio => "blkio",
            Controller::Pids => "pids",
        }
    }

    /// The cgroup2 controller doing the same job. `devices` has none (v2
    /// uses eBPF programs) and neither has `freezer` (`cgroup.freeze` is a
    /// core file of every v2 cgroup); `cpuacct`'s counters are in the core
    /// `cpu.stat`, which the `cpu` controller extends.
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Cpu | Controller::Cpuacct => Some("cpu"),
            Controller::Cpuset => Some("cpuset"),
            Controller::Memory => Some("memory"),
            Controller::Blkio => Some("io"),
            Controller::Pids => Some("pids"),
            Controller::Devices | Controller::Freezer => None,
        }
    }

    fn from_v1_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.v1_name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v1_name())
    }
}

/// A small set of [`Controller`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerSet(u16);

impl ControllerSet {
    /// The set of `c` alone.
    pub fn only(c: Controller) -> ControllerSet {
        ControllerSet(c.bit())
    }

    pub fn insert(&mut self, c: Controller) {
        self.0 |= c.bit();
    }

    pub fn contains(self, c: Controller) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Controller> {
        Controller::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl fmt::Debug for ControllerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Every v1 controller name a mount option may carry; other options
/// (`rw`, `name=systemd`, `clone_children`, ...) are not controllers.
const V1_CONTROLLER_NAMES: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Where it is mounted (below the root prefix given to detection).
    pub mount: PathBuf,
    /// Every controller bound to it, such as `["cpu", "cpuacct"]`.
    pub controllers: Vec<String>,
    /// The ones this layer knows.
    pub known: ControllerSet,
}

/// The cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnifiedHierarchy {
    pub mount: PathBuf,
    /// The root's `cgroup.controllers`: controllers not bound to v1.
    pub controllers: Vec<String>,
}

/// How the hierarchies are laid out, for capabilities and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    None,
    /// v1 hierarchies only.
    V1,
    /// v1 hierarchies plus a cgroup2 mount (which may have no controllers).
    Hybrid,
    /// cgroup2 only.
    V2,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::None => "none",
            Layout::V1 => "v1",
            Layout::Hybrid => "hybrid",
            Layout::V2 => "v2",
        }
    }
}

/// The cgroup hierarchies of a host.
///
/// A controller is handled by v1 if a v1 hierarchy has it, else by v2 if
/// the unified root lists it in `cgroup.controllers`. A container's cgroup
/// is created in every v1 hierarchy that has a controller and, whenever a
/// cgroup2 mount exists, in the unified hierarchy too, even a hybrid one
/// without controllers: that gives process tracking that includes
/// descendants (`cgroup.events` `populated`), `cgroup.kill` (5.14) and
/// `cgroup.freeze` (5.2) at the cost of one directory. Named v1
/// hierarchies without controllers (`name=systemd`) are left alone: they
/// are bookkeeping of an init system this daemon does not run under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub v1: Vec<V1Hierarchy>,
    pub unified: Option<UnifiedHierarchy>,
}

impl Hierarchies {
    /// The hierarchies of the calling process (`/proc/self/mountinfo`).
    pub fn detect() -> Result<Hierarchies, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let mountinfo = fs::read(path).map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Hierarchies::from_mountinfo(mountinfo, Path::new("/")))
    }

    /// The hierarchies a mountinfo text describes, with every mount point
    /// placed below `root` (`/` on a real host, a temporary directory in
    /// tests); reads the unified root's `cgroup.controllers` (a missing or
    /// unreadable file means no controllers).
    pub fn from_mountinfo(mountinfo: impl AsRef<[u8]>, root: &Path) -> Hierarchies {
        let mut hierarchies = Hierarchies::parse(mountinfo, root);
        if let Some(unified) = &mut hierarchies.unified {
            unified.controllers = fs::read_to_string(unified.mount.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
        }
        hierarchies
    }

    /// Like [`Hierarchies::from_mountinfo`] without reading any file: the
    /// unified hierarchy, if any, has no controllers.
    pub fn parse(mountinfo: impl AsRef<[u8]>, root: &Path) -> Hierarchies {
        let mut hierarchies = Hierarchies::default();
        for mount in mountinfo::parse(mountinfo).iter().filter(is_cgroup) {
            let place = under_root(root, &mount.mount_point);
            match mount.fstype.as_str() {
                "cgroup" => {
                    let controllers: Vec<String> = mount
                        .super_options()
                        .filter(|o| V1_CONTROLLER_NAMES.contains(o))
                        .map(str::to_owned)
                        .collect();
                    // Named hierarchies carry no controller; a hierarchy
                    // mounted twice (bind mounts) is used at its first place.
                    if controllers.is_empty()
                        || hierarchies.v1.iter().any(|h| h.controllers == controllers)
                    {
                        continue;
                    }
                    let mut known = ControllerSet::default();
                    for c in controllers
                        .iter()
                        .filter_map(|c| Controller::from_v1_name(c))
                    {
                        known.insert(c);
                    }
                    hierarchies.v1.push(V1Hierarchy {
                        mount: place,
                        controllers,
                        known,
                    });
                }
                _ if hierarchies.unified.is_none() => {
                    hierarchies.unified = Some(UnifiedHierarchy {
                        mount: place,
                        controllers: Vec::new(),
                    });
                }
                _ => {}
            }
        }
        hierarchies
    }

    pub fn layout(&self) -> Layout {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (true, false) => Layout::None,
            (false, false) => Layout::V1,
            (false, true) => Layout::Hybrid,
            (true, true) => Layout::V2,
        }
    }

    /// The v1 hierarchy a controller is bound to.
    pub fn v1_hierarchy(&self, c: Controller) -> Option<&V1Hierarchy> {
        self.v1.iter().find(|h| h.known.contains(c))
    }

    /// Whether cgroup2 handles the controller: no v1 hierarchy has it and
    /// the unified root offers its v2 counterpart.
    pub fn handled_by_v2(&self, c: Controller) -> bool {
        if self.v1_hierarchy(c).is_some() {
            return false;
        }
        match (&self.unified, c.v2_name()) {
            (Some(unified), Some(name)) => unified.controllers.iter().any(|u| u == name),
            _ => false,
        }
    }

    /// The controllers cgroup2 handles (see [`Hierarchies::handled_by_v2`]).
    pub fn v2_controllers(&self) -> ControllerSet {
        let mut set = ControllerSet::default();
        for c in Controller::ALL {
            if self.handled_by_v2(c) {
                set.insert(c);
            }
        }
        set
    }

    /// Every v1 controller name, sorted, for capabilities.
    pub fn v1_controller_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .v1
            .iter()
            .flat_map(|h| h.controllers.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A cgroup v1 or cgroup2 mount.
fn is_cgroup(mount: &&MountInfo) -> bool {
    mount.fstype == "cgroup" || mount.fstype == "cgroup2"
}

/// `root` joined with an absolute mount point.
fn under_root(root: &Path, mount_point: &Path) -> PathBuf {
    let relative: PathBuf = mount_point
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative)
}
