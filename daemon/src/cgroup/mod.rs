//! cgroups for containers: the project's own small layer over cgroup v1,
//! v2 and the hybrid layout (v1 controllers plus a cgroup2 mount).
//!
//! [`Hierarchies`] says what the host has mounted; [`Cgroups::create`]
//! makes a container's cgroup in every hierarchy and applies a
//! [`CgroupSpec`] to whichever version handles each controller;
//! [`ContainerCgroup`] then moves processes in, freezes, kills, reports
//! and removes. Synchronous `std::fs` only: the single-threaded
//! per-container monitor calls this without an async runtime.
//!
//! The device allow-list is enforced by the v1 devices controller where a
//! v1 hierarchy has it, else by an eBPF program (`BPF_CGROUP_DEVICE`)
//! attached to the container's cgroup2 directory ([`bpf_devices`]).

mod bpf;
pub mod bpf_devices;
mod container;
pub mod domain;
pub mod dynmods;
mod error;
mod fs;
mod hierarchy;
mod limits;
pub mod retired;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bpf::BpfError;
pub use container::{CgroupStats, ContainerCgroup, FREEZE_TIMEOUT};
pub use error::CgroupError;
pub use fs::{CgroupFs, HostFs};
pub use hierarchy::{
    Controller, ControllerSet, Hierarchies, Layout, UnifiedHierarchy, V1Hierarchy,
};
pub use limits::shares_to_weight;

/// The monitor's cgroup in a delegated subtree, beside the container's.
pub const SUPERVISOR: &str = "supervisor";

/// The container's cgroup in a delegated subtree.
pub const PAYLOAD: &str = "payload";

/// What a container's cgroup should look like; resolved by the daemon from
/// `<memory>`, `<memtune>`, `<cputune>`, `<vcpu cpuset>`, `<numatune>`,
/// `<blkiotune>`, `<resource>` and the devices the container may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// Path of the container's cgroup below each hierarchy's root, such as
    /// `machine/lxvirt-web` (partition, then `lxvirt-NAME`).
    pub path: PathBuf,
    /// Hard memory limit, bytes.
    pub memory_limit: Option<u64>,
    /// Soft limit (v1 `memory.soft_limit_in_bytes`, v2 `memory.low`), bytes.
    pub memory_soft_limit: Option<u64>,
    /// Memory plus swap, bytes (libvirt's swap_hard_limit).
    pub memory_swap_limit: Option<u64>,
    /// Relative CPU weight in v1 shares (2..262144); converted for v2.
    pub cpu_shares: Option<u64>,
    /// CFS period and quota, microseconds; quota -1 means unlimited.
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<i64>,
    /// cpuset.cpus / cpuset.mems lists, such as `0-1,3`.
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Block I/O weight (100..1000) and per-device throttles.
    pub blkio_weight: Option<u32>,
    pub blkio_devices: Vec<BlkioDeviceLimit>,
    /// Maximum number of tasks.
    pub pids_max: Option<u64>,
    /// The delegated subtree the cgroup lies in (a systemd scope with
    /// `Delegate=yes`, such as
    /// `machine.slice/machine-lxvirt\x2dweb.scope`): it exists already,
    /// and nothing above it is written (the service manager owns those
    /// levels). `None`: lxvirt owns the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated: Option<PathBuf>,
    /// Device access allow-list; everything else is denied (an empty list
    /// denies every device). Enforced by the v1 devices controller, else
    /// by a device program on cgroup2.
    pub devices: Vec<DeviceRule>,
}

/// `<blkiotune><device>`: weight and throttles of one block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioDeviceLimit {
    pub major: u32,
    pub minor: u32,
    pub weight: Option<u32>,
    pub read_bytes_sec: Option<u64>,
    pub write_bytes_sec: Option<u64>,
    pub read_iops_sec: Option<u64>,
    pub write_iops_sec: Option<u64>,
}

