//! The store's persisted state: one `meta.json` per image, `tags.json`,
//! one `meta.json` per writable layer. Versioned, written atomically.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Result, StorageError};
use super::id::ImageId;

/// The format version of every state file of the store.
pub const FORMAT_VERSION: u32 = 1;

/// Largest state file read (an OCI config is kept in image meta).
const MAX_STATE_FILE: u64 = 16 << 20;

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
    pub version: u32,
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
    pub version: u32,
    pub tags: BTreeMap<String, ImageId>,
}

/// `containers/<domain>/meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub version: u32,
    pub domain: String,
    pub image: ImageId,
    pub created: u64,
}

pub(crate) trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for ImageMeta {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for Tags {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for ContainerMeta {
    fn version(&self) -> u32 {
        self.version
    }
}

/// Reads a versioned state file, refusing other versions.
#[allow(private_bounds)]
pub fn read<T: DeserializeOwned + Versioned>(path: &Path) -> Result<T> {
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_STATE_FILE), &mut bytes)
        .map_err(|e| StorageError::io(path, e))?;
    // Look at the version first, so a future format gives a version error
    // rather than a parse error.
    #[derive(Deserialize)]
    struct Probe {
        version: u32,
    }
    let probe: Probe =
        serde_json::from_slice(&bytes).map_err(|source| StorageError::CorruptState {
            path: path.to_owned(),
            source,
        })?;
    if probe.version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_owned(),
            found: probe.version,
            supported: FORMAT_VERSION,
        });
    }
    let value: T = serde_json::from_slice(&bytes).map_err(|source| StorageError::CorruptState {
        path: path.to_owned(),
        source,
    })?;
    debug_assert_eq!(value.version(), FORMAT_VERSION);
    Ok(value)
}

/// Writes `value` as JSON to `path` atomically: a temporary file in the same
/// directory, fsync, rename, fsync of the directory.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| StorageError::io(path, io::Error::other(e)))?;
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StorageError::io(path, e)
    })
}

/// Writes `value` as JSON to a new file `path` (inside a directory that is
/// renamed into place afterwards, so no rename of its own), and fsyncs it.
pub fn write_new<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| StorageError::io(path, io::Error::other(e)))?;
    (|| {
        let mut file = File::create_new(path)?;
        file.write_all(&bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()
    })()
    .map_err(|e| StorageError::io(path, e))
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
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        let mut tags = Tags {
            version: FORMAT_VERSION,
            ..Tags::default()
        };
        tags.tags
            .insert("busybox".into(), ImageId::parse(&"a".repeat(64)).unwrap());
        write_atomic(&path, &tags).unwrap();
        let back: Tags = read(&path).unwrap();
        assert_eq!(back, tags);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        fs::write(&path, r#"{"version": 7, "whatever": []}"#).unwrap();
        let err = read::<Tags>(&path).unwrap_err();
        assert!(
            matches!(err, StorageError::UnsupportedVersion { found: 7, .. }),
            "{err}"
        );
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            read::<Tags>(&path),
            Err(StorageError::CorruptState { .. })
        ));
    }
}
