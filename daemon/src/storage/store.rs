//! The image store on disk.
//!
//! ```text
//! <state>/images/<id>/layer/       the read-only layer (overlay format)
//! <state>/images/<id>/meta.json    ImageMeta
//! <state>/images/tags.json         names → ids
//! <state>/containers/<domain>/     meta.json, upper/, work/, merged/
//! <state>/{images,containers}/.tmp-*   unfinished work, removed on open
//! ```
//!
//! Everything new is built in a `.tmp-*` directory beside its final place
//! and renamed in when complete, after a `syncfs`; removal renames out to a
//! `.tmp-*` name first. A crash leaves only `.tmp-*` directories, which
//! [`Store::open`] removes and reports.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::backend::{Availability, Backend, Layer, RootMount};
use super::compress::{self, Compression, CountingReader};
use super::error::{OciProblem, Result, StorageError};
use super::extract::{self, DevicePolicy, ExtractOptions, ExtractStats};
use super::id::{ImageId, check_domain_name, check_image_name, hex, sha256_hex};
use super::ids::IdShift;
use super::meta::{self, ContainerMeta, ImageMeta, Source, Tags};
use super::oci::OciImage;
use crate::persist;

/// The deepest parent chain followed (overlayfs stacks at most 500 layers).
const MAX_CHAIN: usize = 500;

/// What a long operation is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Checking OCI blob digests.
    Verify,
    /// Unpacking layer `layer` (from 1) of `layers`.
    Unpack { layer: usize, layers: usize },
    /// Copying a writable layer for a commit.
    Copy,
    /// Writing an export.
    Export,
}

/// Progress of a long operation: `done` of `total` bytes (`total` is 0 when
/// unknown). Reported at most every few MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// How often progress is reported.
pub(crate) const PROGRESS_STEP: u64 = 4 << 20;

/// The read buffer of a layer of `len` bytes: large enough to read a big
/// layer in few system calls, no larger than the layer itself, since a
/// buffer above malloc's mmap threshold is mapped, faulted in and
/// unmapped again at every import.
fn layer_buffer(len: u64) -> usize {
    const MIN: u64 = 8 << 10;
    const MAX: u64 = 256 << 10;
    len.clamp(MIN, MAX) as usize
}

/// Options of [`Store::import_tarball`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// A name (tag) for the new image.
    pub name: Option<String>,
    /// The parent image (name or id); `None` makes a platform image.
    pub parent: Option<String>,
    pub devices: DevicePolicy,
}

/// Options of [`Store::import_oci`].
#[derive(Debug, Clone, Default)]
pub struct OciImportOptions {
    /// The manifest to import, by its `org.opencontainers.image.ref.name`
    /// annotation; `None` takes the only one.
    pub reference: Option<String>,
    /// A name (tag) for the top image.
    pub name: Option<String>,
    pub devices: DevicePolicy,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    /// The image imported (for OCI, the top layer's).
    pub id: ImageId,
    /// Every layer of the import, bottom first, and whether it was already
    /// in the store (the same content on the same parent).
    pub layers: Vec<(ImageId, bool)>,
    /// Totals over the layers unpacked.
    pub stats: ExtractStats,
    /// Bytes read from the source (compressed).
    pub source_bytes: u64,
    pub seconds: f64,
}

/// One image as listed or inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: ImageId,
    /// Its names (tags), sorted.
    pub names: Vec<String>,
    pub parent: Option<ImageId>,
    /// The image and its ancestors, top first (as overlay's lowerdir).
    pub chain: Vec<ImageId>,
    pub created: u64,
    /// Bytes of file content in this layer.
    pub size: u64,
    /// Bytes of file content in the whole chain.
    pub total_size: u64,
    pub source: Source,
    /// Images whose parent this is.
    pub children: Vec<ImageId>,
    /// Domains with a writable layer on this image.
    pub domains: Vec<String>,
    pub diff_id: Option<String>,
    pub config: Option<serde_json::Value>,
}

/// A domain's writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableInfo {
    pub domain: String,
    pub image: ImageId,
    pub created: u64,
    pub dir: PathBuf,
}

