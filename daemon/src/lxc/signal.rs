//! `send-process-signal`: a signal to a process of a running container,
//! named by its pid inside (in the container's pid namespace). The process
//! is found among the container's cgroup by the pid the kernel shows for
//! it at the container's namespace level (`NSpid` in `/proc/PID/status`),
//! so a process of a namespace the container made itself is still named
//! as the container sees it, and no process outside the container can be
//! reached; the signal goes through a pidfd, never to a recycled pid.

use std::os::fd::AsFd as _;
use std::path::Path;

use nix::unistd::Pid;

use crate::cgroup::{CgroupError, Cgroups};
use crate::sys::process::{pidfd_open, pidfd_signal};

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("domain '{domain}': no process {pid} runs inside it")]
    NoSuchProcess { domain: String, pid: i64 },
    #[error("domain '{domain}': cannot read its init's pid namespace level")]
    InitGone { domain: String },
    #[error("domain '{domain}': cannot list its processes")]
    Cgroup {
        domain: String,
        #[source]
        source: CgroupError,
    },
    #[error("domain '{domain}': cannot send signal {signal} to process {pid}")]
    Send {
        domain: String,
        pid: i64,
        signal: i32,
        #[source]
        source: nix::Error,
    },
}

/// Sends `signal` to the process numbered `pid` inside the container whose
/// init is `init_pid` (a host pid) and whose cgroup is `cgroup_path`.
pub fn send(
    domain: &str,
    cgroups: &Cgroups,
    cgroup_path: &Path,
    init_pid: i32,
    pid: i64,
    signal: i32,
) -> Result<(), SignalError> {
    let no_such = || SignalError::NoSuchProcess {
        domain: domain.to_owned(),
        pid,
    };
    if pid <= 0 {
        return Err(no_such());
    }
    // The container's level: its init is 1 there, the last of its NSpid.
    let level = ns_pids(init_pid)
        .map(|pids| pids.len() - 1)
        .ok_or_else(|| SignalError::InitGone {
            domain: domain.to_owned(),
        })?;
    let procs = cgroups
        .open(cgroup_path)
        .and_then(|cgroup| cgroup.procs())
        .map_err(|source| SignalError::Cgroup {
            domain: domain.to_owned(),
            source,
        })?;
    let is_it = |host_pid: i32| ns_pids(host_pid).and_then(|p| p.get(level).copied()) == Some(pid);
    let host_pid = procs
        .into_iter()
        .find(|host| is_it(*host))
        .ok_or_else(no_such)?;
    let pidfd = pidfd_open(Pid::from_raw(host_pid)).map_err(|_| no_such())?;
    // The pidfd names a process from now on: check it is still the one.
    if !is_it(host_pid) {
        return Err(no_such());
    }
    pidfd_signal(pidfd.as_fd(), signal).map_err(|source| SignalError::Send {
        domain: domain.to_owned(),
        pid,
        signal,
        source,
    })
}

/// The pids of host process `pid` in each pid namespace it is in, the
/// host's first (`NSpid`); `None` when it is gone.
fn ns_pids(pid: i32) -> Option<Vec<i64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_ns_pids(&status)
}

fn parse_ns_pids(status: &str) -> Option<Vec<i64>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Vec<i64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (!pids.is_empty()).then_some(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lists_every_level() {
        assert_eq!(
            parse_ns_pids("Name:\tsleep\nNSpid:\t4242\t17\t3\nNSpgid:\t1\n"),
            Some(vec![4242, 17, 3])
        );
        assert_eq!(parse_ns_pids("NSpid:\t12\n"), Some(vec![12]));
        assert_eq!(parse_ns_pids("Name:\tx\n"), None);
        assert_eq!(parse_ns_pids("NSpid:\tx\n"), None);
    }
}
