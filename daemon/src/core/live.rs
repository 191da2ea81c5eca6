//! The live status of running domains, kept in the run directory so that a
//! restarted daemon finds its containers again (`NAME.status`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::persist::{self, Durability, PersistError, Versioned};

/// What the daemon must remember about a running domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub uuid: Uuid,
    pub name: String,
    /// Transient domains exist only here while they run.
    pub persistent: bool,
    /// The definition the running instance was started from.
    pub live_xml: String,
    pub init_pid: i32,
    pub monitor_pid: i32,
    /// Start time of the monitor (clock ticks since boot), against pid reuse.
    pub monitor_start_time: u64,
    /// Seconds since the epoch.
    pub started_at: u64,
    /// The container's cgroup below each hierarchy root.
    pub cgroup_path: PathBuf,
    /// The memory limit applied to the cgroup, bytes.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    pub paused: bool,
    /// The instance was started by a reboot.
    pub rebooted: bool,
}

impl Versioned for LiveStatus {
    const VERSION: u32 = 1;
}

impl LiveStatus {
    pub fn path(run_dir: &Path, name: &str) -> PathBuf {
        run_dir.join(format!("{name}.status"))
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), PersistError> {
        let path = Self::path(run_dir, &self.name);
        persist::write_versioned(&path, self, 0o600, Durability::Volatile)
    }

    pub fn load(path: &Path) -> Result<LiveStatus, PersistError> {
        persist::read_versioned(path)
    }

    /// Every status file in `run_dir`.
    pub fn scan(run_dir: &Path) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(run_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "status"))
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths
    }
}

/// What the daemon must remember about an active network
/// (`RUN/network/NAME.status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub uuid: Uuid,
    pub name: String,
    /// Transient networks exist only here while they run.
    pub persistent: bool,
    /// The definition the network was started from, with its bridge.
    pub live_xml: String,
    /// Its dnsmasq: (pid, start time).
    #[serde(default)]
    pub dnsmasq: Option<(i32, u64)>,
}

impl Versioned for NetworkStatus {
    const VERSION: u32 = 1;
}

impl NetworkStatus {
    pub fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.status"))
    }

    pub fn save(&self, dir: &Path) -> Result<(), PersistError> {
        persist::write_versioned(
            &Self::path(dir, &self.name),
            self,
            0o600,
            Durability::Volatile,
        )
    }

    pub fn load(path: &Path) -> Result<NetworkStatus, PersistError> {
        persist::read_versioned(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LiveStatus {
        LiveStatus {
            uuid: Uuid::nil(),
            name: "web".into(),
            persistent: true,
            live_xml: "<domain/>".into(),
            init_pid: 10,
            monitor_pid: 9,
            monitor_start_time: 1234,
            started_at: 1_700_000_000,
            cgroup_path: "machine/lxvirt-web".into(),
            memory_limit: Some(64 << 20),
            paused: false,
            rebooted: false,
        }
    }

    #[test]
    fn saves_loads_and_refuses_newer_versions() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        let path = LiveStatus::path(dir.path(), "web");
        assert_eq!(LiveStatus::load(&path).unwrap(), sample());
        assert_eq!(LiveStatus::scan(dir.path()), vec![path.clone()]);
        std::fs::write(&path, br#"{"version": 2, "whatever": true}"#).unwrap();
        let err = LiveStatus::load(&path).unwrap_err();
        assert!(matches!(err, PersistError::Newer { found: 2, .. }), "{err}");
        std::fs::write(&path, b"{\"version\": 1, \"uu").unwrap();
        assert!(matches!(
            LiveStatus::load(&path),
            Err(PersistError::Corrupt { .. })
        ));
    }

    /// A status file as lxvirtd 0.1 wrote it: a daemon upgrade finds the
    /// containers the old one started.
    #[test]
    fn reads_the_files_of_earlier_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.status");
        std::fs::write(
            &path,
            r#"{
  "version": 1,
  "uuid": "00000000-0000-0000-0000-000000000000",
  "name": "web",
  "persistent": true,
  "live_xml": "<domain/>",
  "init_pid": 10,
  "monitor_pid": 9,
  "monitor_start_time": 1234,
  "started_at": 1700000000,
  "cgroup_path": "machine/lxvirt-web",
  "memory_limit": 67108864,
  "paused": false,
  "rebooted": false
}"#,
        )
        .unwrap();
        assert_eq!(LiveStatus::load(&path).unwrap(), sample());
    }
}
