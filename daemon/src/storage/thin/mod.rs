//! The device-mapper thin-provisioning backend.
//!
//! The store's layer directories stay the canonical content (import,
//! export and list do not change). This backend materialises a thin volume
//! per image when a container first needs it: a platform image is a new
//! thin volume with a file system into which its layer is copied; a child
//! image is a thin snapshot of its parent's volume with its layer applied
//! (whiteouts and opaque directories as deletions). A container's writable
//! layer is a thin snapshot of its image's volume, mounted as its root.
//! Commit snapshots the container's volume as the new image's volume and
//! writes the difference against the parent's volume as the new image's
//! layer directory, so that export and the overlay backend still work.
//!
//! Which thin id holds what is in `<state>/thin/volumes.json` (versioned,
//! atomic), so a restarted daemon reopens the pool and finds its volumes.
//! See `docs/images.md`.

mod diff;
mod fs;
mod loopdev;
mod pool;
mod state;

use std::fs as stdfs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

pub use fs::FsType;

use super::backend::{Availability, Backend, BackendKind, BlockMount, Layer, RootMount};
use super::copy::{Copier, CopyStats, Target};
use super::error::{Result, StorageError};
use super::id::{ImageId, sha256_hex};
use fs::Mounted;
use pool::Pool;
use state::{StateFile, ThinState, Volume};
/// The thin backend's state file, for the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) type ThinStateFile = ThinState;

/// Where the pool's blocks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSource {
    /// Sparse files `data` and `metadata` in `dir` (default
    /// `<state>/thin`), on loop devices; `size` is the data file's size.
    Files { dir: Option<PathBuf>, size: u64 },
    /// A whole block device, given to the pool (its start holds the
    /// metadata).
    Device(PathBuf),
}

/// The device-mapper backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinConfig {
    pub pool: PoolSource,
    /// The file system made in image volumes.
    pub fs: FsType,
    /// The (virtual) size of each volume, in bytes: the most a container's
    /// root can hold. Space is taken from the pool only when written.
    pub volume_size: u64,
    /// `/dev/mapper/control` on a real host.
    pub control: PathBuf,
    /// The SELinux context (`context=`) of the backend's own mounts of
    /// volumes (filling an image's, comparing for a commit), when SELinux
    /// is active: the base container file label, which a confined daemon
    /// may write. Containers mount their volumes with their own label.
    pub mount_context: Option<String>,
}

/// Default pool size (sparse: taken only when written).
pub const DEFAULT_POOL_SIZE: u64 = 20 << 30;
/// Default volume size.
pub const DEFAULT_VOLUME_SIZE: u64 = 10 << 30;

impl Default for ThinConfig {
    fn default() -> ThinConfig {
        ThinConfig {
            pool: PoolSource::Files {
                dir: None,
                size: DEFAULT_POOL_SIZE,
            },
            fs: FsType::Ext4,
            volume_size: DEFAULT_VOLUME_SIZE,
            control: PathBuf::from("/dev/mapper/control"),
            mount_context: None,
        }
    }
}

/// Parses a size: a number of bytes with an optional `K`, `M`, `G` or `T`
/// suffix (powers of 1024; `KiB`, `MiB`, … too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size; write e.g. 512M or 20G"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("'{text}': unknown unit; use K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// The smallest pool and volume the backend takes.
const MIN_SIZE: u64 = 64 << 20;

/// The device-mapper thin-provisioning backend.
#[derive(Debug)]
pub struct DeviceMapper {
    config: ThinConfig,
    inner: Mutex<Option<Inner>>,
}

/// What the backend knows once the store has opened it.
#[derive(Debug)]
struct Inner {
    state_dir: PathBuf,
    /// `<state>/thin`: the state file, the pool files by default, mount
    /// points for the backend's own work.
    dir: PathBuf,
    file: StateFile,
    state: ThinState,
    prefix: String,
    /// Opened on first use.
    pool: Option<Pool>,
}

impl DeviceMapper {
    pub fn new(config: ThinConfig) -> DeviceMapper {
        DeviceMapper {
            config,
            inner: Mutex::new(None),
        }
    }

