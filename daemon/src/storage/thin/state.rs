//! `<state>/thin/volumes.json`: which thin device holds which image or
//! writable layer. Versioned, rewritten atomically after every change, so
//! a restarted daemon finds its volumes again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::error::Result;
use super::super::id::ImageId;
use super::super::meta::{self, FORMAT_VERSION};
use crate::persist::{self, Versioned};

/// One thin volume of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The pool's id of the thin device (24 bits).
    pub thin_id: u32,
    /// Its size in 512-byte sectors.
    pub sectors: u64,
    /// Its content is complete; a volume still being filled when the
    /// daemon died is deleted at the next start.
    pub ready: bool,
}

/// The pool's persistent state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinState {
    /// The pool's metadata has been formatted: reopen it, never recreate.
    pub pool_created: bool,
    /// The pool's data size in bytes when it was created.
    pub pool_bytes: u64,
    /// The next thin id to hand out (ids are never reused, so an id
    /// recorded here can never name another volume).
    pub next_id: u32,
    /// Image volumes, by image id.
    pub images: BTreeMap<ImageId, Volume>,
    /// Writable-layer volumes, by domain name.
    pub containers: BTreeMap<String, Volume>,
}

impl Versioned for ThinState {
    const VERSION: u32 = FORMAT_VERSION;
}

impl Default for ThinState {
    fn default() -> ThinState {
        ThinState {
            pool_created: false,
            pool_bytes: 0,
            next_id: 1,
            images: BTreeMap::new(),
            containers: BTreeMap::new(),
        }
    }
}

/// Where the state lives, and its loading and saving.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("volumes.json"),
        }
    }

    /// The saved state, or a fresh one when there is none.
    pub fn load(&self) -> Result<ThinState> {
        Ok(persist::read_versioned_if_present(&self.path)?.unwrap_or_default())
    }

    pub fn save(&self, state: &ThinState) -> Result<()> {
        meta::write(&self.path, state)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{ImageId, StateFile, ThinState, Volume};
    use crate::persist::PersistError;
    use crate::storage::StorageError;

    #[test]
    fn state_round_trips_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap(), ThinState::default());
        let mut state = ThinState {
            pool_created: true,
            pool_bytes: 1 << 30,
            next_id: 3,
            ..ThinState::default()
        };
        let volume = Volume {
            thin_id: 1,
            sectors: 2048,
            ready: true,
        };
        state
            .images
            .insert(ImageId::parse(&"b".repeat(64)).unwrap(), volume);
        state.containers.insert(
            "web".into(),
            Volume {
                thin_id: 2,
                ..volume
            },
        );
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        std::fs::write(dir.path().join("volumes.json"), r#"{"version": 9}"#).unwrap();
        assert!(matches!(
            file.load(),
            Err(StorageError::State(PersistError::Newer { found: 9, .. }))
        ));
    }
}
