//! The live status of running domains, kept in the run directory so that a
//! restarted daemon finds its containers again (`NAME.status`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::persist;

/// Format version of [`LiveStatus`]; other versions are refused.
pub const LIVE_STATUS_VERSION: u32 = 1;

/// What the daemon must remember about a running domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub version: u32,
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

/// A status file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LiveStatusError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid status file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: status format version {found}, this lxvirtd reads version {LIVE_STATUS_VERSION}; use the lxvirtd that started these containers"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LiveStatus {
    pub fn path(run_dir: &Path, name: &str) -> PathBuf {
        run_dir.join(format!("{name}.status"))
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), LiveStatusError> {
        let path = Self::path(run_dir, &self.name);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| LiveStatusError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        persist::replace_file(&path, &bytes, 0o600)
            .map_err(|source| LiveStatusError::Write { path, source })
    }

    pub fn load(path: &Path) -> Result<LiveStatus, LiveStatusError> {
        let bytes = std::fs::read(path).map_err(|source| LiveStatusError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Check the version before the shape, so an old or new format gets
        // the version message rather than a parse error.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(&bytes).map_err(|source| LiveStatusError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if versioned.version != LIVE_STATUS_VERSION {
            return Err(LiveStatusError::Version {
                path: path.to_owned(),
                found: versioned.version,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| LiveStatusError::Parse {
            path: path.to_owned(),
            source,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LiveStatus {
        LiveStatus {
            version: LIVE_STATUS_VERSION,
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
    fn saves_loads_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        let path = LiveStatus::path(dir.path(), "web");
        assert_eq!(LiveStatus::load(&path).unwrap(), sample());
        assert_eq!(LiveStatus::scan(dir.path()), vec![path.clone()]);
        std::fs::write(&path, br#"{"version": 2, "whatever": true}"#).unwrap();
        let err = LiveStatus::load(&path).unwrap_err();
        assert!(
            matches!(err, LiveStatusError::Version { found: 2, .. }),
            "{err}"
        );
        std::fs::write(&path, b"{\"version\": 1, \"uu").unwrap();
        assert!(matches!(
            LiveStatus::load(&path),
            Err(LiveStatusError::Parse { .. })
        ));
    }
}