/// One allow rule of the devices controller (`c 1:3 rwm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// 'c', 'b' or 'a' (all).
    pub kind: char,
    /// `None` is `*`.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Some of "rwm".
    pub access: String,
}

/// One of a container's cgroup directories, in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    /// The hierarchy's mount point.
    mount: PathBuf,
    /// The container's directory in it.
    path: PathBuf,
    /// Whether this is the unified (cgroup2) hierarchy.
    v2: bool,
    /// The controllers this hierarchy handles for the container.
    handles: ControllerSet,
    /// Whether the directory is there: always for one that is not
    /// [lazy](Dir::lazy); for a lazy one, known to the start that made the
    /// cgroup (`None`: unknown, as for a cgroup opened later or pinned
    /// while it runs).
    made: Option<bool>,
}

impl Dir {
    /// A v1 hierarchy of cpuset alone: the container's directory in it is
    /// made only when the container is pinned (`<vcpu cpuset>`,
    /// `<numatune>`, at its start or live); until then its processes stay
    /// in the level above, on the CPUs and memory nodes every unpinned
    /// container shares. Making, changing or removing a cpuset cgroup
    /// costs the kernel a walk of its siblings (every running container)
    /// under the cgroup lock every start and stop takes.
    fn lazy(&self) -> bool {
        !self.v2 && self.handles == ControllerSet::only(Controller::Cpuset)
    }

    /// A v1 directory of the memory controller, which the container's end
    /// retires rather than removes (see [`retired`]).
    fn retirable(&self) -> bool {
        !self.v2 && self.handles.contains(Controller::Memory) && self.made != Some(false)
    }

    /// The level a lazy directory's processes stay in until it is made.
    fn above(&self) -> &Path {
        self.path.parent().unwrap_or(&self.mount)
    }
}

/// The host's cgroup hierarchies, and the file-system seam to drive them.
#[derive(Debug, Clone)]
pub struct Cgroups<F: CgroupFs = HostFs> {
    hierarchies: Hierarchies,
    fs: F,
}

impl Cgroups<HostFs> {
    pub fn new(hierarchies: Hierarchies) -> Cgroups<HostFs> {
        Cgroups {
            hierarchies,
            fs: HostFs,
        }
    }

    /// The calling process's hierarchies, on the real cgroup file systems.
    pub fn detect() -> Result<Cgroups<HostFs>, CgroupError> {
        Ok(Cgroups::new(Hierarchies::detect()?))
    }
}

/// v1: a new child starts with its parent's cpuset values.
const CLONE_CHILDREN: &str = "cgroup.clone_children";

/// Rounds of moving a container's processes into a cgroup made while it
/// runs before giving up on one that forks faster than they move.
const MOVE_ROUNDS: usize = 10;

impl<F: CgroupFs + Clone> Cgroups<F> {
    pub fn with_fs(hierarchies: Hierarchies, fs: F) -> Cgroups<F> {
        Cgroups { hierarchies, fs }
    }

    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// Creates the container's cgroup (`spec.path`, parents too) in every
    /// hierarchy and applies every limit of `spec`, the device allow-list
    /// too (on cgroup2 as an eBPF program attached to the container's
    /// directory). A limit the host cannot apply is an error (a kernel
    /// that refuses the device program too). On error nothing created is
    /// left behind. An existing cgroup at `spec.path` is an error
    /// ([`CgroupError::Exists`]): remove a stale one with
    /// [`Cgroups::open`] and [`ContainerCgroup::remove`] first.
    pub fn create(&self, spec: &CgroupSpec) -> Result<ContainerCgroup<F>, CgroupError> {
        let relative = relative_path(&spec.path)?;
        let mut dirs = self.dirs(&relative);
        if dirs.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let applied = limits::plan(spec, &dirs)?;
        for (i, dir) in dirs.iter_mut().enumerate() {
            if dir.lazy() {
                dir.made = Some(applied.writes.iter().any(|w| w.dir == i));
            }
        }
        let mut created = Vec::new();
        let built = self.build(spec, &relative, &dirs, &applied, &mut created);
        if let Err(e) = built {
            // Deepest first; a parent another container uses meanwhile
            // stays (EBUSY), which is right.
            for path in created.iter().rev() {
                let _ = self.fs.rmdir(path);
            }
            return Err(e);
        }
        Ok(ContainerCgroup::new(relative, dirs, true, self.fs.clone()))
    }