    fn unavailable(&self, reason: String) -> StorageError {
        StorageError::BackendUnavailable {
            backend: BackendKind::DeviceMapper.to_string(),
            reason,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Option<Inner>>> {
        // Every change is recorded before and after it is made, so a
        // poisoned lock leaves nothing the state file does not describe.
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(self.unavailable(
                "the backend has not been opened with a state directory (Store::open does that)"
                    .to_owned(),
            ));
        }
        Ok(guard)
    }

    /// Runs `f` with the open pool (opening it on first use).
    fn with_pool<T>(&self, f: impl FnOnce(&ThinConfig, &mut Inner) -> Result<T>) -> Result<T> {
        let mut guard = self.lock()?;
        let inner = guard
            .as_mut()
            .ok_or_else(|| self.unavailable("not opened".to_owned()))?;
        if inner.pool.is_none() {
            let pool = Pool::open(
                &self.config,
                &inner.pool_dir(&self.config),
                &inner.prefix,
                &mut inner.state,
            )?;
            inner.file.save(&inner.state)?;
            inner.pool = Some(pool);
            inner.collect_garbage();
        }
        f(&self.config, inner)
    }

    /// Removes every device of the pool from the kernel, keeping the data
    /// and the state: what a reboot does. The next use reopens the pool.
    pub fn deactivate(&self) -> Result<()> {
        let mut guard = self.lock()?;
        if let Some(pool) = guard.as_mut().and_then(|i| i.pool.take()) {
            pool.deactivate()?;
        }
        Ok(())
    }

    /// The thin id of an image's volume, if it has one.
    pub fn image_volume(&self, id: &ImageId) -> Option<u32> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref()?.state.images.get(id).map(|v| v.thin_id)
    }

    /// The thin id of a domain's writable-layer volume, if it has one.
    pub fn container_volume(&self, domain: &str) -> Option<u32> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()?
            .state
            .containers
            .get(domain)
            .map(|v| v.thin_id)
    }

    /// Whether the kernel has the thin device `thin_id` of this store.
    pub fn thin_device_exists(&self, thin_id: u32) -> Result<bool> {
        self.with_pool(|_, inner| inner.pool()?.thin_exists(thin_id))
    }

    /// The pool's used and total 64 KiB data blocks.
    pub fn pool_usage(&self) -> Result<(u64, u64)> {
        self.with_pool(|_, inner| inner.pool()?.usage())
    }

    fn check_config(&self) -> Option<String> {
        let c = &self.config;
        if c.volume_size < MIN_SIZE {
            return Some(format!(
                "the volume size {} is below 64 MiB; give a larger --dm-volume-size",
                c.volume_size
            ));
        }
        match &c.pool {
            PoolSource::Files { size, .. } if *size < MIN_SIZE => {
                return Some(format!(
                    "the pool size {size} is below 64 MiB; give a larger --dm-pool-size"
                ));
            }
            PoolSource::Files { .. } => {
                if !Path::new("/dev/loop-control").exists() && !modprobe("loop") {
                    return Some(
                        "/dev/loop-control is missing and 'modprobe loop' failed: a file-backed pool needs loop devices; \
                         load the loop module or give --dm-pool-device"
                            .to_owned(),
                    );
                }
            }
            PoolSource::Device(device) => {
                if let Err(e) = loopdev::block_size(device) {
                    return Some(format!(
                        "the pool device {}: {e}; give a block device (--dm-pool-device) or use a pool file",
                        device.display()
                    ));
                }
            }
        }
        let (program, package) = c.fs.mkfs();
        if fs::find_program(program).is_none() {
            return Some(format!(
                "{program} is not installed; install {package} or choose the other file system (--dm-fs)"
            ));
        }
        None
    }
}

impl Default for DeviceMapper {
    fn default() -> DeviceMapper {
        DeviceMapper::new(ThinConfig::default())
    }
}

