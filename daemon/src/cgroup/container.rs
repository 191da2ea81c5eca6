//! One container's cgroup, across every hierarchy.

use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::fs::{CgroupFs, HostFs};
use super::hierarchy::Controller;
use super::{CgroupError, Dir};

/// How long [`ContainerCgroup::freeze`] waits by default for the kernel to
/// report the cgroup frozen before it thaws it again and fails.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// The files of a container's own cgroup handed to its root by
/// [`ContainerCgroup::chown`]: enough to move processes and create and
/// manage sub-cgroups, but not the limit files, which stay the host's.
/// In a v1 hierarchy.
const DELEGATED_FILES_V1: [&str; 2] = ["cgroup.procs", "tasks"];
/// In the unified (cgroup2) hierarchy.
const DELEGATED_FILES_V2: [&str; 3] = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// Usage figures of a container's cgroup; `None` where the host does not
/// provide a figure or it cannot be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory in use, bytes (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_bytes: Option<u64>,
    /// CPU time consumed, nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat`
    /// `usage_usec`).
    pub cpu_time_ns: Option<u64>,
    /// Tasks (`pids.current`, or the number of processes without the pids
    /// controller).
    pub pids: Option<u64>,
    /// The details the host's files have, named as `domstats` shows them:
    /// `memory.anon`, `.file`, `.shmem`, `.swap`, `.peak` (bytes);
    /// `cpu.user`, `.system`, `cpu.throttled.time` (ns) and
    /// `cpu.throttled.periods`; `block.rd.bytes`, `.wr.bytes`, `.rd.reqs`,
    /// `.wr.reqs` (summed over the devices); `pids.max`.
    pub details: Vec<(&'static str, u64)>,
}

// The details a container's statistics may have: memory by kind
// (bytes), its peak and swap use, CPU time by mode and throttling (ns),
// block I/O summed over the devices, and the task limit.

/// Nanoseconds per USER_HZ tick, the unit of v1's `cpuacct.stat`.
const NS_PER_TICK: u64 = 10_000_000;

