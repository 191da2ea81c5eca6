//! Reading an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`): choosing the manifest, verifying blobs.
//!
//! Every file is opened below the layout directory without following
//! symbolic links, so a layout cannot make the daemon read files outside
//! it. Every blob's size and sha256 are checked against its descriptor
//! before its content is used; JSON documents are read with a size limit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{OciProblem, Result, StorageError};
use super::id::{HashingReader, is_sha256_hex};

/// Largest index, manifest or config read.
const MAX_JSON: u64 = 4 << 20;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

/// One layer of the chosen image.
#[derive(Debug, Clone)]
pub struct OciLayer {
    pub descriptor: Descriptor,
    /// The config's diff_id for it (hex, without `sha256:`).
    pub diff_id: String,
}

/// The image chosen in a layout.
#[derive(Debug)]
pub struct OciImage {
    pub layout: PathBuf,
    dir: OwnedFd,
    pub manifest_digest: String,
    pub config: serde_json::Value,
    /// Bottom first.
    pub layers: Vec<OciLayer>,
}

fn problem(layout: &Path, problem: OciProblem) -> StorageError {
    StorageError::Oci {
        layout: layout.to_owned(),
        problem,
    }
}

/// The architecture name OCI uses for this machine.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl OciImage {
    /// Reads the layout at `layout` and picks the manifest named
    /// `reference` (its `org.opencontainers.image.ref.name`), or the only
    /// one. A multi-platform index resolves to this machine's platform.
    pub fn open(layout: &Path, reference: Option<&str>) -> Result<OciImage> {
        let dir: OwnedFd = File::open(layout)
            .map_err(|e| StorageError::io(layout, e))?
            .into();
        let mut image = OciImage {
            layout: layout.to_owned(),
            dir,
            manifest_digest: String::new(),
            config: serde_json::Value::Null,
            layers: Vec::new(),
        };
        let version: LayoutFile = image.read_json_file("oci-layout")?;
        if !version.image_layout_version.starts_with("1.") {
            return Err(image.problem(OciProblem::Unsupported(format!(
                "image layout version {} (lxvirt reads 1.x)",
                version.image_layout_version
            ))));
        }
        let index: Index = image.read_json_file("index.json")?;
        if index.schema_version != 2 {
            return Err(image.problem(OciProblem::Unsupported(format!(
                "index.json schemaVersion {}",
                index.schema_version
            ))));
        }
        let mut chosen = image.choose(&index.manifests, reference)?;
        // A nested index (multi-platform image): pick this platform.
        for _ in 0..4 {
            if !INDEX_TYPES.contains(&chosen.media_type.as_str()) {
                break;
            }
            let nested: Index = image.read_json_blob(&chosen)?;
            let arch = host_architecture();
            let matching: Vec<&Descriptor> = nested
                .manifests
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_none_or(|p| p.os == "linux" && p.architecture == arch)
                })
                .collect();
            chosen = match matching.as_slice() {
                [one, ..] => (*one).clone(),
                [] => {
                    return Err(image.problem(OciProblem::NoManifest(format!(
                        "index {} has no manifest for linux/{arch}",
                        chosen.digest
                    ))));
                }
            };
        }
        if !chosen.media_type.is_empty() && !MANIFEST_TYPES.contains(&chosen.media_type.as_str()) {
            return Err(image.problem(OciProblem::Unsupported(format!(
                "manifest media type {}",
                chosen.media_type
            ))));
        }
        let manifest: Manifest = image.read_json_blob(&chosen)?;
        if manifest.schema_version != 2 {
            return Err(image.problem(OciProblem::Unsupported(format!(
                "manifest schemaVersion {}",
                manifest.schema_version
            ))));
        }
        let config: serde_json::Value = image.read_json_blob(&manifest.config)?;
        let diff_ids: Vec<String> = config
            .pointer("/rootfs/diff_ids")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| {
                image.problem(OciProblem::Malformed(format!(
                    "config {} has no rootfs.diff_ids",
                    manifest.config.digest
                )))
            })?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(image.problem(OciProblem::Malformed(format!(
                "the manifest has {} layers, the config {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            ))));
        }
        for (descriptor, diff_id) in manifest.layers.into_iter().zip(diff_ids) {
            check_layer_type(&descriptor.media_type).map_err(|p| image.problem(p))?;
            let hex = diff_id
                .strip_prefix("sha256:")
                .filter(|h| is_sha256_hex(h))
                .ok_or_else(|| {
                    image.problem(OciProblem::Unsupported(format!(
                        "diff_id {diff_id} (lxvirt reads sha256 digests)"
                    )))
                })?;
            image.layers.push(OciLayer {
                descriptor,
                diff_id: hex.to_owned(),
            });
        }
        image.manifest_digest = chosen.digest;
        image.config = config;
        Ok(image)
    }

    fn problem(&self, p: OciProblem) -> StorageError {
        problem(&self.layout, p)
    }

    fn choose(&self, manifests: &[Descriptor], reference: Option<&str>) -> Result<Descriptor> {
        let names: Vec<&str> = manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
            .collect();
        let found: Vec<&Descriptor> = match reference {
            Some(r) => manifests
                .iter()
                .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(r))
                .collect(),
            None => manifests.iter().collect(),
        };
        match (found.as_slice(), reference) {
            ([one], _) => Ok((*one).clone()),
            ([], None) => Err(self.problem(OciProblem::NoManifest(
                "index.json lists no manifest".to_owned(),
            ))),
            ([], Some(r)) => Err(self.problem(OciProblem::NoManifest(format!(
                "no manifest named '{r}' in index.json (names: {})",
                names.join(", ")
            )))),
            (_, _) => Err(self.problem(OciProblem::NoManifest(format!(
                "index.json has {} manifests; choose one by name (names: {})",
                found.len(),
                names.join(", ")
            )))),
        }
    }

    /// Opens `rel` below the layout directory, following no symbolic link.
    fn open_file(&self, rel: &str) -> Result<File> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        match openat2(self.dir.as_fd(), rel, how) {
            Ok(fd) => {
                let file = File::from(fd);
                let meta = file
                    .metadata()
                    .map_err(|e| StorageError::io(self.layout.join(rel), e))?;
                if !meta.is_file() {
                    return Err(self.problem(OciProblem::Malformed(format!(
                        "{rel} is not a regular file"
                    ))));
                }
                Ok(file)
            }
            Err(Errno::ENOENT) => Err(self.problem(OciProblem::Missing(rel.to_owned()))),
            Err(Errno::ELOOP | Errno::EXDEV) => Err(self.problem(OciProblem::Malformed(format!(
                "{rel} is a symbolic link; blobs must be files inside the layout"
            )))),
            Err(e) => Err(StorageError::errno(self.layout.join(rel), e)),
        }
    }

    fn read_json_file<T: DeserializeOwned>(&self, rel: &str) -> Result<T> {
        let mut bytes = Vec::new();
        self.open_file(rel)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StorageError::io(self.layout.join(rel), e))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(self.problem(OciProblem::Malformed(format!(
                "{rel} is larger than {MAX_JSON} bytes"
            ))));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.problem(OciProblem::Malformed(format!("{rel}: {e}"))))
    }

    fn blob_path(&self, d: &Descriptor) -> Result<String> {
        let hex = d.digest.strip_prefix("sha256:").ok_or_else(|| {
            self.problem(OciProblem::Unsupported(format!(
                "digest {} (lxvirt reads sha256 digests)",
                d.digest
            )))
        })?;
        if !is_sha256_hex(hex) {
            return Err(self.problem(OciProblem::Malformed(format!(
                "digest {} is not valid",
                d.digest
            ))));
        }
        Ok(format!("blobs/sha256/{hex}"))
    }

    /// Opens a blob after checking its size against the descriptor.
    fn open_blob(&self, d: &Descriptor) -> Result<File> {
        let rel = self.blob_path(d)?;
        let file = self.open_file(&rel)?;
        let actual = file
            .metadata()
            .map_err(|e| StorageError::io(self.layout.join(&rel), e))?
            .len();
        if actual != d.size {
            return Err(self.problem(OciProblem::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual,
            }));
        }
        Ok(file)
    }

    /// Checks a blob's size and sha256; `progress` gets the bytes hashed.
    pub fn verify_blob(&self, d: &Descriptor, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let file = self.open_blob(d)?;
        let rel = self.blob_path(d)?;
        let mut reader = HashingReader::new(file);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| StorageError::io(self.layout.join(&rel), e))?;
            if n == 0 {
                break;
            }
            progress(n as u64);
        }
        let (digest, count) = reader
            .finish()
            .map_err(|e| StorageError::io(self.layout.join(&rel), e))?;
        if count != d.size {
            return Err(self.problem(OciProblem::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: count,
            }));
        }
        if format!("sha256:{digest}") != d.digest {
            return Err(self.problem(OciProblem::DigestMismatch {
                digest: d.digest.clone(),
                actual: digest,
            }));
        }
        Ok(())
    }

    /// A verified layer blob, opened for reading (verify it first with
    /// [`OciImage::verify_blob`]).
    pub fn layer_reader(&self, d: &Descriptor) -> Result<File> {
        self.open_blob(d)
    }

    /// Reads a small JSON blob, verified.
    fn read_json_blob<T: DeserializeOwned>(&self, d: &Descriptor) -> Result<T> {
        if d.size > MAX_JSON {
            return Err(self.problem(OciProblem::Malformed(format!(
                "blob {} is larger than {MAX_JSON} bytes",
                d.digest
            ))));
        }
        self.verify_blob(d, &mut |_| {})?;
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|e| StorageError::io(&self.layout, e))?;
        // Hash what was parsed too: the file could change between the two
        // reads.
        if format!("sha256:{}", super::id::sha256_hex(&bytes)) != d.digest {
            return Err(self.problem(OciProblem::DigestMismatch {
                digest: d.digest.clone(),
                actual: super::id::sha256_hex(&bytes),
            }));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.problem(OciProblem::Malformed(format!("blob {}: {e}", d.digest))))
    }
}

fn check_layer_type(media_type: &str) -> Result<(), OciProblem> {
    const KNOWN: [&str; 9] = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    ];
    if KNOWN.contains(&media_type) {
        Ok(())
    } else {
        Err(OciProblem::Unsupported(format!(
            "layer media type {media_type}"
        )))
    }
}
