//! The errors of the image store.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::id::ImageId;
use crate::persist::PersistError;

/// Why an archive entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsafeEntry {
    /// The path starts with `/`.
    AbsolutePath,
    /// The path has a `..` component.
    ParentComponent,
    /// A character or block device other than an overlay whiteout.
    DeviceNode { block: bool, major: u32, minor: u32 },
    /// A hard link whose target is absolute, has `..`, or a relative
    /// symbolic link whose target climbs above the root.
    LinkEscapes { target: String },
    /// A hard link to a file this layer does not contain.
    LinkTargetMissing { target: String },
    /// A parent directory of the entry is a symbolic link (or not a
    /// directory) in the layer.
    ThroughSymlink,
    /// A path with a NUL byte, or not valid for the file system.
    BadPath,
    /// An entry type lxvirt does not unpack (sockets, sparse files, …).
    UnsupportedType(String),
}

impl fmt::Display for UnsafeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafeEntry::AbsolutePath => f.write_str("absolute paths are refused"),
            UnsafeEntry::ParentComponent => f.write_str("'..' components are refused"),
            UnsafeEntry::DeviceNode {
                block,
                major,
                minor,
            } => write!(
                f,
                "{} device {major}:{minor}: device nodes are refused (containers get their /dev at start; \
                 import with device nodes skipped to drop them)",
                if *block { "block" } else { "character" }
            ),
            UnsafeEntry::LinkEscapes { target } => {
                write!(f, "link target '{target}' leaves the image root")
            }
            UnsafeEntry::LinkTargetMissing { target } => {
                write!(f, "hard link target '{target}' is not in this layer")
            }
            UnsafeEntry::ThroughSymlink => {
                f.write_str("a parent directory is a symbolic link or not a directory")
            }
            UnsafeEntry::BadPath => f.write_str("the path is not valid"),
            UnsafeEntry::UnsupportedType(t) => write!(f, "entries of type {t} are not supported"),
        }
    }
}

/// What is wrong with an OCI image layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciProblem {
    /// A required file is missing or unreadable.
    Missing(String),
    /// A JSON document does not parse or lacks a field.
    Malformed(String),
    /// No manifest, or several and no reference given, or the reference is
    /// not in the index.
    NoManifest(String),
    /// A media type or platform lxvirt does not handle.
    Unsupported(String),
    /// A blob's sha256 differs from its descriptor's digest.
    DigestMismatch { digest: String, actual: String },
    /// A blob's size differs from its descriptor's size.
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// A layer's uncompressed content does not match the config's diff_id.
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
}

impl fmt::Display for OciProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OciProblem::Missing(what) => write!(f, "{what} is missing"),
            OciProblem::Malformed(what) => write!(f, "{what}"),
            OciProblem::NoManifest(what) => write!(f, "{what}"),
            OciProblem::Unsupported(what) => write!(f, "{what}"),
            OciProblem::DigestMismatch { digest, actual } => {
                write!(
                    f,
                    "blob {digest} is corrupt: its content hashes to sha256:{actual}"
                )
            }
            OciProblem::SizeMismatch {
                digest,
                expected,
                actual,
            } => write!(
                f,
                "blob {digest} is corrupt: {actual} bytes where the descriptor says {expected}"
            ),
            OciProblem::DiffIdMismatch {
                layer,
                expected,
                actual,
            } => write!(
                f,
                "layer {layer} unpacks to {actual}, the config's diff_id says {expected}"
            ),
        }
    }
}