/// `KEY VALUE` lines (memory.stat, cpu.stat, cpuacct.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// v1 `blkio.throttle.io_service*` (`MAJ:MIN Read N` lines, and `Total`):
/// the sum of `op` over the devices.
fn blkio_sum(text: &str, op: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, kind, value) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == op).then(|| value.parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// v2 `io.stat` (`MAJ:MIN rbytes=N wbytes=N rios=N wios=N …`): the sum of
/// `key` over the devices.
fn io_stat_sum(text: &str, key: &str) -> u64 {
    text.lines()
        .flat_map(str::split_whitespace)
        .filter_map(|field| {
            field
                .strip_prefix(key)?
                .strip_prefix('=')?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A container's cgroup: one directory in each hierarchy.
#[derive(Debug, Clone)]
pub struct ContainerCgroup<F: CgroupFs = HostFs> {
    relative: PathBuf,
    dirs: Vec<Dir>,
    devices_enforced: bool,
    freeze_timeout: Duration,
    fs: F,
}

impl<F: CgroupFs> ContainerCgroup<F> {
    pub(super) fn new(
        relative: PathBuf,
        dirs: Vec<Dir>,
        devices_enforced: bool,
        fs: F,
    ) -> ContainerCgroup<F> {
        ContainerCgroup {
            relative,
            dirs,
            devices_enforced,
            freeze_timeout: FREEZE_TIMEOUT,
            fs,
        }
    }

    /// Sets how long [`ContainerCgroup::freeze`] waits ([`FREEZE_TIMEOUT`]
    /// by default).
    pub fn with_freeze_timeout(mut self, timeout: Duration) -> ContainerCgroup<F> {
        self.freeze_timeout = timeout;
        self
    }

    /// The cgroup's path below each hierarchy root (`machine/lxvirt-web`).
    pub fn path(&self) -> &Path {
        &self.relative
    }

    /// The cgroup's directory in every hierarchy, absolute.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// Whether the device allow-list is enforced: by a v1 devices
    /// hierarchy, or by a device program on the cgroup2 directory. Always
    /// true for a cgroup [`super::Cgroups::create`] made (it fails
    /// otherwise); for one [`super::Cgroups::open`] found, what the kernel
    /// says.
    pub fn devices_enforced(&self) -> bool {
        self.devices_enforced
    }

    /// Whether the cgroup's directory exists (in the hierarchy that tracks
    /// processes).
    pub fn exists(&self) -> bool {
        self.tracking()
            .is_some_and(|d| self.fs.read(&d.path.join("cgroup.procs")).is_ok())
    }

    /// Moves a process (all its threads) into the cgroup, in every hierarchy
    /// (where the container's directory is not made, the level above it).
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for dir in &self.dirs {
            let mut path = self.procs_file(dir);
            let mut written = self.fs.write(&path, &value);
            if dir.made.is_none()
                && written
                    .as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            {
                path = dir.above().join("cgroup.procs");
                written = self.fs.write(&path, &value);
            }
            written.map_err(|source| CgroupError::AddProcess { pid, path, source })?;
        }
        Ok(())
    }

    /// The `cgroup.procs` file of each hierarchy a new process of the
    /// container goes into (see [`ContainerCgroup::add_process`]).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = self.procs_file(dir);
                if dir.made.is_none() && self.fs.read(&path).is_err() {
                    dir.above().join("cgroup.procs")
                } else {
                    path
                }
            })
            .collect()
    }

    /// `dir`'s `cgroup.procs`, or the level above's where the directory is
    /// known not to be made.
    fn procs_file(&self, dir: &Dir) -> PathBuf {
        match dir.made {
            Some(false) => dir.above().join("cgroup.procs"),
            _ => dir.path.join("cgroup.procs"),
        }
    }

    /// Hands the cgroup's directories, and the files needed to move
    /// processes and manage sub-cgroups, to the container's (mapped) root.
    /// A directory not made (see [`ContainerCgroup::add_process`]) is
    /// skipped: the level above is shared.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            if dir.made == Some(false) {
                continue;
            }
            match self.fs.chown(&dir.path, uid, gid) {
                Ok(()) => {}
                Err(e) if dir.made.is_none() && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CgroupError::Chown {
                        path: dir.path.clone(),
                        source,
                    });
                }
            }
            // Only the files the version has: a start makes no failing calls.
            let files: &[&str] = if dir.v2 {
                &DELEGATED_FILES_V2
            } else {
                &DELEGATED_FILES_V1
            };
            for file in files {
                let path = dir.path.join(file);
                match self.fs.chown(&path, uid, gid) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(CgroupError::Chown { path, source: e });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Freezes every process and waits until the kernel says so (at most
    /// the freeze timeout, polling with a growing pause). Uses the v1 freezer if mounted, else cgroup2's
    /// `cgroup.freeze`.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let (path, frozen): (PathBuf, fn(&str) -> bool) = match self.freezer()? {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                self.write(&state, "FROZEN")?;
                (state, |s| s.trim() == "FROZEN")
            }
            Freezer::V2(dir) => {
                self.write_freeze(dir, "1")?;
                (dir.join("cgroup.events"), |s| {
                    s.lines().any(|l| l == "frozen 1")
                })
            }
        };
        let deadline = Instant::now() + self.freeze_timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            if frozen(&self.read(&path)?) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Do not leave the container half frozen.
                self.thaw()?;
                return Err(CgroupError::FreezeTimeout {
                    path,
                    timeout: self.freeze_timeout,
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            Freezer::V1(dir) => self.write(&dir.join("freezer.state"), "THAWED"),
            Freezer::V2(dir) => self.write_freeze(dir, "0"),
        }
    }

    /// Whether the kernel reports the cgroup frozen (not merely freezing).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.freezer()? {
            Freezer::V1(dir) => Ok(self.read(&dir.join("freezer.state"))?.trim() == "FROZEN"),
            Freezer::V2(dir) => {
                let events = self.read(&dir.join("cgroup.events"))?;
                match events.lines().find_map(|l| l.strip_prefix("frozen ")) {
                    Some(value) => Ok(value == "1"),
                    // No `frozen` key: a kernel before 5.2.
                    None => Err(CgroupError::NoFreezer),
                }
            }
        }
    }

    /// The processes in the cgroup and its sub-cgroups, from the hierarchy
    /// that tracks processes (the unified one if mounted). A cgroup that is
    /// gone has none.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        if let Some(dir) = self.tracking() {
            self.collect_procs(&dir.path, &mut pids)?;
        }
        Ok(pids)
    }

    /// Whether no process is left in the cgroup or its sub-cgroups.
    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        match self.tracking() {
            Some(dir) if dir.v2 => {
                let path = dir.path.join("cgroup.events");
                match self.fs.read(&path) {
                    Ok(events) => Ok(!events.lines().any(|l| l == "populated 1")),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
                    Err(source) => Err(CgroupError::Read { path, source }),
                }
            }
            _ => Ok(self.procs()?.is_empty()),
        }
    }

    /// Sends SIGKILL to every process of the cgroup and its sub-cgroups:
    /// with cgroup2's `cgroup.kill` (5.14) where it exists, else by
    /// freezing (so nothing forks meanwhile), killing each process and
    /// thawing. Returns once the signals are sent; processes leave the
    /// cgroup as they exit (see [`ContainerCgroup::is_empty`]).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(dir) = self.dirs.iter().find(|d| d.v2) {
            let path = dir.path.join("cgroup.kill");
            match self.fs.write(&path, "1") {
                Ok(()) => {
                    // A task frozen by the v1 freezer dies only once thawed.
                    if matches!(self.freezer(), Ok(Freezer::V1(_))) {
                        self.thaw()?;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Write {
                        path,
                        value: "1".into(),
                        source,
                    });
                }
            }
        }
        // Without a freezer (or if freezing times out) kill in rounds
        // until no process is left, as forks may race the signals.
        let frozen = self.freeze().is_ok();
        let rounds = if frozen { 1 } else { 10 };
        let mut result = Ok(());
        for _ in 0..rounds {
            let pids = match self.procs() {
                Ok(pids) => pids,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                match self.fs.kill(pid) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => {
                        result = Err(CgroupError::Kill { pid, source });
                    }
                }
            }
        }
        if frozen {
            // A frozen process dies once thawed.
            self.thaw()?;
        }
        result
    }

    /// Kills every process (as [`ContainerCgroup::kill_all`]) and waits up
    /// to `timeout` for them to be gone: `Ok(false)` if some are left.
    /// SIGKILLed processes leave within milliseconds unless they sit in
    /// uninterruptible sleep.
    pub fn kill_and_wait(&self, timeout: Duration) -> Result<bool, CgroupError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_empty()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.kill_all()?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the cgroup (and any sub-cgroups the container made) from
    /// every hierarchy, deepest first; the partition above it stays.
    /// Removing a cgroup that is gone succeeds; one with processes left is
    /// [`CgroupError::Busy`].
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            self.remove_dir(dir)?;
        }
        Ok(())
    }

    /// As [`remove`](Self::remove), but a v1 memory cgroup is renamed
    /// beside itself (see [`retired`](super::retired)) instead of removed,
    /// once every other hierarchy's directory is gone (so no process is
    /// left in it); returns the new names, for
    /// [`Cgroups::remove_retired`](super::Cgroups::remove_retired) later.
    /// A rename that fails falls back to the removal.
    pub fn remove_retiring_memory(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let (memory, others): (Vec<&Dir>, Vec<&Dir>) =
            self.dirs.iter().partition(|dir| dir.retirable());
        for dir in others {
            self.remove_dir(dir)?;
        }
        let mut retired = Vec::new();
        for dir in memory {
            let to = super::retired::retired_name(&dir.path);
            match self.fs.rename(&dir.path, &to) {
                Ok(()) => retired.push(to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::debug!(dir = %dir.path.display(), %error, "cannot retire a memory cgroup; removing it now");
                    self.remove_dir(dir)?;
                }
            }
        }
        Ok(retired)
    }

    fn remove_dir(&self, dir: &Dir) -> Result<(), CgroupError> {
        if dir.made == Some(false) {
            // There only if the container was pinned while it ran: rare
            // enough to skip retiring its cpuset first.
            return self.rmdir(&dir.path);
        }
        let cpuset = !dir.v2 && dir.handles.contains(Controller::Cpuset);
        self.remove_tree(&dir.path, cpuset)
    }

    /// Memory, CPU time and task count; cheap enough for every status query.
    pub fn stats(&self) -> CgroupStats {
        let number =
            |path: PathBuf| -> Option<u64> { self.fs.read(&path).ok()?.trim().parse().ok() };
        let memory_bytes = self.handler(Controller::Memory).and_then(|d| {
            number(d.path.join(if d.v2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            }))
        });
        // cgroup2's cpu.stat is a core file: usage needs no controller.
        let cpu_time_ns = match self.handler(Controller::Cpuacct) {
            Some(d) if !d.v2 => number(d.path.join("cpuacct.usage")),
            _ => self.dirs.iter().find(|d| d.v2).and_then(|d| {
                let stat = self.fs.read(&d.path.join("cpu.stat")).ok()?;
                let usec: u64 = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse()
                    .ok()?;
                usec.checked_mul(1000)
            }),
        };
        let pids = match self.handler(Controller::Pids) {
            Some(d) => number(d.path.join("pids.current")),
            None => self.procs().ok().map(|p| p.len() as u64),
        };
        CgroupStats {
            memory_bytes,
            cpu_time_ns,
            pids,
            details: self.details(),
        }
    }

    /// What `stats` adds by name, from the files each hierarchy has.
    fn details(&self) -> Vec<(&'static str, u64)> {
        let read = |path: PathBuf| self.fs.read(&path).ok();
        let number = |path: PathBuf| -> Option<u64> { read(path)?.trim().parse().ok() };
        let mut details = Vec::new();
        let mut put = |name: &'static str, value: Option<u64>| {
            if let Some(value) = value {
                details.push((name, value));
            }
        };
        if let Some(d) = self.handler(Controller::Memory) {
            let stat = read(d.path.join("memory.stat")).unwrap_or_default();
            let key = |v1: &str, v2: &str| keyed(&stat, if d.v2 { v2 } else { v1 });
            put("memory.anon", key("total_rss", "anon"));
            put("memory.file", key("total_cache", "file"));
            put("memory.shmem", key("total_shmem", "shmem"));
            if d.v2 {
                put("memory.swap", number(d.path.join("memory.swap.current")));
                put("memory.peak", number(d.path.join("memory.peak")));
            } else {
                put("memory.swap", keyed(&stat, "total_swap"));
                put(
                    "memory.peak",
                    number(d.path.join("memory.max_usage_in_bytes")),
                );
            }
        }
        let v2 = self.dirs.iter().find(|d| d.v2);
        match (self.handler(Controller::Cpuacct), v2) {
            (Some(d), _) if !d.v2 => {
                let stat = read(d.path.join("cpuacct.stat")).unwrap_or_default();
                let ticks = |key| keyed(&stat, key).and_then(|t| t.checked_mul(NS_PER_TICK));
                put("cpu.user", ticks("user"));
                put("cpu.system", ticks("system"));
            }
            (_, Some(d)) => {
                let stat = read(d.path.join("cpu.stat")).unwrap_or_default();
                let ns = |key| keyed(&stat, key).and_then(|us| us.checked_mul(1000));
                put("cpu.user", ns("user_usec"));
                put("cpu.system", ns("system_usec"));
            }
            _ => {}
        }
        if let Some(d) = self.handler(Controller::Cpu) {
            let stat = read(d.path.join("cpu.stat")).unwrap_or_default();
            put("cpu.throttled.periods", keyed(&stat, "nr_throttled"));
            put(
                "cpu.throttled.time",
                if d.v2 {
                    keyed(&stat, "throttled_usec").and_then(|us| us.checked_mul(1000))
                } else {
                    keyed(&stat, "throttled_time")
                },
            );
        }
        if let Some(d) = self.handler(Controller::Blkio) {
            if d.v2 {
                let stat = read(d.path.join("io.stat"));
                let sum = |key| stat.as_deref().map(|s| io_stat_sum(s, key));
                put("block.rd.bytes", sum("rbytes"));
                put("block.wr.bytes", sum("wbytes"));
                put("block.rd.reqs", sum("rios"));
                put("block.wr.reqs", sum("wios"));
            } else {
                let bytes = read(d.path.join("blkio.throttle.io_service_bytes"));
                let reqs = read(d.path.join("blkio.throttle.io_serviced"));
                put(
                    "block.rd.bytes",
                    bytes.as_deref().map(|t| blkio_sum(t, "Read")),
                );
                put(
                    "block.wr.bytes",
                    bytes.as_deref().map(|t| blkio_sum(t, "Write")),
                );
                put(
                    "block.rd.reqs",
                    reqs.as_deref().map(|t| blkio_sum(t, "Read")),
                );
                put(
                    "block.wr.reqs",
                    reqs.as_deref().map(|t| blkio_sum(t, "Write")),
                );
            }
        }
        if let Some(d) = self.handler(Controller::Pids) {
            // "max": no limit, nothing to show.
            put("pids.max", number(d.path.join("pids.max")));
        }
        details
    }

    /// The directory whose `cgroup.procs` is read for the process list.
    fn tracking(&self) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.v2)
            .or_else(|| self.dirs.iter().find(|d| !d.lazy()))
    }

    fn handler(&self, c: Controller) -> Option<&Dir> {
        self.dirs.iter().find(|d| d.handles.contains(c))
    }

    fn freezer(&self) -> Result<Freezer<'_>, CgroupError> {
        if let Some(dir) = self.handler(Controller::Freezer) {
            return Ok(Freezer::V1(&dir.path));
        }
        match self.dirs.iter().find(|d| d.v2) {
            Some(dir) => Ok(Freezer::V2(&dir.path)),
            None => Err(CgroupError::NoFreezer),
        }
    }

    /// Writes cgroup2's `cgroup.freeze`, which kernels before 5.2 lack.
    fn write_freeze(&self, dir: &Path, value: &str) -> Result<(), CgroupError> {
        let path = dir.join("cgroup.freeze");
        match self.fs.write(&path, value) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CgroupError::NoFreezer),
            Err(source) => Err(CgroupError::Write {
                path,
                value: value.into(),
                source,
            }),
        }
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), CgroupError> {
        self.fs
            .write(path, value)
            .map_err(|source| CgroupError::Write {
                path: path.to_owned(),
                value: value.into(),
                source,
            })
    }

    fn read(&self, path: &Path) -> Result<String, CgroupError> {
        self.fs.read(path).map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        })
    }

    fn collect_procs(&self, dir: &Path, pids: &mut Vec<i32>) -> Result<(), CgroupError> {
        let path = dir.join("cgroup.procs");
        match self.fs.read(&path) {
            Ok(text) => pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(CgroupError::Read { path, source }),
        }
        for child in self.subdirs(dir)? {
            self.collect_procs(&child, pids)?;
        }
        Ok(())
    }

    fn subdirs(&self, dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
        match self.fs.subdirs(dir) {
            Ok(dirs) => Ok(dirs),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            }),
        }
    }

    /// A v1 cpuset cgroup that balances load makes the kernel rebuild the
    /// host's scheduling domains when it is removed (a walk of every
    /// cpuset and task, under the cgroup lock every start and stop waits
    /// for). Emptied of CPUs first, it can stop balancing without a
    /// rebuild, and its removal costs nothing more. Best effort: a cgroup
    /// that still has tasks refuses both, and its rmdir says why.
    fn retire_cpuset(&self, dir: &Path) {
        // A newline: an empty write leaves the CPUs as they are.
        for (file, value) in [("cpuset.cpus", "\n"), ("cpuset.sched_load_balance", "0")] {
            if let Err(error) = self.fs.write(&dir.join(file), value) {
                tracing::debug!(dir = %dir.display(), file, error = %error, "cannot retire a cpuset cgroup");
                return;
            }
        }
    }

    /// Removes `dir` and the cgroups below it. The rmdir comes first and
    /// the listing only when it is refused: most containers make no
    /// cgroups of their own, and a listing takes the lock of the cgroup
    /// file system that every other container's mkdir and rmdir takes
    /// too (thousands of removals at once queued on it).
    fn remove_tree(&self, dir: &Path, cpuset: bool) -> Result<(), CgroupError> {
        if cpuset {
            self.retire_cpuset(dir);
        }
        let busy = match self.rmdir(dir) {
            Err(CgroupError::Busy { path }) => path,
            other => return other,
        };
        let children = self.subdirs(dir)?;
        if children.is_empty() {
            // Processes are left.
            return Err(CgroupError::Busy { path: busy });
        }
        for child in children {
            self.remove_tree(&child, cpuset)?;
        }
        if cpuset {
            // Its children held CPUs it could not give up before.
            self.retire_cpuset(dir);
        }
        self.rmdir(dir)
    }

    /// Removes one empty cgroup; one that is gone already is removed.
    fn rmdir(&self, dir: &Path) -> Result<(), CgroupError> {
        match self.fs.rmdir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => Err(CgroupError::Busy {
                path: dir.to_owned(),
            }),
            Err(source) => Err(CgroupError::Remove {
                path: dir.to_owned(),
                source,
            }),
        }
    }
}

/// Where freezing happens.
enum Freezer<'a> {
    /// The v1 freezer hierarchy's directory (`freezer.state`).
    V1(&'a Path),
    /// The unified hierarchy's directory (`cgroup.freeze`).
    V2(&'a Path),
}
