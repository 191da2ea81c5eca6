//! Memory cgroups of ended containers, removed together once stops pause.
//!
//! Taking a memory cgroup offline makes the kernel walk every
//! memory-cgroup-aware list of every superblock on the host
//! (`memcg_reparent_list_lrus`: two lists per superblock, a container
//! mounts four and its IPC namespace one more), under the cgroup lock that
//! every other cgroup `mkdir`, `rmdir` and move waits for. With thousands
//! of containers running, each removal holds that lock for milliseconds,
//! and a burst of stops (destroy all) pays it once per container against
//! the superblocks of those still running: quadratic in the containers.
//! 2,000 memory cgroups took 0.44 s to go offline beside no other
//! superblock and 4.96 s beside 20,000 (docs/benchmarks.md).
//!
//! A v1 cgroup can be renamed within its parent instead, which takes that
//! lock for a moment. So a container's end renames its memory cgroup to a
//! *retired* name (`.lxvirt-retired.PID.NANOS`, beside the others in its
//! partition), and the daemon removes the retired ones together once no
//! container has ended for [`QUIET`] (at the latest [`MAX_WAIT`] after
//! the first): by then the superblocks of the containers that ended are
//! gone, and each walk is short. cgroup2 cannot rename, so there the
//! memory controller's directory goes at once, as before.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The start of a retired memory cgroup's name.
pub const PREFIX: &str = ".lxvirt-retired.";

/// How long no container must have ended before the retired cgroups go.
pub const QUIET: Duration = Duration::from_millis(250);

/// The longest a retired cgroup waits, stops or not: its memory (the
/// kernel's per-cgroup state grows with the superblocks on the host) is
/// held until then.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A name for `path`'s retirement beside it, unique to this process and
/// moment.
pub fn retired_name(path: &Path) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{PREFIX}{}.{nanos}", std::process::id());
    match path.parent() {
        Some(parent) => parent.join(name),
        None => PathBuf::from(name),
    }
}

/// Whether `path` names a retired cgroup.
pub fn is_retired(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(PREFIX) && name.len() > PREFIX.len())
}

/// Retired cgroups waiting for their removal.
#[derive(Debug, Default)]
pub struct Pending {
    paths: Vec<PathBuf>,
    /// When the oldest pending one and the latest were retired.
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Pending {
    /// Adds cgroups retired at `now`; whether nothing was pending before
    /// (a removal must then be scheduled).
    pub fn add(&mut self, paths: impl IntoIterator<Item = PathBuf>, now: Instant) -> bool {
        let before = self.paths.len();
        self.paths.extend(paths);
        if self.paths.len() == before {
            return false;
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        before == 0
    }

    /// How long from `now` until the pending cgroups are due for removal
    /// (zero: now); `None` when none is pending.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        let (first, last) = (self.first?, self.last?);
        let due = (last + QUIET).min(first + MAX_WAIT);
        Some(due.saturating_duration_since(now))
    }

    /// Takes every pending cgroup.
    pub fn take(&mut self) -> Vec<PathBuf> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.paths)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retired_names_are_unique_siblings_and_recognised() {
        let path = Path::new("/sys/fs/cgroup/memory/machine/lxvirt-web");
        let a = retired_name(path);
        let b = retired_name(path);
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        assert!(is_retired(&a), "{}", a.display());
        assert!(!is_retired(path));
        assert!(!is_retired(Path::new("/x/.lxvirt-retired.")));
    }

    #[test]
    fn pending_cgroups_are_due_after_a_quiet_spell_or_the_longest_wait() {
        let start = Instant::now();
        let mut pending = Pending::default();
        assert_eq!(pending.due_in(start), None);
        assert!(
            !pending.add([], start),
            "nothing added, nothing to schedule"
        );
        assert!(pending.add([PathBuf::from("/a")], start));
        assert_eq!(pending.due_in(start), Some(QUIET));
        // Another end before the quiet spell is over pushes it back, and
        // needs no second schedule.
        let later = start + QUIET / 2;
        assert!(!pending.add([PathBuf::from("/b")], later));
        assert_eq!(pending.due_in(later), Some(QUIET));
        assert_eq!(pending.due_in(later + QUIET), Some(Duration::ZERO));
        // Ends that never pause: due MAX_WAIT after the first.
        let mut now = later;
        while now < start + MAX_WAIT {
            now += QUIET / 2;
            pending.add([PathBuf::from("/c")], now);
        }
        assert_eq!(pending.due_in(now), Some(Duration::ZERO));
        let taken = pending.take();
        assert_eq!(taken[..2], [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(pending.due_in(now), None);
        assert!(pending.add([PathBuf::from("/d")], now), "empty again");
    }
}
