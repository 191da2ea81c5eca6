//! The image store: read-only image layers with optional parents, imported
//! from root-filesystem tarballs and OCI image layouts, exported back to
//! tarballs, and a writable layer per container on top.
//!
//! - [`Store`]: the store in a state directory — import, list, inspect,
//!   tag, remove, export, and the writable layers (prepare, commit, remove).
//! - [`backend`]: how layers become a container's root: overlayfs, or
//!   device-mapper thin volumes ([`thin`]).
//!
//! See `docs/images.md` for the on-disk layout and the rules.

pub mod backend;
mod compress;
mod copy;
mod error;
mod extract;
mod id;
mod ids;
mod meta;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use meta::fuzz_state_files;
mod oci;
mod pack;
mod store;
mod sys;
pub mod thin;

pub use backend::{
    Availability, Backend, BackendKind, BlockMount, DeviceMapper, Layer, Overlay, OverlayMount,
    RootMount,
};
pub use compress::Compression;
pub use copy::CopyStats;
pub use error::{OciProblem, Result, StorageError, UnsafeEntry};
pub use extract::{DevicePolicy, ExtractStats};
pub use id::{ImageId, sha256_hex};
pub use ids::IdShift;
pub use meta::{ContainerMeta, ImageMeta, Source};
pub use pack::PackStats;
pub use store::{
    CommitReport, ExportOptions, ImageInfo, ImportOptions, ImportReport, OciImportOptions,
    OpenReport, Phase, Progress, Store, WritableInfo,
};

/// Writes the directory tree `dir` as a tarball (a root file system for
/// [`Store::import_tarball`]); used to build fixtures and by tools.
pub fn pack_dir(
    dir: &std::path::Path,
    compression: Compression,
    out: &mut dyn std::io::Write,
) -> Result<PackStats> {
    pack::pack(&[dir.to_owned()], false, compression, out, &mut |_| {})
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