impl WritableInfo {
    /// Kept for after its domain is gone (undefined with
    /// `KEEP_WRITABLE_LAYER`): see [`Store::mark_writable_kept`].
    pub fn is_kept(&self) -> bool {
        self.dir.join(KEPT_MARK).exists()
    }
}

/// The file whose presence in a writable layer's directory keeps it when
/// no domain has it.
const KEPT_MARK: &str = "kept";

/// What a commit did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitReport {
    pub id: ImageId,
    pub parent: ImageId,
    pub size: u64,
    pub files: u64,
    pub seconds: f64,
}

/// How to export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Only the image's own layer, whiteouts as `.wh.` entries (a layer tar
    /// for `--parent` imports); otherwise the merged file system of the
    /// whole chain.
    pub layer_only: bool,
    pub compression: Compression,
}

/// What [`Store::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Unfinished work of an earlier run, removed.
    pub removed: Vec<PathBuf>,
    /// Tags naming images that are gone, dropped.
    pub dangling_tags: Vec<String>,
}

/// The image store. One per state directory (the daemon's instance lock
/// keeps a second daemon away); its methods may run on several threads: the
/// metadata changes take an internal lock, the long copies do not.
#[derive(Debug)]
pub struct Store {
    images: PathBuf,
    containers: PathBuf,
    backend: Box<dyn Backend>,
    /// Set owners from archives (the store runs as root).
    owners: bool,
    lock: Mutex<()>,
}

/// A `.tmp-*` directory removed on drop unless kept.
#[derive(Debug)]
pub(crate) struct TmpDir {
    pub(crate) path: PathBuf,
    keep: bool,
}

