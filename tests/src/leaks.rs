//! What a container may leave behind on the host, counted: mounts, cgroups,
//! monitor processes, the daemon's descriptors; and the process facts
//! those checks read from /proc.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::TestDaemon;

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The parent of process `pid` (field 4 of `/proc/PID/stat`).
pub fn parent_of(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident set size of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// A KiB figure of `/proc/PID/status` (`VmRSS`, `RssAnon`, `RssFile`, …).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Mounts in the caller's mount namespace (the host's).
pub fn mount_count() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

/// The cgroups under the partition of the daemon rooted at `root` whose
/// names start with `prefix` (`lxvirt-NAME` per container).
pub fn lxvirt_cgroups(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for machine in TestDaemon::partition_dirs(root).unwrap() {
        if let Ok(entries) = fs::read_dir(&machine) {
            found.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            }));
        }
    }
    found
}

/// Monitor processes of this daemon (one spare waits for the next start;
/// the early init and mounter it made, copies of it, are not counted).
pub fn monitors_for(run_dir: &Path) -> Vec<u32> {
    let needle = run_dir.display().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| !is_early_process(*pid))
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("lxvirt-monitor") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Whether `pid` is a spare monitor's early init, waiting for a spec.
pub fn is_early_init(pid: u32) -> bool {
    has_name(pid, lxvirtd::lxc::launch::EARLY_INIT_NAME)
}

/// Whether `pid` is a spare monitor's early init or early mounter.
pub fn is_early_process(pid: u32) -> bool {
    is_early_init(pid) || has_name(pid, lxvirtd::lxc::launch::EARLY_MOUNTER_NAME)
}

fn has_name(pid: u32, name: &std::ffi::CStr) -> bool {
    let name = name.to_string_lossy();
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name)
}

/// The early init a spare monitor of this daemon waits with, if any.
pub fn spare_early_init(run_dir: &Path) -> Option<u32> {
    monitors_for(run_dir).into_iter().find_map(|pid| {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .filter_map(|child| child.parse::<u32>().ok())
            .find(|child| is_early_init(*child))
    })
}

/// Monitors that still have a container (a child process other than a
/// spare's early processes).
pub fn busy_monitors(run_dir: &Path) -> usize {
    monitors_for(run_dir)
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(|c| {
                c.split_whitespace()
                    .filter_map(|child| child.parse::<u32>().ok())
                    .any(|child| !is_early_process(child))
            })
        })
        .count()
}

/// Mounts of the host whose mount point lies below `dir` (tests running
/// side by side mount elsewhere).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    lxvirtd::sys::mountinfo::read(Path::new("/proc/self/mountinfo"))
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|point| point.starts_with(dir))
        .map(|point| point.display().to_string())
        .collect()
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

pub fn daemon_pid(run_dir: &Path) -> u32 {
    // The daemon is the process whose cmdline names the run dir and is not a monitor.
    let needle = format!("--run-dir={}", run_dir.display());
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .unwrap()
}

/// Waits up to 10 s for `f` to hold; fails naming `what` otherwise.
pub async fn settle(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
