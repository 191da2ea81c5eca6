//! The store's persisted state: one `meta.json` per image, `tags.json`,
//! one `meta.json` per writable layer. Versioned and written atomically
//! through [`crate::persist`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::Result;
use super::id::ImageId;
use crate::persist::{self, Durability, Versioned};

/// The format version of every state file of the store.
pub const FORMAT_VERSION: u32 = 1;

/// Permissions of the store's state files.
const STATE_FILE_MODE: u32 = 0o644;

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A root-filesystem tarball.
    Tarball { path: PathBuf },
    /// A layer of an OCI image layout.
    Oci {
        layout: PathBuf,
        /// The manifest's digest (`sha256:…`).
        manifest: String,
        /// The layer blob's digest.
        layer: String,
    },
    /// A commit of a domain's writable layer.
    Commit { domain: String },
}

/// `images/<id>/meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub id: ImageId,
    pub parent: Option<ImageId>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Bytes of file content in this layer (not counting its parents).
    pub size: u64,
    /// sha256 (hex) of the uncompressed layer tar, when imported from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    pub source: Source,
    /// The OCI image config of the image this layer tops, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// `images/tags.json`: names to ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    pub tags: BTreeMap<String, ImageId>,
}

/// `containers/<domain>/meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub domain: String,
    pub image: ImageId,
    pub created: u64,
}

impl Versioned for ImageMeta {
    const VERSION: u32 = FORMAT_VERSION;
}
impl Versioned for Tags {
    const VERSION: u32 = FORMAT_VERSION;
}
impl Versioned for ContainerMeta {
    const VERSION: u32 = FORMAT_VERSION;
}

/// Fuzzing: the image store's state files read from `bytes`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_state_files(bytes: &[u8]) {
    crate::persist::fuzz_round_trip::<ImageMeta>(bytes);
    crate::persist::fuzz_round_trip::<Tags>(bytes);
    crate::persist::fuzz_round_trip::<ContainerMeta>(bytes);
    crate::persist::fuzz_round_trip::<super::thin::ThinStateFile>(bytes);
}

/// Reads a state file of the store, refusing a newer format.
pub fn read<T: Versioned>(path: &Path) -> Result<T> {
    Ok(persist::read_versioned(path)?)
}

/// Writes a state file of the store atomically and durably.
pub fn write<T: Versioned>(path: &Path, value: &T) -> Result<()> {
    Ok(persist::write_versioned(
        path,
        value,
        STATE_FILE_MODE,
        Durability::Durable,
    )?)
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;

    use super::{ImageId, Tags, read, write};
    use crate::persist::PersistError;
    use crate::storage::StorageError;

    #[test]
    fn round_trip_and_version_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        let mut tags = Tags::default();
        tags.tags
            .insert("busybox".into(), ImageId::parse(&"a".repeat(64)).unwrap());
        write(&path, &tags).unwrap();
        let back: Tags = read(&path).unwrap();
        assert_eq!(back, tags);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // What earlier builds wrote reads the same.
        fs::write(
            &path,
            format!(
                "{{\n  \"version\": 1,\n  \"tags\": {{\n    \"busybox\": \"{}\"\n  }}\n}}\n",
                "a".repeat(64)
            ),
        )
        .unwrap();
        assert_eq!(read::<Tags>(&path).unwrap(), tags);

        fs::write(&path, r#"{"version": 7, "whatever": []}"#).unwrap();
        let err = read::<Tags>(&path).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::State(PersistError::Newer { found: 7, .. })
            ),
            "{err}"
        );
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            read::<Tags>(&path),
            Err(StorageError::State(PersistError::Corrupt { .. }))
        ));
    }
}