/// An error of the image store. Nothing half-imported is left in the store
/// when an import or commit returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid image name '{name}': {reason}; use 1 to 64 characters of [A-Za-z0-9_.+-]")]
    InvalidName { name: String, reason: String },
    #[error("invalid domain name '{name}': {reason}")]
    InvalidDomain { name: String, reason: String },
    #[error("no image '{0}' in the store")]
    NoSuchImage(String),
    #[error("image reference '{reference}' matches several images; give more of the id")]
    AmbiguousImage { reference: String },
    #[error(
        "image {image} is in use{}{}; remove those first",
        users_text(domains),
        children_text(children)
    )]
    ImageInUse {
        image: ImageId,
        domains: Vec<String>,
        children: Vec<ImageId>,
    },
    #[error("the name '{name}' already names image {image}; untag it first")]
    TagExists { name: String, image: ImageId },
    #[error("domain '{0}' has no writable layer")]
    NoWritableLayer(String),
    #[error(
        "domain '{domain}' has a writable layer on image {current}, not on {requested}; remove the layer to change its image"
    )]
    WritableLayerMismatch {
        domain: String,
        current: ImageId,
        requested: ImageId,
    },
    #[error("{}: entry '{entry}': {reason}", archive.display())]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: UnsafeEntry,
    },
    #[error("{}: not a valid tar archive", archive.display())]
    BadArchive {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {format} compression is not supported; use plain tar, gzip or zstd", archive.display())]
    UnsupportedCompression {
        archive: PathBuf,
        format: &'static str,
    },
    #[error("OCI layout {}: {problem}", layout.display())]
    Oci {
        layout: PathBuf,
        problem: OciProblem,
    },
    #[error(
        "no space left on the device while writing {}; the partial result was removed: free some space and try again",
        path.display()
    )]
    NoSpace { path: PathBuf },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A state file of the store (the message names it).
    #[error(transparent)]
    State(PersistError),
    #[error("device-mapper pool '{pool}': {action}: {reason}; {fix}")]
    Thin {
        pool: String,
        action: String,
        reason: String,
        fix: String,
    },
    #[error("{what}; {fix}")]
    ThinTool { what: String, fix: String },
    #[error("storage backend '{backend}' is not available: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    #[error("{}: {what} in the writable layer cannot be committed; mount it with redirect_dir=off,metacopy=off", path.display())]
    UnsupportedOverlay { path: PathBuf, what: String },
    #[error(
        "the image has {layers} layers, more than one overlay mount can stack; flatten it (export, then import the tarball)"
    )]
    ChainTooLong { layers: usize },
    #[error("state directory {}: a path with ',', ':', '\\' or '\"' cannot be given to overlayfs", path.display())]
    UnusablePath { path: PathBuf },
}

fn users_text(domains: &[String]) -> String {
    if domains.is_empty() {
        String::new()
    } else {
        format!(" by domain(s) {}", domains.join(", "))
    }
}

fn children_text(children: &[ImageId]) -> String {
    if children.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = children.iter().map(|c| c.short().to_owned()).collect();
        format!(" as the parent of image(s) {}", ids.join(", "))
    }
}

impl StorageError {
    /// An I/O error on `path`, or [`StorageError::NoSpace`] when the device
    /// is full (ENOSPC, EDQUOT).
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StorageError::NoSpace { path },
            _ => StorageError::Io { path, source },
        }
    }

    /// Whether the request was refused as it stood (a name taken, a layer
    /// missing, a state not allowing it) rather than the host failing it:
    /// the caller is told, the administrator need not be.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StorageError::NoSuchImage(_)
                | StorageError::AmbiguousImage { .. }
                | StorageError::ImageInUse { .. }
                | StorageError::TagExists { .. }
                | StorageError::NoWritableLayer(_)
                | StorageError::WritableLayerMismatch { .. }
                | StorageError::InvalidName { .. }
                | StorageError::InvalidDomain { .. }
        )
    }

    /// An errno from a `*at` call on `path`.
    pub(crate) fn errno(path: impl Into<PathBuf>, errno: nix::errno::Errno) -> StorageError {
        StorageError::io(path, io::Error::from_raw_os_error(errno as i32))
    }
}

impl From<PersistError> for StorageError {
    /// A full device is [`StorageError::NoSpace`] here too.
    fn from(error: PersistError) -> StorageError {
        match error {
            PersistError::Write { path, source } => StorageError::io(path, source),
            error => StorageError::State(error),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