impl TmpDir {
    fn new(parent: &Path, what: &str) -> Result<TmpDir> {
        let path = parent.join(format!(".tmp-{what}-{}", random_hex(8)));
        fs::create_dir(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(TmpDir { path, keep: false })
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let data: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex(&data)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    persist::sync_dir(dir).map_err(|e| StorageError::io(dir, e))
}

impl Store {
    /// Opens (creating) the store in `state_dir` with `backend`, removing
    /// what an interrupted run left behind. Fails when the backend is not
    /// available on this host.
    pub fn open(state_dir: &Path, backend: Box<dyn Backend>) -> Result<(Store, OpenReport)> {
        if let Availability::Unavailable(reason) = backend.availability() {
            return Err(StorageError::BackendUnavailable {
                backend: backend.kind().to_string(),
                reason,
            });
        }
        let images = state_dir.join("images");
        let containers = state_dir.join("containers");
        for dir in [&images, &containers] {
            fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        }
        backend.open(state_dir)?;
        let store = Store {
            images,
            containers,
            backend,
            owners: nix::unistd::geteuid().is_root(),
            lock: Mutex::new(()),
        };
        let mut report = OpenReport::default();
        for dir in [&store.images, &store.containers] {
            for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
                let entry = entry.map_err(|e| StorageError::io(dir, e))?;
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let path = entry.path();
                    let removed = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    removed.map_err(|e| StorageError::io(&path, e))?;
                    report.removed.push(path);
                }
            }
        }
        {
            let _guard = store.guard();
            let mut tags = store.read_tags()?;
            let before = tags.tags.clone();
            tags.tags.retain(|_, id| store.image_dir(id).exists());
            if tags.tags != before {
                report.dangling_tags = before
                    .keys()
                    .filter(|k| !tags.tags.contains_key(*k))
                    .cloned()
                    .collect();
                store.write_tags(&tags)?;
            }
        }
        Ok((store, report))
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock leaves nothing half-done on disk
        // (every change is a rename), so a poisoned lock is usable.
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn image_dir(&self, id: &ImageId) -> PathBuf {
        self.images.join(id.as_str())
    }

    /// The read-only layer directory of an image.
    pub fn layer_dir(&self, id: &ImageId) -> PathBuf {
        self.image_dir(id).join("layer")
    }

    fn container_dir(&self, domain: &str) -> PathBuf {
        self.containers.join(domain)
    }

    fn tags_path(&self) -> PathBuf {
        self.images.join("tags.json")
    }

    fn read_tags(&self) -> Result<Tags> {
        let path = self.tags_path();
        if !path.exists() {
            return Ok(Tags::default());
        }
        meta::read(&path)
    }

    fn write_tags(&self, tags: &Tags) -> Result<()> {
        meta::write(&self.tags_path(), tags)
    }

    fn read_meta(&self, id: &ImageId) -> Result<ImageMeta> {
        let path = self.image_dir(id).join("meta.json");
        if !path.exists() {
            return Err(StorageError::NoSuchImage(id.to_string()));
        }
        meta::read(&path)
    }

    fn all_ids(&self) -> Result<Vec<ImageId>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.images).map_err(|e| StorageError::io(&self.images, e))? {
            let entry = entry.map_err(|e| StorageError::io(&self.images, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(ImageId::parse) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Finds an image by name, full id (with or without `sha256:`) or a
    /// unique id prefix of at least 4 digits.
    pub fn resolve(&self, reference: &str) -> Result<ImageId> {
        let tags = self.read_tags()?;
        if let Some(id) = tags.tags.get(reference) {
            return Ok(id.clone());
        }
        if let Some(id) = ImageId::parse(reference) {
            return if self.image_dir(&id).exists() {
                Ok(id)
            } else {
                Err(StorageError::NoSuchImage(reference.to_owned()))
            };
        }
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<ImageId> = self
                .all_ids()?
                .into_iter()
                .filter(|id| id.as_str().starts_with(prefix))
                .collect();
            return match matches.len() {
                0 => Err(StorageError::NoSuchImage(reference.to_owned())),
                1 => Ok(matches.into_iter().next().unwrap_or_else(|| unreachable!())),
                _ => Err(StorageError::AmbiguousImage {
                    reference: reference.to_owned(),
                }),
            };
        }
        Err(StorageError::NoSuchImage(reference.to_owned()))
    }

    /// The image and its ancestors with their layer directories, top
    /// first, as a backend takes them.
    fn layers(&self, id: &ImageId) -> Result<Vec<Layer>> {
        Ok(self
            .chain(id)?
            .into_iter()
            .map(|id| Layer {
                dir: self.layer_dir(&id),
                id,
            })
            .collect())
    }

    /// The image and its ancestors, top first.
    pub fn chain(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        let mut chain = vec![id.clone()];
        let mut meta = self.read_meta(id)?;
        while let Some(parent) = meta.parent {
            if chain.len() >= MAX_CHAIN || chain.contains(&parent) {
                return Err(StorageError::ChainTooLong {
                    layers: chain.len(),
                });
            }
            meta = self.read_meta(&parent)?;
            chain.push(parent);
        }
        Ok(chain)
    }

    // ---- import -----------------------------------------------------------

    /// Checks the name is free (or already names `id`, when known).
    fn check_tag_free(&self, name: &str, id: Option<&ImageId>) -> Result<()> {
        if let Some(existing) = self.read_tags()?.tags.get(name)
            && Some(existing) != id
        {
            return Err(StorageError::TagExists {
                name: name.to_owned(),
                image: existing.clone(),
            });
        }
        Ok(())
    }

    /// Moves a finished `.tmp-*` image directory into place as `id` (or
    /// drops it when `id` is already there) and tags it. Returns whether the
    /// image was already present.
    fn install(&self, tmp: &mut TmpDir, id: &ImageId, name: Option<&str>) -> Result<bool> {
        let _guard = self.guard();
        if let Some(name) = name {
            self.check_tag_free(name, Some(id))?;
        }
        let dest = self.image_dir(id);
        let present = dest.exists();
        if !present {
            // One syncfs makes the whole layer durable before it appears.
            let dir = File::open(&tmp.path).map_err(|e| StorageError::io(&tmp.path, e))?;
            nix::unistd::syncfs(dir.as_fd()).map_err(|e| StorageError::errno(&tmp.path, e))?;
            fs::rename(&tmp.path, &dest).map_err(|e| StorageError::io(&dest, e))?;
            tmp.keep = true;
            fsync_dir(&self.images)?;
        }
        if let Some(name) = name {
            let mut tags = self.read_tags()?;
            if tags.tags.get(name) != Some(id) {
                tags.tags.insert(name.to_owned(), id.clone());
                self.write_tags(&tags)?;
            }
        }
        Ok(present)
    }

    /// Imports a root-filesystem (or layer) tarball, plain, gzip or zstd.
    pub fn import_tarball(
        &self,
        tarball: &Path,
        options: &ImportOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImportReport> {
        let file = File::open(tarball).map_err(|e| StorageError::io(tarball, e))?;
        self.import_tarball_file(file, tarball, options, progress)
    }

    /// As [`Store::import_tarball`], from an open file (or pipe: the
    /// progress total is then unknown); `tarball` names it in errors and
    /// in the image's source.
    pub fn import_tarball_file(
        &self,
        file: File,
        tarball: &Path,
        options: &ImportOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImportReport> {
        let started = Instant::now();
        if let Some(name) = &options.name {
            // Whether the name is free is known once the id is: the same
            // content may already carry it.
            check_image_name(name)?;
        }
        let parent = match &options.parent {
            Some(p) => Some(self.resolve(p)?),
            None => None,
        };
        let total = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        let mut report = |done| {
            progress(Progress {
                phase: Phase::Unpack {
                    layer: 1,
                    layers: 1,
                },
                done,
                total,
            })
        };
        let counting = CountingReader::new(file, PROGRESS_STEP, &mut report);
        let (stats, tmp) = self.unpack_layer(
            BufReader::with_capacity(layer_buffer(total), counting),
            tarball,
            parent.is_some(),
            options.devices,
        )?;
        let id = ImageId::chain(parent.as_ref(), &stats.diff_id);
        let mut tmp = tmp;
        let meta = ImageMeta {
            id: id.clone(),
            parent: parent.clone(),
            created: meta::now(),
            size: stats.size,
            diff_id: Some(stats.diff_id.clone()),
            source: Source::Tarball {
                path: tarball.to_owned(),
            },
            config: None,
        };
        meta::write(&tmp.path.join("meta.json"), &meta)?;
        let present = self.install(&mut tmp, &id, options.name.as_deref())?;
        Ok(ImportReport {
            id: id.clone(),
            layers: vec![(id, present)],
            stats,
            source_bytes: total,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Imports an image from an OCI image layout directory: every layer
    /// becomes an image whose parent is the layer below; the top one gets
    /// the name and keeps the image config. Blobs are verified (size and
    /// sha256) before use and each layer's unpacked content against the
    /// config's diff_id; layers already in the store are reused. Nothing is
    /// installed until every missing layer has unpacked.
    pub fn import_oci(
        &self,
        layout: &Path,
        options: &OciImportOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImportReport> {
        let started = Instant::now();
        if let Some(name) = &options.name {
            check_image_name(name)?;
        }
        let image = OciImage::open(layout, options.reference.as_deref())?;
        if image.layers.is_empty() {
            return Err(StorageError::Oci {
                layout: layout.to_owned(),
                problem: OciProblem::Malformed("the manifest has no layers".to_owned()),
            });
        }
        let mut ids: Vec<ImageId> = Vec::new();
        for layer in &image.layers {
            ids.push(ImageId::chain(ids.last(), &layer.diff_id));
        }
        let top = ids.len() - 1;
        if let Some(name) = &options.name {
            self.check_tag_free(name, Some(&ids[top]))?;
        }

        let total: u64 = image.layers.iter().map(|l| l.descriptor.size).sum();
        let (mut done, mut reported) = (0u64, 0u64);
        for layer in &image.layers {
            image.verify_blob(&layer.descriptor, &mut |n| {
                done += n;
                if done - reported >= PROGRESS_STEP {
                    reported = done;
                    progress(Progress {
                        phase: Phase::Verify,
                        done,
                        total,
                    });
                }
            })?;
        }
        progress(Progress {
            phase: Phase::Verify,
            done,
            total,
        });

        let mut pending = Vec::new();
        let mut totals = ExtractStats::default();
        let layers = image.layers.len();
        for (i, layer) in image.layers.iter().enumerate() {
            if self.image_dir(&ids[i]).exists() {
                continue;
            }
            let file = image.layer_reader(&layer.descriptor)?;
            let size = layer.descriptor.size;
            let mut report = |done| {
                progress(Progress {
                    phase: Phase::Unpack {
                        layer: i + 1,
                        layers,
                    },
                    done,
                    total: size,
                })
            };
            let counting = CountingReader::new(file, PROGRESS_STEP, &mut report);
            let blob_path = layout.join(layer.descriptor.digest.replacen(
                "sha256:",
                "blobs/sha256/",
                1,
            ));
            let (stats, tmp) = self.unpack_layer(
                BufReader::with_capacity(layer_buffer(size), counting),
                &blob_path,
                i > 0,
                options.devices,
            )?;
            if stats.diff_id != layer.diff_id {
                return Err(StorageError::Oci {
                    layout: layout.to_owned(),
                    problem: OciProblem::DiffIdMismatch {
                        layer: layer.descriptor.digest.clone(),
                        expected: format!("sha256:{}", layer.diff_id),
                        actual: format!("sha256:{}", stats.diff_id),
                    },
                });
            }
            let meta = ImageMeta {
                id: ids[i].clone(),
                parent: i.checked_sub(1).map(|p| ids[p].clone()),
                created: meta::now(),
                size: stats.size,
                diff_id: Some(stats.diff_id.clone()),
                source: Source::Oci {
                    layout: layout.to_owned(),
                    manifest: image.manifest_digest.clone(),
                    layer: layer.descriptor.digest.clone(),
                },
                config: (i == top).then(|| image.config.clone()),
            };
            meta::write(&tmp.path.join("meta.json"), &meta)?;
            totals.tar_bytes += stats.tar_bytes;
            totals.size += stats.size;
            totals.entries += stats.entries;
            totals.whiteouts += stats.whiteouts;
            totals.skipped_devices += stats.skipped_devices;
            totals.dropped_xattrs += stats.dropped_xattrs;
            pending.push((i, tmp));
        }
        let mut fresh = vec![false; ids.len()];
        for (i, mut tmp) in pending {
            let name = if i == top {
                options.name.as_deref()
            } else {
                None
            };
            fresh[i] = !self.install(&mut tmp, &ids[i], name)?;
        }
        if let Some(name) = &options.name
            && !fresh[top]
        {
            self.tag(ids[top].as_str(), name)?;
        }
        Ok(ImportReport {
            id: ids[top].clone(),
            layers: ids.iter().cloned().zip(fresh.iter().map(|f| !f)).collect(),
            stats: totals,
            source_bytes: total,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Unpacks a (possibly compressed) layer tar into a new `.tmp-*`
    /// directory's `layer/`.
    pub(crate) fn unpack_layer(
        &self,
        reader: impl std::io::BufRead,
        source: &Path,
        has_parent: bool,
        devices: DevicePolicy,
    ) -> Result<(ExtractStats, TmpDir)> {
        let tmp = TmpDir::new(&self.images, "import")?;
        let layer = tmp.path.join("layer");
        fs::create_dir(&layer).map_err(|e| StorageError::io(&layer, e))?;
        let decoded = compress::decoder(reader).map_err(|source_err| StorageError::BadArchive {
            archive: source.to_owned(),
            source: source_err,
        })?;
        let (_, decoded) = decoded.map_err(|format| StorageError::UnsupportedCompression {
            archive: source.to_owned(),
            format,
        })?;
        let stats = extract::extract(
            decoded,
            &layer,
            source,
            ExtractOptions {
                has_parent,
                devices,
                owners: self.owners,
            },
        )?;
        Ok((stats, tmp))
    }

    // ---- list, inspect, tag, remove ----------------------------------------

    /// Every image, sorted by id.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let ids = self.all_ids()?;
        let mut metas = BTreeMap::new();
        for id in &ids {
            metas.insert(id.clone(), self.read_meta(id)?);
        }
        let tags = self.read_tags()?;
        let writable = self.writable_layers()?;
        let mut infos = Vec::new();
        for id in &ids {
            infos.push(self.info(id, &metas, &tags, &writable)?);
        }
        Ok(infos)
    }

    /// One image, by name or id.
    pub fn inspect(&self, reference: &str) -> Result<ImageInfo> {
        let id = self.resolve(reference)?;
        let mut metas = BTreeMap::new();
        for other in self.all_ids()? {
            metas.insert(other.clone(), self.read_meta(&other)?);
        }
        self.info(&id, &metas, &self.read_tags()?, &self.writable_layers()?)
    }

    fn info(
        &self,
        id: &ImageId,
        metas: &BTreeMap<ImageId, ImageMeta>,
        tags: &Tags,
        writable: &[WritableInfo],
    ) -> Result<ImageInfo> {
        let meta = metas
            .get(id)
            .ok_or_else(|| StorageError::NoSuchImage(id.to_string()))?;
        let mut chain = vec![id.clone()];
        let mut total_size = meta.size;
        let mut cur = meta;
        while let Some(parent) = &cur.parent {
            if chain.len() >= MAX_CHAIN || chain.contains(parent) {
                return Err(StorageError::ChainTooLong {
                    layers: chain.len(),
                });
            }
            cur = metas
                .get(parent)
                .ok_or_else(|| StorageError::NoSuchImage(parent.to_string()))?;
            total_size += cur.size;
            chain.push(parent.clone());
        }
        Ok(ImageInfo {
            id: id.clone(),
            names: tags
                .tags
                .iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| k.clone())
                .collect(),
            parent: meta.parent.clone(),
            chain,
            created: meta.created,
            size: meta.size,
            total_size,
            source: meta.source.clone(),
            children: metas
                .values()
                .filter(|m| m.parent.as_ref() == Some(id))
                .map(|m| m.id.clone())
                .collect(),
            domains: writable
                .iter()
                .filter(|w| &w.image == id)
                .map(|w| w.domain.clone())
                .collect(),
            diff_id: meta.diff_id.clone(),
            config: meta.config.clone(),
        })
    }

    /// Names `reference` `name`. Idempotent; refused when `name` names
    /// another image.
    pub fn tag(&self, reference: &str, name: &str) -> Result<ImageId> {
        check_image_name(name)?;
        let _guard = self.guard();
        let id = self.resolve(reference)?;
        self.check_tag_free(name, Some(&id))?;
        let mut tags = self.read_tags()?;
        if tags.tags.insert(name.to_owned(), id.clone()).is_none() {
            self.write_tags(&tags)?;
        }
        Ok(id)
    }

    /// Removes the name `name`; returns the image it named.
    pub fn untag(&self, name: &str) -> Result<ImageId> {
        let _guard = self.guard();
        let mut tags = self.read_tags()?;
        let id = tags
            .tags
            .remove(name)
            .ok_or_else(|| StorageError::NoSuchImage(name.to_owned()))?;
        self.write_tags(&tags)?;
        Ok(id)
    }

    /// Removes an image, refused while a child image or a domain uses it:
    /// domains with a writable layer on it, and `also_used_by` (domains
    /// whose definition names it but that never started). Its names go with
    /// it, and so do ancestors left without name, child or user (the
    /// intermediate layers of an OCI import). Returns the ids removed.
    pub fn remove(&self, reference: &str, also_used_by: &[String]) -> Result<Vec<ImageId>> {
        let _guard = self.guard();
        let id = self.resolve(reference)?;
        let mut metas = BTreeMap::new();
        for other in self.all_ids()? {
            metas.insert(other.clone(), self.read_meta(&other)?);
        }
        let writable = self.writable_layers()?;
        let children: Vec<ImageId> = metas
            .values()
            .filter(|m| m.parent.as_ref() == Some(&id))
            .map(|m| m.id.clone())
            .collect();
        let mut domains: BTreeSet<String> = writable
            .iter()
            .filter(|w| w.image == id)
            .map(|w| w.domain.clone())
            .collect();
        domains.extend(also_used_by.iter().cloned());
        if !children.is_empty() || !domains.is_empty() {
            return Err(StorageError::ImageInUse {
                image: id,
                domains: domains.into_iter().collect(),
                children,
            });
        }
        let mut tags = self.read_tags()?;
        let mut removed = Vec::new();
        let mut next = Some(id);
        while let Some(victim) = next.take() {
            tags.tags.retain(|_, v| *v != victim);
            self.backend.remove_image(&victim)?;
            self.write_tags(&tags)?;
            let dir = self.image_dir(&victim);
            let gone = self.images.join(format!(".tmp-rm-{}", victim.short()));
            fs::rename(&dir, &gone).map_err(|e| StorageError::io(&dir, e))?;
            fs::remove_dir_all(&gone).map_err(|e| StorageError::io(&gone, e))?;
            let parent = metas.get(&victim).and_then(|m| m.parent.clone());
            metas.remove(&victim);
            removed.push(victim);
            // Walk down to an ancestor nobody names, stacks on or uses.
            if let Some(parent) = parent {
                let named = tags.tags.values().any(|v| *v == parent);
                let has_child = metas.values().any(|m| m.parent.as_ref() == Some(&parent));
                let used = writable.iter().any(|w| w.image == parent);
                if !named && !has_child && !used {
                    next = Some(parent);
                }
            }
        }
        fsync_dir(&self.images)?;
        Ok(removed)
    }

    // ---- writable layers ---------------------------------------------------

    /// Every domain's writable layer.
    pub fn writable_layers(&self) -> Result<Vec<WritableInfo>> {
        let mut out = Vec::new();
        for entry in
            fs::read_dir(&self.containers).map_err(|e| StorageError::io(&self.containers, e))?
        {
            let entry = entry.map_err(|e| StorageError::io(&self.containers, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path().join("meta.json");
            // Not a writable layer (the store writes meta.json before the
            // rename that makes one appear).
            if name.starts_with('.') || !path.exists() {
                continue;
            }
            let meta: ContainerMeta = meta::read(&path)?;
            out.push(WritableInfo {
                domain: meta.domain,
                image: meta.image,
                created: meta.created,
                dir: entry.path(),
            });
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }

    /// A domain's writable layer, if it has one.
    pub fn writable_layer(&self, domain: &str) -> Result<Option<WritableInfo>> {
        check_domain_name(domain)?;
        let dir = self.container_dir(domain);
        let path = dir.join("meta.json");
        if !path.exists() {
            return Ok(None);
        }
        let meta: ContainerMeta = meta::read(&path)?;
        Ok(Some(WritableInfo {
            domain: meta.domain,
            image: meta.image,
            created: meta.created,
            dir,
        }))
    }

    /// Says whether `domain`'s writable layer (if it has one) stays once
    /// the domain is gone: set before an undefine that keeps it, cleared
    /// before one that does not. A layer without a domain and without the
    /// mark is one whose removal a killed daemon never finished
    /// (the daemon removes it at its next start).
    pub fn mark_writable_kept(&self, domain: &str, kept: bool) -> Result<()> {
        check_domain_name(domain)?;
        let dir = self.container_dir(domain);
        if !dir.join("meta.json").exists() {
            return Ok(());
        }
        let mark = dir.join(KEPT_MARK);
        if kept {
            persist::write_atomic(&mark, b"", 0o644).map_err(|e| StorageError::io(&mark, e))
        } else {
            match fs::remove_file(&mark) {
                Ok(()) => fsync_dir(&dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StorageError::io(&mark, e)),
            }
        }
    }

    /// The root mount of `domain` on `image`: creates its writable layer on
    /// first use and returns the existing one afterwards (it survives
    /// restarts). Refused when the domain's layer sits on another image.
    pub fn prepare(&self, image: &str, domain: &str) -> Result<RootMount> {
        check_domain_name(domain)?;
        let _guard = self.guard();
        let id = self.resolve(image)?;
        let chain = self.layers(&id)?;
        let dir = self.container_dir(domain);
        match self.writable_layer(domain)? {
            Some(existing) if existing.image != id => {
                return Err(StorageError::WritableLayerMismatch {
                    domain: domain.to_owned(),
                    current: existing.image,
                    requested: id,
                });
            }
            Some(_) => {}
            None => {
                let mut tmp = TmpDir::new(&self.containers, domain)?;
                self.backend.create_writable(&tmp.path)?;
                meta::write(
                    &tmp.path.join("meta.json"),
                    &ContainerMeta {
                        domain: domain.to_owned(),
                        image: id.clone(),
                        created: meta::now(),
                    },
                )?;
                fs::rename(&tmp.path, &dir).map_err(|e| StorageError::io(&dir, e))?;
                tmp.keep = true;
                fsync_dir(&self.containers)?;
            }
        }
        self.backend.root_mount(&chain, &dir)
    }

    /// Removes a domain's writable layer (the container must be stopped and
    /// its root unmounted). Returns whether there was one.
    pub fn remove_writable(&self, domain: &str) -> Result<bool> {
        check_domain_name(domain)?;
        let _guard = self.guard();
        let dir = self.container_dir(domain);
        if !dir.exists() {
            return Ok(false);
        }
        self.backend.remove_writable(&dir)?;
        let gone = self
            .containers
            .join(format!(".tmp-rm-{domain}-{}", random_hex(4)));
        fs::rename(&dir, &gone).map_err(|e| StorageError::io(&dir, e))?;
        fsync_dir(&self.containers)?;
        fs::remove_dir_all(&gone).map_err(|e| StorageError::io(&gone, e))?;
        Ok(true)
    }

    /// Turns a stopped or paused domain's writable layer into a new
    /// read-only image whose parent is the domain's image, named `name`.
    /// The writable layer is copied (it stays as it is, the domain keeps
    /// running on its old image); whiteouts and opaque directories carry
    /// over.
    pub fn commit(
        &self,
        domain: &str,
        name: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<CommitReport> {
        self.commit_from(domain, name, None, progress)
    }

    /// [`commit`](Self::commit) of a writable layer whose files are stored
    /// in the host ids `shift` (a container with an allocated id range on
    /// the overlay backend): the new layer holds them as ids inside.
    pub fn commit_from(
        &self,
        domain: &str,
        name: &str,
        shift: Option<IdShift>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<CommitReport> {
        let started = Instant::now();
        check_image_name(name)?;
        let writable = self
            .writable_layer(domain)?
            .ok_or_else(|| StorageError::NoWritableLayer(domain.to_owned()))?;
        self.check_tag_free(name, None)?;
        let mut tmp = TmpDir::new(&self.images, "commit")?;
        let layer = tmp.path.join("layer");
        let id = ImageId::parse(&sha256_hex(
            format!(
                "commit {} {} {} {}",
                writable.image,
                domain,
                meta::now(),
                random_hex(16)
            )
            .as_bytes(),
        ))
        .unwrap_or_else(|| unreachable!("sha256_hex gives 64 hex digits"));
        let chain = self.layers(&writable.image)?;
        let stats = self.backend.commit(
            &writable.dir,
            &chain,
            &id,
            &layer,
            self.owners,
            &mut |done| {
                progress(Progress {
                    phase: Phase::Copy,
                    done,
                    total: 0,
                })
            },
        )?;
        if let Some(shift) = shift {
            super::ids::unshift_tree(&layer, shift)?;
        }
        let meta = ImageMeta {
            id: id.clone(),
            parent: Some(writable.image.clone()),
            created: meta::now(),
            size: stats.size,
            diff_id: None,
            source: Source::Commit {
                domain: domain.to_owned(),
            },
            config: None,
        };
        meta::write(&tmp.path.join("meta.json"), &meta)?;
        self.install(&mut tmp, &id, Some(name))?;
        Ok(CommitReport {
            id,
            parent: writable.image,
            size: stats.size,
            files: stats.files,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    // ---- export ------------------------------------------------------------

    /// Writes an image as a tarball to `out`: the merged file system of its
    /// chain, or its own layer only.
    pub fn export(
        &self,
        reference: &str,
        options: ExportOptions,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<super::pack::PackStats> {
        let id = self.resolve(reference)?;
        let chain = if options.layer_only {
            vec![id.clone()]
        } else {
            self.chain(&id)?
        };
        let layers: Vec<PathBuf> = chain.iter().map(|i| self.layer_dir(i)).collect();
        let total = self.inspect(id.as_str())?.total_size;
        super::pack::pack(
            &layers,
            options.layer_only,
            options.compression,
            out,
            &mut |done| {
                progress(Progress {
                    phase: Phase::Export,
                    done,
                    total,
                })
            },
        )
    }
}
