//! The records the Images interface returns.

use serde::{Deserialize, Serialize};
use zbus::Type;

/// One image as `ListImages` and `Inspect` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ImageRecord {
    /// The image id (64 hex digits).
    pub id: String,
    /// Its names, sorted.
    pub names: Vec<String>,
    /// The parent's id, "" for a platform image.
    pub parent: String,
    /// The image and its ancestors, top first.
    pub chain: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Bytes of file content in this layer, and in the whole chain.
    pub size: u64,
    pub total_size: u64,
    /// Images whose parent this is.
    pub children: Vec<String>,
    /// Domains with a writable layer on this image.
    pub domains: Vec<String>,
    /// Where it came from: `tarball:PATH`, `oci:LAYOUT`, `commit:DOMAIN`.
    pub source: String,
}