fn modprobe(module: &str) -> bool {
    Command::new("modprobe")
        .arg(module)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl Inner {
    fn pool_dir(&self, config: &ThinConfig) -> PathBuf {
        match &config.pool {
            PoolSource::Files { dir: Some(dir), .. } => dir.clone(),
            _ => self.dir.clone(),
        }
    }

    fn pool(&mut self) -> Result<&mut Pool> {
        self.pool
            .as_mut()
            .ok_or_else(|| StorageError::BackendUnavailable {
                backend: BackendKind::DeviceMapper.to_string(),
                reason: "the pool is not open".to_owned(),
            })
    }

    fn save(&self) -> Result<()> {
        self.file.save(&self.state)
    }

    /// A new thin id, recorded as used before the pool hears of it.
    fn next_volume(&mut self, sectors: u64) -> Result<Volume> {
        let thin_id = self.state.next_id;
        self.state.next_id += 1;
        self.save()?;
        Ok(Volume {
            thin_id,
            sectors,
            ready: false,
        })
    }

    /// Deletes volumes whose image or writable layer is gone, or whose
    /// making was interrupted: a crash between the store's change and the
    /// backend's, or in the middle of filling a volume.
    fn collect_garbage(&mut self) {
        let images: Vec<(ImageId, Volume)> = self
            .state
            .images
            .iter()
            .filter(|(id, v)| !v.ready || !self.state_dir.join("images").join(id.as_str()).exists())
            .map(|(id, v)| (id.clone(), *v))
            .collect();
        let containers: Vec<(String, Volume)> = self
            .state
            .containers
            .iter()
            .filter(|(d, v)| {
                !v.ready
                    || !self
                        .state_dir
                        .join("containers")
                        .join(d)
                        .join("meta.json")
                        .exists()
            })
            .map(|(d, v)| (d.clone(), *v))
            .collect();
        if images.is_empty() && containers.is_empty() {
            return;
        }
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        for (id, volume) in &images {
            tracing::info!(image = %id, thin_id = volume.thin_id, "removing a thin volume left behind");
            pool.discard(volume);
        }
        for (domain, volume) in &containers {
            tracing::info!(domain = %domain, thin_id = volume.thin_id, "removing a thin volume left behind");
            pool.discard(volume);
        }
        for (id, _) in images {
            self.state.images.remove(&id);
        }
        for (domain, _) in containers {
            self.state.containers.remove(&domain);
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "cannot record the removal of thin volumes left behind");
        }
    }

    /// A fresh mount point under `<state>/thin/mnt`.
    fn mount_point(&self, what: &str) -> Result<PathBuf> {
        let path = self.dir.join("mnt").join(what);
        stdfs::create_dir_all(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(path)
    }

    /// The ready volume of `chain[0]`, materialising it (and the volumes
    /// of its ancestors) when needed.
    fn image_volume(&mut self, config: &ThinConfig, chain: &[Layer]) -> Result<Volume> {
        let have = chain
            .iter()
            .position(|l| self.state.images.get(&l.id).is_some_and(|v| v.ready));
        let start = have.unwrap_or(chain.len());
        let mut below = have.and_then(|i| self.state.images.get(&chain[i].id).copied());
        for layer in chain[..start].iter().rev() {
            below = Some(self.materialise(config, layer, below)?);
        }
        below.ok_or_else(|| StorageError::NoSuchImage("(empty chain)".to_owned()))
    }

    /// Makes the volume of `layer`: a snapshot of `below`'s or a new file
    /// system, with the layer applied.
    fn materialise(
        &mut self,
        config: &ThinConfig,
        layer: &Layer,
        below: Option<Volume>,
    ) -> Result<Volume> {
        let sectors = below.map_or(config.volume_size / 512, |b| b.sectors);
        let mut volume = self.next_volume(sectors)?;
        self.state.images.insert(layer.id.clone(), volume);
        self.save()?;
        let result = (|| -> Result<()> {
            let node = match &below {
                Some(origin) => self.pool()?.snapshot(origin, &volume)?,
                None => {
                    let node = self.pool()?.create(&volume)?;
                    fs::mkfs(config.fs, &node)?;
                    node
                }
            };
            let target = self.mount_point(&format!("fill-{}", volume.thin_id))?;
            let mounted = Mounted::new(&node, config, &target, true)?;
            apply_layer(&layer.dir, mounted.path())?;
            mounted.unmount()?;
            let _ = stdfs::remove_dir(&target);
            Ok(())
        })();
        if let Err(e) = result {
            if let Some(pool) = self.pool.as_mut() {
                pool.discard(&volume);
            }
            self.state.images.remove(&layer.id);
            let _ = self.save();
            return Err(e);
        }
        volume.ready = true;
        self.state.images.insert(layer.id.clone(), volume);
        self.save()?;
        tracing::debug!(image = %layer.id, thin_id = volume.thin_id, "image volume made");
        Ok(volume)
    }

    /// The volume of the writable layer of `domain` on `chain[0]`, made on
    /// first use as a snapshot of the image's volume.
    fn container_volume(
        &mut self,
        config: &ThinConfig,
        chain: &[Layer],
        domain: &str,
    ) -> Result<Volume> {
        if let Some(volume) = self.state.containers.get(domain).filter(|v| v.ready) {
            return Ok(*volume);
        }
        let image = self.image_volume(config, chain)?;
        let mut volume = self.next_volume(image.sectors)?;
        self.state.containers.insert(domain.to_owned(), volume);
        self.save()?;
        let made = self
            .pool()?
            .snapshot(&image, &volume)
            .and_then(|node| fs::fresh_uuid(config.fs, &node));
        if let Err(e) = made {
            if let Some(pool) = self.pool.as_mut() {
                pool.discard(&volume);
            }
            self.state.containers.remove(domain);
            let _ = self.save();
            return Err(e);
        }
        volume.ready = true;
        self.state.containers.insert(domain.to_owned(), volume);
        self.save()?;
        Ok(volume)
    }
}

/// Applies an overlay-format layer directory to the mounted file system
/// at `root`.
fn apply_layer(layer: &Path, root: &Path) -> Result<()> {
    let open = |p: &Path| -> Result<std::os::fd::OwnedFd> {
        Ok(stdfs::File::open(p)
            .map_err(|e| StorageError::io(p, e))?
            .into())
    };
    let (src, dst) = (open(layer)?, open(root)?);
    let dst_root = dst.try_clone().map_err(|e| StorageError::io(root, e))?;
    let mut progress = |_| {};
    let mut copier = Copier::new(layer, dst_root, true, Target::Apply, &mut progress);
    copier.copy_dir(&src, &dst, Path::new(""))?;
    copier.finish_root(std::os::fd::AsFd::as_fd(&src))
}

fn domain_of(container: &Path) -> Result<String> {
    container
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| StorageError::InvalidDomain {
            name: container.display().to_string(),
            reason: "not a writable layer directory".to_owned(),
        })
}