    /// Moves process `pid` (0: the calling one) into `SUPERVISOR` below
    /// the delegated subtree `delegated` (cgroup2), made if needed: a
    /// cgroup2 directory that enables controllers for its children may
    /// hold no process itself, and the monitor, which the service manager
    /// put at the top of the scope, stays apart from the container it
    /// supervises.
    pub fn enter_supervisor(&self, delegated: &Path, pid: u32) -> Result<(), CgroupError> {
        let relative = relative_path(delegated)?;
        let Some(unified) = &self.hierarchies.unified else {
            return Err(CgroupError::NoHierarchy);
        };
        let path = unified.mount.join(relative).join(SUPERVISOR);
        match self.fs.mkdir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path, source }),
        }
        let procs = path.join("cgroup.procs");
        let value = pid.to_string();
        self.fs
            .write(&procs, &value)
            .map_err(|source| CgroupError::Write {
                path: procs,
                value,
                source,
            })
    }

    /// Removes the empty `SUPERVISOR` below `delegated`, if any (best
    /// effort: what is left goes with the scope).
    pub fn remove_supervisor(&self, delegated: &Path) {
        let (Ok(relative), Some(unified)) = (relative_path(delegated), &self.hierarchies.unified)
        else {
            return;
        };
        let _ = self
            .fs
            .rmdir(&unified.mount.join(relative).join(SUPERVISOR));
    }

    /// Changes the limits of the existing cgroup at `new.path` from those
    /// of `old` to those of `new` (a running domain's tuning): only the
    /// interface files whose value changes are written, in the order a
    /// start writes them. If the kernel refuses one, the files written
    /// before it get their old values back: nothing is half applied. A
    /// limit `old` has and `new` lacks is refused before anything is
    /// written (what "no limit" is differs per file and version). The
    /// device allow-list is not touched.
    pub fn retune(&self, old: &CgroupSpec, new: &CgroupSpec) -> Result<(), CgroupError> {
        let relative = relative_path(&new.path)?;
        let dirs = self.dirs(&relative);
        if dirs.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let before = limits::plan(old, &dirs)?.writes;
        let after = limits::plan(new, &dirs)?.writes;
        let same_file = |a: &limits::Write, b: &limits::Write| a.dir == b.dir && a.files == b.files;
        if let Some(gone) = before
            .iter()
            .find(|b| !after.iter().any(|a| same_file(a, b)))
        {
            return Err(CgroupError::CannotRemove {
                element: gone.element,
            });
        }
        // A lazy directory a new limit needs (a container pinned while it
        // runs) is made first; its processes move in once it is set.
        let mut made = Vec::new();
        for write in after.iter().filter(|w| !before.contains(w)) {
            let dir = &dirs[write.dir];
            if dir.lazy() && !made.contains(&write.dir) {
                match self.make_lazy(dir, new, &relative) {
                    Ok(true) => made.push(write.dir),
                    Ok(false) => {}
                    Err(error) => {
                        self.unmake_lazy(&dirs, &made);
                        return Err(error);
                    }
                }
            }
        }
        let mut written: Vec<&limits::Write> = Vec::new();
        for write in after.iter().filter(|w| !before.contains(w)) {
            if let Err(error) = self.apply(&dirs[write.dir], write) {
                for done in written.iter().rev() {
                    if let Some(old) = before.iter().find(|b| same_file(b, done)) {
                        let _ = self.apply(&dirs[old.dir], old);
                    }
                }
                self.unmake_lazy(&dirs, &made);
                return Err(error);
            }
            written.push(write);
        }
        for &i in &made {
            if let Err(error) = self.move_in(&relative, &dirs, &dirs[i]) {
                self.unmake_lazy(&dirs, &made);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Makes a lazy directory that is not there yet, with its parent's
    /// values but those `spec` gives (see [`Cgroups::init_cpuset`]); one
    /// made already (pinned at the start) is left as it is, and not
    /// counted as made.
    fn make_lazy(
        &self,
        dir: &Dir,
        spec: &CgroupSpec,
        relative: &Path,
    ) -> Result<bool, CgroupError> {
        match self.fs.mkdir(&dir.path) {
            Ok(()) => self.init_cpuset(spec, &dir.mount, relative).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(CgroupError::Create {
                path: dir.path.clone(),
                source,
            }),
        }
    }

    /// Undoes [`Cgroups::make_lazy`] after a failed change: the processes
    /// moved in go back to the level above, and the directory goes.
    fn unmake_lazy(&self, dirs: &[Dir], made: &[usize]) {
        for dir in made.iter().map(|&i| &dirs[i]) {
            let above = dir.above().join("cgroup.procs");
            for pid in self
                .fs
                .read(&dir.path.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = self.fs.write(&above, pid);
            }
            let _ = self.fs.rmdir(&dir.path);
        }
    }

    /// Moves the container's processes (listed by the hierarchy that
    /// tracks them) into the lazy directory just made, in rounds until a
    /// round finds every one there: a process forked meanwhile is listed
    /// by the next round.
    fn move_in(&self, relative: &Path, dirs: &[Dir], dir: &Dir) -> Result<(), CgroupError> {
        let container =
            ContainerCgroup::new(relative.to_owned(), dirs.to_vec(), true, self.fs.clone());
        let procs = dir.path.join("cgroup.procs");
        for _ in 0..MOVE_ROUNDS {
            let inside: Vec<i32> = self
                .fs
                .read(&procs)
                .map_err(|source| CgroupError::Read {
                    path: procs.clone(),
                    source,
                })?
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect();
            let outside: Vec<i32> = container
                .procs()?
                .into_iter()
                .filter(|pid| !inside.contains(pid))
                .collect();
            if outside.is_empty() {
                return Ok(());
            }
            for pid in outside {
                match self.fs.write(&procs, &pid.to_string()) {
                    Ok(()) => {}
                    // Gone meanwhile.
                    Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::AddProcess {
                            pid,
                            path: procs,
                            source,
                        });
                    }
                }
            }
        }
        Err(CgroupError::MoveRacing {
            path: dir.path.clone(),
        })
    }

    /// Whether a container's device allow-list is a cgroup2 device program
    /// here (no v1 `devices` hierarchy): a change of it needs the whole
    /// list ([`Cgroups::change_devices`]).
    pub fn devices_by_program(&self) -> bool {
        !self
            .hierarchies
            .v1
            .iter()
            .any(|h| h.known.contains(Controller::Devices))
    }

    /// Changes the device allow-list of the running container whose cgroup
    /// is at `path`: `allow` gives accesses, `deny` takes them away. On a
    /// v1 devices hierarchy these are written to `devices.allow` (the
    /// cgroup and every cgroup below it, which inherited the list when
    /// made) and `devices.deny` (which reaches below by itself). On
    /// cgroup2 the device program is made anew from `all`, the whole list
    /// after the change; without it the change is refused.
    pub fn change_devices(
        &self,
        path: &Path,
        allow: &[DeviceRule],
        deny: &[DeviceRule],
        all: Option<&[DeviceRule]>,
    ) -> Result<(), CgroupError> {
        let relative = relative_path(path)?;
        let dirs = self.dirs(&relative);
        if let Some(dir) = dirs
            .iter()
            .find(|d| !d.v2 && d.handles.contains(Controller::Devices))
        {
            let write = |dir: &Path, file: &str, rule: &DeviceRule| {
                let value = limits::device_line(rule)?;
                let path = dir.join(file);
                self.fs
                    .write(&path, &value)
                    .map_err(|source| CgroupError::Refused {
                        element: limits::element::DEVICES,
                        path,
                        value,
                        hint: "",
                        source,
                    })
            };
            for rule in deny {
                write(&dir.path, "devices.deny", rule)?;
            }
            if !allow.is_empty() {
                let mut below = vec![dir.path.clone()];
                while let Some(cgroup) = below.pop() {
                    for rule in allow {
                        write(&cgroup, "devices.allow", rule)?;
                    }
                    below.extend(self.fs.subdirs(&cgroup).unwrap_or_default());
                }
            }
            return Ok(());
        }
        let Some(dir) = dirs.iter().find(|d| d.v2) else {
            return Err(CgroupError::NoHierarchy);
        };
        let Some(all) = all else {
            return Err(CgroupError::Unsupported {
                element: limits::element::DEVICES,
                reason: "on cgroup2 the device program is made anew from the whole list, \
                         which is not known for this container (the loop devices of its \
                         file-backed filesystems); change the definition (--config) and restart it"
                    .into(),
            });
        };
        let program = bpf_devices::compile(all);
        self.fs
            .replace_device_program(&dir.path, &program)
            .map_err(|source| CgroupError::DeviceProgram {
                path: dir.path.clone(),
                hint: source.hint(),
                source,
            })
    }

    /// Removes a retired memory cgroup (see [`retired`]) and any cgroups
    /// below it; one that is gone already is removed. Only a retired name
    /// in a v1 hierarchy of the memory controller is taken.
    pub fn remove_retired(&self, path: &Path) -> Result<(), CgroupError> {
        let hierarchy = self
            .hierarchies
            .v1
            .iter()
            .find(|h| h.known.contains(Controller::Memory) && path.starts_with(&h.mount));
        let (Some(hierarchy), true) = (hierarchy, retired::is_retired(path)) else {
            return Err(CgroupError::NotRetired {
                path: path.to_owned(),
            });
        };
        let dir = Dir {
            mount: hierarchy.mount.clone(),
            path: path.to_owned(),
            v2: false,
            handles: hierarchy.known,
            made: Some(true),
        };
        let relative = path.strip_prefix(&hierarchy.mount).unwrap_or(path);
        ContainerCgroup::new(relative.to_owned(), vec![dir], true, self.fs.clone()).remove()
    }

    /// The retired memory cgroups in `partition` (relative to each
    /// hierarchy's root), left by containers that ended while no daemon
    /// removed them.
    pub fn retired_in(&self, partition: &Path) -> Vec<PathBuf> {
        let Ok(relative) = relative_path(partition) else {
            return Vec::new();
        };
        self.hierarchies
            .v1
            .iter()
            .filter(|h| h.known.contains(Controller::Memory))
            .filter_map(|h| self.fs.subdirs(&h.mount.join(&relative)).ok())
            .flatten()
            .filter(|path| retired::is_retired(path))
            .collect()
    }

    /// The existing cgroup at `path` (after a daemon restart);
    /// [`ContainerCgroup::exists`] checks it is there. No I/O, but where
    /// cgroup2 enforces the device allow-list: there the kernel is asked
    /// whether a device program is attached to the directory (a cgroup
    /// that is gone, or a failed query, counts as not enforced).
    pub fn open(&self, path: &Path) -> Result<ContainerCgroup<F>, CgroupError> {
        let relative = relative_path(path)?;
        let dirs = self.dirs(&relative);
        if dirs.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let devices_enforced = if dirs
            .iter()
            .any(|d| !d.v2 && d.handles.contains(Controller::Devices))
        {
            true
        } else {
            dirs.iter()
                .find(|d| d.v2)
                .is_some_and(|d| self.fs.has_device_program(&d.path).unwrap_or(false))
        };
        Ok(ContainerCgroup::new(
            relative,
            dirs,
            devices_enforced,
            self.fs.clone(),
        ))
    }

    /// The container's directory in each hierarchy: v1 ones with a known
    /// controller, then the unified one.
    fn dirs(&self, relative: &Path) -> Vec<Dir> {
        let mut dirs: Vec<Dir> = self
            .hierarchies
            .v1
            .iter()
            .filter(|h| !h.known.is_empty())
            .map(|h| {
                let mut dir = Dir {
                    mount: h.mount.clone(),
                    path: h.mount.join(relative),
                    v2: false,
                    handles: h.known,
                    made: Some(true),
                };
                if dir.lazy() {
                    dir.made = None;
                }
                dir
            })
            .collect();
        if let Some(unified) = &self.hierarchies.unified {
            dirs.push(Dir {
                mount: unified.mount.clone(),
                path: unified.mount.join(relative),
                v2: true,
                handles: self.hierarchies.v2_controllers(),
                made: Some(true),
            });
        }
        dirs
    }

    fn build(
        &self,
        spec: &CgroupSpec,
        relative: &Path,
        dirs: &[Dir],
        applied: &limits::Applied,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        for dir in dirs {
            if dir.made == Some(false) {
                let above = relative.parent().unwrap_or(Path::new(""));
                self.make_levels(dir, above, created, false)?;
                self.init_cpuset(spec, &dir.mount, above)?;
                continue;
            }
            self.make_levels(dir, relative, created, true)?;
            if dir.v2 {
                self.enable_controllers(dir, relative, spec.delegated.as_deref())?;
            } else if dir.handles.contains(Controller::Cpuset) {
                self.init_cpuset(spec, &dir.mount, relative)?;
            }
        }
        for write in &applied.writes {
            self.apply(&dirs[write.dir], write)?;
        }
        if let Some((dir, program)) = &applied.device_program {
            let path = &dirs[*dir].path;
            self.fs
                .attach_device_program(path, program)
                .map_err(|source| CgroupError::DeviceProgram {
                    path: path.clone(),
                    hint: source.hint(),
                    source,
                })?;
        }
        Ok(())
    }

    /// mkdir each level of `relative` below the mount, recording the new
    /// ones; the last level must be new if `leaf`.
    fn make_levels(
        &self,
        dir: &Dir,
        relative: &Path,
        created: &mut Vec<PathBuf>,
        leaf: bool,
    ) -> Result<(), CgroupError> {
        let mut path = dir.mount.clone();
        let mut levels = relative.components().peekable();
        while let Some(level) = levels.next() {
            path.push(level);
            match self.fs.mkdir(&path) {
                Ok(()) => created.push(path.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if leaf && levels.peek().is_none() {
                        return Err(CgroupError::Exists { path });
                    }
                }
                Err(source) => return Err(CgroupError::Create { path, source }),
            }
        }
        Ok(())
    }

    /// A new v1 cpuset cgroup has empty `cpuset.cpus` and `cpuset.mems`
    /// and takes no task until both are set. Writing them costs the kernel
    /// a walk of every sibling and a rebuild of the scheduling domains,
    /// which grows with the containers running; so the levels lxvirt makes
    /// above the leaf get `cgroup.clone_children`, and the kernel copies
    /// the values into each new child itself: a start reads them and
    /// writes nothing. A level still empty (a level another start made a
    /// moment ago and has not filled yet, when the first containers of a
    /// fresh partition start together; a partition made before this) gets
    /// its parent's values, top down: two starts write the same values,
    /// so their race is harmless. The spec's own values go to the leaf
    /// later. The hierarchy's root is the host's: left as it is.
    fn init_cpuset(
        &self,
        spec: &CgroupSpec,
        mount: &Path,
        relative: &Path,
    ) -> Result<(), CgroupError> {
        let mut levels: Vec<PathBuf> = relative
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .map(|a| mount.join(a))
            .collect();
        levels.reverse();
        let leaf = levels.len().saturating_sub(1);
        let read = |path: PathBuf| {
            self.fs
                .read(&path)
                .map_err(|source| CgroupError::Read { path, source })
        };
        let mut above = mount.to_path_buf();
        for (i, level) in levels.iter().enumerate() {
            for (file, from_spec) in [
                ("cpuset.cpus", spec.cpuset_cpus.is_some()),
                ("cpuset.mems", spec.cpuset_mems.is_some()),
            ] {
                if from_spec && i == leaf {
                    continue;
                }
                if !read(level.join(file))?.trim().is_empty() {
                    continue;
                }
                let value = read(above.join(file))?;
                let path = level.join(file);
                self.fs
                    .write(&path, value.trim())
                    .map_err(|source| CgroupError::Write {
                        path,
                        value: value.trim().to_owned(),
                        source,
                    })?;
            }
            if i != leaf
                && !self
                    .fs
                    .read(&level.join(CLONE_CHILDREN))
                    .is_ok_and(|v| v.trim() == "1")
            {
                self.set_clone_children(level);
            }
            above = level.clone();
        }
        Ok(())
    }

    /// Best effort: without it each start copies the values itself.
    fn set_clone_children(&self, dir: &Path) {
        if let Err(error) = self.fs.write(&dir.join(CLONE_CHILDREN), "1") {
            tracing::debug!(dir = %dir.display(), error = %error, "cannot set cgroup.clone_children");
        }
    }

    /// cgroup2 offers a child only the controllers its parent enables in
    /// `cgroup.subtree_control`: enable every controller cgroup2 handles
    /// from the root down to the container's parent, so the container's
    /// limits, statistics and own sub-cgroups can use them.
    fn enable_controllers(
        &self,
        dir: &Dir,
        relative: &Path,
        delegated: Option<&Path>,
    ) -> Result<(), CgroupError> {
        let mut names: Vec<&str> = dir.handles.iter().filter_map(Controller::v2_name).collect();
        names.dedup();
        if names.is_empty() {
            return Ok(());
        }
        let value = names
            .iter()
            .map(|n| format!("+{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        // The root, then each ancestor of the container's directory; in a
        // delegated subtree, its top and what lies below it only.
        let mut level = dir.mount.clone();
        let mut ancestors = relative.components();
        ancestors.next_back();
        let mut above = PathBuf::new();
        for component in std::iter::once(None).chain(ancestors.map(Some)) {
            if let Some(component) = component {
                level.push(component);
                above.push(component);
            }
            if let Some(delegated) = delegated
                && !above.starts_with(delegated)
            {
                continue;
            }
            let path = level.join("cgroup.subtree_control");
            self.fs
                .write(&path, &value)
                .map_err(|source| CgroupError::Write {
                    path,
                    value: value.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn apply(&self, dir: &Dir, write: &limits::Write) -> Result<(), CgroupError> {
        for file in write.files {
            let path = dir.path.join(file);
            match self.fs.write(&path, &write.value) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CgroupError::Refused {
                        element: write.element,
                        path,
                        value: write.value.clone(),
                        hint: write.hint,
                        source,
                    });
                }
            }
        }
        let files = write.files.join(" and ");
        let verb = if write.files.len() > 1 { "are" } else { "is" };
        Err(CgroupError::Unsupported {
            element: write.element,
            reason: format!("{files} {verb} missing{}", write.hint),
        })
    }
}

/// `path` as a relative path of normal components (`/machine/x` and
/// `machine/x` are the same cgroup); empty or `..` is refused.
fn relative_path(path: &Path) -> Result<PathBuf, CgroupError> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => relative.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath {
                    path: path.to_owned(),
                });
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath {
            path: path.to_owned(),
        });
    }
    Ok(relative)
}