impl Backend for DeviceMapper {
    fn kind(&self) -> BackendKind {
        BackendKind::DeviceMapper
    }

    fn availability(&self) -> Availability {
        let control = self.config.control.display();
        match stdfs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.config.control)
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Availability::Unavailable(format!(
                    "device-mapper is absent from this kernel ({control} does not exist); use the overlay backend"
                ));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                return Availability::Unavailable(format!(
                    "device-mapper is absent from this kernel ({control}: ENODEV); use the overlay backend"
                ));
            }
            Err(e) => {
                return Availability::Unavailable(format!(
                    "{control}: {e}; run lxvirtd as root or use the overlay backend"
                ));
            }
            Ok(_) => {}
        }
        match pool::has_thin_target() {
            Ok(true) => {}
            Ok(false) if modprobe("dm_thin_pool") && pool::has_thin_target() == Ok(true) => {}
            Ok(false) => {
                return Availability::Unavailable(
                    "the kernel has no thin-pool target and 'modprobe dm_thin_pool' failed; \
                     load dm_thin_pool or use the overlay backend"
                        .to_owned(),
                );
            }
            Err(e) => {
                return Availability::Unavailable(format!(
                    "device-mapper does not answer ({e}); use the overlay backend"
                ));
            }
        }
        match self.check_config() {
            Some(reason) => Availability::Unavailable(reason),
            None => Availability::Available,
        }
    }

    fn open(&self, state_dir: &Path) -> Result<()> {
        let dir = state_dir.join("thin");
        stdfs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let canonical =
            stdfs::canonicalize(state_dir).map_err(|e| StorageError::io(state_dir, e))?;
        let prefix = format!(
            "lxvirt-{}",
            &sha256_hex(canonical.as_os_str().as_encoded_bytes())[..12]
        );
        let file = StateFile::new(&dir);
        let state = file.load()?;
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Inner {
            state_dir: state_dir.to_owned(),
            dir,
            file,
            state,
            prefix,
            pool: None,
        });
        Ok(())
    }

    fn create_writable(&self, container: &Path) -> Result<()> {
        // The volume is made at the first mount, once the directory has
        // its final name (the domain's).
        let path = container.join("merged");
        stdfs::create_dir(&path).map_err(|e| StorageError::io(&path, e))
    }

    fn root_mount(&self, chain: &[Layer], container: &Path) -> Result<RootMount> {
        let domain = domain_of(container)?;
        self.with_pool(|config, inner| {
            let volume = inner.container_volume(config, chain, &domain)?;
            let device = inner.pool()?.devnode(&volume)?;
            Ok(RootMount::Block(BlockMount {
                device,
                fs_type: config.fs.as_str().to_owned(),
                data: config.fs.mount_data().to_owned(),
                target: container.join("merged"),
            }))
        })
    }

    fn commit(
        &self,
        container: &Path,
        chain: &[Layer],
        new: &ImageId,
        dest: &Path,
        owners: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CopyStats> {
        let domain = domain_of(container)?;
        self.with_pool(|config, inner| {
            let source = inner.container_volume(config, chain, &domain)?;
            let image = inner.image_volume(config, chain)?;
            let mut volume = inner.next_volume(source.sectors)?;
            inner.state.images.insert(new.clone(), volume);
            inner.save()?;
            let result = (|| -> Result<CopyStats> {
                let new_node = inner.pool()?.snapshot(&source, &volume)?;
                let old_node = inner.pool()?.devnode(&image)?;
                let new_mnt = inner.mount_point(&format!("commit-{}", volume.thin_id))?;
                let old_mnt = inner.mount_point(&format!("base-{}", volume.thin_id))?;
                let new_fs = Mounted::new(&new_node, config, &new_mnt, false)?;
                let old_fs = Mounted::new(&old_node, config, &old_mnt, false)?;
                let stats = diff::diff(new_fs.path(), old_fs.path(), dest, owners, progress)?;
                new_fs.unmount()?;
                old_fs.unmount()?;
                let _ = stdfs::remove_dir(&new_mnt);
                let _ = stdfs::remove_dir(&old_mnt);
                Ok(stats)
            })();
            match result {
                Ok(stats) => {
                    // Should the store fail to install the image, the
                    // volume is collected at the next start.
                    volume.ready = true;
                    inner.state.images.insert(new.clone(), volume);
                    inner.save()?;
                    Ok(stats)
                }
                Err(e) => {
                    if let Ok(pool) = inner.pool() {
                        pool.discard(&volume);
                    }
                    inner.state.images.remove(new);
                    let _ = inner.save();
                    Err(e)
                }
            }
        })
    }

    fn remove_writable(&self, container: &Path) -> Result<()> {
        let domain = domain_of(container)?;
        if self.container_volume(&domain).is_none() {
            return Ok(());
        }
        self.with_pool(|_, inner| {
            if let Some(volume) = inner.state.containers.get(&domain).copied() {
                inner
                    .pool()?
                    .delete(&volume, &format!("domain '{domain}'"))?;
                inner.state.containers.remove(&domain);
                inner.save()?;
            }
            Ok(())
        })
    }

    fn remove_image(&self, id: &ImageId) -> Result<()> {
        if self.image_volume(id).is_none() {
            return Ok(());
        }
        self.with_pool(|_, inner| {
            if let Some(volume) = inner.state.images.get(id).copied() {
                inner
                    .pool()?
                    .delete(&volume, &format!("image {}", id.short()))?;
                inner.state.images.remove(id);
                inner.save()?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
