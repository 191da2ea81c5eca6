//! The thin pool through the `devicemapper` crate: a metadata and a data
//! linear device over loop devices (or one block device, split), the
//! `thin-pool` on them, and thin devices named after their thin ids.
//! Nothing outside this file touches the crate.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use devicemapper::{
    DM, DataBlocks, DevId, Device, DmDevice, DmError, DmNameBuf, DmOptions, LinearDev,
    LinearDevTargetParams, LinearTargetParams, Sectors, TargetLine, ThinDev, ThinDevId,
    ThinPoolDev, message,
};

use super::super::error::{Result, StorageError};
use super::loopdev;
use super::state::{ThinState, Volume};
use super::{PoolSource, ThinConfig};

/// 64 KiB data blocks: small enough that a snapshot's first write copies
/// little, large enough to keep the metadata small.
const DATA_BLOCK_SECTORS: u64 = 128;
/// Free data blocks below which the kernel raises an event (unused yet).
const LOW_WATER_BLOCKS: u64 = 16;

/// The metadata size for a data size: about 1/256 (thin_metadata_size
/// needs far less for 64 KiB blocks), within what the target takes.
pub fn metadata_bytes(data: u64) -> u64 {
    (data / 256).clamp(16 << 20, 16 << 30) & !4095
}

/// Whether the kernel lists the `thin-pool` target.
pub fn has_thin_target() -> std::result::Result<bool, String> {
    let dm = DM::new().map_err(|e| e.to_string())?;
    let targets = dm.list_versions().map_err(|e| e.to_string())?;
    Ok(targets.iter().any(|(name, ..)| name == "thin-pool"))
}

/// A device-mapper error as the store reports it, naming the pool.
pub(crate) fn dm_error(
    pool: &str,
    action: impl Into<String>,
    e: DmError,
    fix: &str,
) -> StorageError {
    StorageError::Thin {
        pool: pool.to_owned(),
        action: action.into(),
        reason: e.to_string(),
        fix: fix.to_owned(),
    }
}

/// Maps a device-mapper error of `action` on `pool`, with `fix`.
fn fail<A: Into<String>>(
    pool: &str,
    action: A,
    fix: &'static str,
) -> impl FnOnce(DmError) -> StorageError + use<A> {
    let (pool, action) = (pool.to_owned(), action.into());
    move |e| dm_error(&pool, action, e, fix)
}

fn name(text: String) -> Result<DmNameBuf> {
    DmNameBuf::new(text.clone()).map_err(|e| {
        dm_error(
            &text,
            "device name",
            e,
            "use a shorter state directory path",
        )
    })
}

/// An open pool, and the thin devices this process has activated.
pub struct Pool {
    dm: DM,
    pool: ThinPoolDev,
    /// `lxvirt-<hash of the state directory>`: every device name of this
    /// store starts with it, so that stores in other state directories
    /// (test daemons) never meet.
    prefix: String,
    active: HashMap<u32, ThinDev>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("prefix", &self.prefix)
            .field("active", &self.active.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A backing store: the device, the offset and length (sectors) of the
/// part used.
struct Extent {
    device: Device,
    offset: u64,
    sectors: u64,
}

fn device_of(path: &Path) -> Result<Device> {
    let meta = std::fs::metadata(path).map_err(|e| StorageError::io(path, e))?;
    Ok(Device::from(meta.rdev()))
}

/// A loop device on `file`, attached now or found attached already, and
/// an open handle on it.
fn loop_on(file: &Path) -> Result<(PathBuf, File, u64)> {
    let size = std::fs::metadata(file)
        .map_err(|e| StorageError::io(file, e))?
        .len();
    let attached = loopdev::find_attached(Path::new("/sys/block"), file)
        .map_err(|e| StorageError::io(file, e))?;
    let (device, handle) = match attached {
        Some(device) => {
            let handle = File::open(&device).map_err(|e| StorageError::io(&device, e))?;
            (device, handle)
        }
        None => loopdev::attach(file).map_err(|e| StorageError::Thin {
            pool: file.display().to_string(),
            action: "attaching a loop device".to_owned(),
            fix: match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "lxvirtd needs /dev/loop-control and /dev/loop* (root; under SELinux, lxvirt's policy module)"
                }
                _ => "load the loop module (modprobe loop) or free a loop device",
            }
            .to_owned(),
            reason: e.to_string(),
        })?,
    };
    Ok((device, handle, size))
}

/// A new sparse file of `size` bytes (replacing one a failed creation
/// left).
fn sparse_file(path: &Path, size: u64) -> Result<()> {
    let file = File::create(path).map_err(|e| StorageError::io(path, e))?;
    file.set_len(size).map_err(|e| StorageError::io(path, e))?;
    file.sync_all().map_err(|e| StorageError::io(path, e))
}

impl Pool {
    /// Opens the pool of `config` (files in `dir` unless a device is
    /// configured): reopens it when `state` says it was created, creates
    /// it otherwise (and records that in `state`; the caller saves).
    pub fn open(
        config: &ThinConfig,
        dir: &Path,
        prefix: &str,
        state: &mut ThinState,
    ) -> Result<Pool> {
        let pool_name = format!("{prefix}-pool");
        let dm = DM::new().map_err(fail(
            &pool_name,
            "opening /dev/mapper/control",
            "use the overlay backend",
        ))?;
        // The loop devices' handles, held until device-mapper holds them.
        let loops: Vec<File>;
        let (meta, data) = match &config.pool {
            PoolSource::Files { size, .. } => {
                let (data_file, meta_file) = (dir.join("data"), dir.join("metadata"));
                if !state.pool_created {
                    sparse_file(&data_file, *size)?;
                    sparse_file(&meta_file, metadata_bytes(*size))?;
                } else if !data_file.exists() || !meta_file.exists() {
                    return Err(StorageError::Thin {
                        pool: pool_name,
                        action: format!("reopening {}", data_file.display()),
                        reason: "the pool's data or metadata file is missing".to_owned(),
                        fix: format!(
                            "its volumes are lost: remove {} and the image volumes are made again",
                            dir.join("volumes.json").display()
                        ),
                    });
                }
                let (meta_dev, meta_handle, meta_size) = loop_on(&meta_file)?;
                let (data_dev, data_handle, data_size) = loop_on(&data_file)?;
                loops = vec![meta_handle, data_handle];
                (
                    Extent {
                        device: device_of(&meta_dev)?,
                        offset: 0,
                        sectors: meta_size / 512,
                    },
                    Extent {
                        device: device_of(&data_dev)?,
                        offset: 0,
                        sectors: data_size / 512,
                    },
                )
            }
            PoolSource::Device(device) => {
                let size = loopdev::block_size(device).map_err(|e| StorageError::io(device, e))?;
                let meta = metadata_bytes(size);
                if size < meta * 2 {
                    return Err(StorageError::Thin {
                        pool: pool_name,
                        action: format!("using {}", device.display()),
                        reason: format!("{size} bytes is too small"),
                        fix: "give a device of at least 64 MiB".to_owned(),
                    });
                }
                if !state.pool_created {
                    // A new pool needs zeroed metadata.
                    let mut f = OpenOptions::new()
                        .write(true)
                        .open(device)
                        .map_err(|e| StorageError::io(device, e))?;
                    f.seek(SeekFrom::Start(0))
                        .and_then(|_| f.write_all(&[0u8; 4096]))
                        .and_then(|_| f.sync_all())
                        .map_err(|e| StorageError::io(device, e))?;
                }
                let dev = device_of(device)?;
                loops = Vec::new();
                (
                    Extent {
                        device: dev,
                        offset: 0,
                        sectors: meta / 512,
                    },
                    Extent {
                        device: dev,
                        offset: meta / 512,
                        sectors: (size - meta) / 512,
                    },
                )
            }
        };
        let linear = |suffix: &str, extent: &Extent| -> Result<LinearDev> {
            let name = name(format!("{prefix}-{suffix}"))?;
            let table = vec![TargetLine::new(
                Sectors(0),
                Sectors(extent.sectors),
                LinearDevTargetParams::Linear(LinearTargetParams::new(
                    extent.device,
                    Sectors(extent.offset),
                )),
            )];
            LinearDev::setup(&dm, &name, None, table).map_err(fail(
                &pool_name,
                format!("setting up {}", &*name),
                "see the kernel log (dmesg)",
            ))
        };
        // Should the pool not come up, its linear devices go again.
        let undo = |dm: &DM| {
            for suffix in ["data", "meta"] {
                if let Ok(name) = name(format!("{prefix}-{suffix}"))
                    && let Err(e) = dm.device_remove(&DevId::Name(&name), DmOptions::default())
                {
                    tracing::warn!(device = %&*name, error = %e, "cannot remove a device of a pool that did not start");
                }
            }
        };
        let meta_dev = linear("meta", &meta)?;
        let data_dev = match linear("data", &data) {
            Ok(dev) => dev,
            Err(e) => {
                undo(&dm);
                return Err(e);
            }
        };
        let features = vec!["error_if_no_space".to_owned()];
        let pool_dm_name = name(pool_name.clone())?;
        let pool = if state.pool_created {
            ThinPoolDev::setup(
                &dm,
                &pool_dm_name,
                None,
                meta_dev,
                data_dev,
                Sectors(DATA_BLOCK_SECTORS),
                DataBlocks(LOW_WATER_BLOCKS),
                features,
            )
            .map_err(fail(
                &pool_name,
                "reopening the pool",
                "check the pool with thin_check",
            ))?
        } else {
            let pool = ThinPoolDev::new(
                &dm,
                &pool_dm_name,
                None,
                meta_dev,
                data_dev,
                Sectors(DATA_BLOCK_SECTORS),
                DataBlocks(LOW_WATER_BLOCKS),
                features,
            )
            .map_err(fail(
                &pool_name,
                "creating the pool",
                "see the kernel log (dmesg)",
            ))?;
            state.pool_created = true;
            state.pool_bytes = data.sectors * 512;
            pool
        };
        // The pool's linear devices hold the loop devices now.
        drop(loops);
        Ok(Pool {
            dm,
            pool,
            prefix: prefix.to_owned(),
            active: HashMap::new(),
        })
    }

    fn pool_name(&self) -> String {
        format!("{}-pool", self.prefix)
    }

    /// Maps a device-mapper error of `action` on this pool, with `fix`.
    fn fail<A: Into<String>>(
        &self,
        action: A,
        fix: &'static str,
    ) -> impl FnOnce(DmError) -> StorageError + use<A> {
        let (pool, action) = (self.pool_name(), action.into());
        move |e| dm_error(&pool, action, e, fix)
    }

    fn thin_name(&self, thin_id: u32) -> Result<DmNameBuf> {
        name(format!("{}-thin-{thin_id}", self.prefix))
    }

    fn thin_id(&self, thin_id: u32) -> Result<ThinDevId> {
        ThinDevId::new_u64(u64::from(thin_id)).map_err(self.fail(
            format!("thin id {thin_id}"),
            "the pool has run out of thin ids",
        ))
    }

    /// Makes the thin device of `volume` active (a node in /dev) and
    /// returns it.
    fn activate(&mut self, volume: &Volume) -> Result<&ThinDev> {
        if !self.active.contains_key(&volume.thin_id) {
            let name = self.thin_name(volume.thin_id)?;
            let id = self.thin_id(volume.thin_id)?;
            let dev = ThinDev::setup(
                &self.dm,
                &name,
                None,
                Sectors(volume.sectors),
                &self.pool,
                id,
            )
            .map_err(self.fail(
                format!("activating thin device {}", volume.thin_id),
                "see the kernel log (dmesg)",
            ))?;
            self.active.insert(volume.thin_id, dev);
        }
        self.active
            .get(&volume.thin_id)
            .ok_or_else(|| unreachable_missing(volume.thin_id))
    }

    /// The device node of `volume`, activating it.
    pub fn devnode(&mut self, volume: &Volume) -> Result<PathBuf> {
        Ok(self.activate(volume)?.devnode())
    }

    /// Creates an empty thin volume.
    pub fn create(&mut self, volume: &Volume) -> Result<PathBuf> {
        let name = self.thin_name(volume.thin_id)?;
        let id = self.thin_id(volume.thin_id)?;
        let dev = ThinDev::new(
            &self.dm,
            &name,
            None,
            Sectors(volume.sectors),
            &self.pool,
            id,
        )
        .map_err(self.fail(
            format!("creating thin device {}", volume.thin_id),
            "check the pool's free space (dmsetup status)",
        ))?;
        let node = dev.devnode();
        self.active.insert(volume.thin_id, dev);
        Ok(node)
    }

    /// Creates `snapshot` as a snapshot of `origin` (suspending the origin
    /// around it, as the target requires, when it is active).
    pub fn snapshot(&mut self, origin: &Volume, snapshot: &Volume) -> Result<PathBuf> {
        let name = self.thin_name(snapshot.thin_id)?;
        let id = self.thin_id(snapshot.thin_id)?;
        self.activate(origin)?;
        let origin_dev = self
            .active
            .get(&origin.thin_id)
            .ok_or_else(|| unreachable_missing(origin.thin_id))?;
        let dev = origin_dev
            .snapshot(&self.dm, &name, None, &self.pool, id)
            .map_err(self.fail(
                format!(
                    "snapshotting thin device {} as {}",
                    origin.thin_id, snapshot.thin_id
                ),
                "check the pool's free space (dmsetup status)",
            ))?;
        let node = dev.devnode();
        self.active.insert(snapshot.thin_id, dev);
        Ok(node)
    }

    /// Removes the thin device of `volume` and frees its blocks. Refused
    /// by the kernel (EBUSY) while it is mounted.
    pub fn delete(&mut self, volume: &Volume, what: &str) -> Result<()> {
        self.activate(volume)?;
        let pool_name = self.pool_name();
        let Some(mut dev) = self.active.remove(&volume.thin_id) else {
            return Err(unreachable_missing(volume.thin_id));
        };
        if let Err(e) = dev.teardown(&self.dm) {
            self.active.insert(volume.thin_id, dev);
            return Err(dm_error(
                &pool_name,
                format!("removing the thin device of {what}"),
                e,
                "it is in use: stop the container (and unmount its root) first",
            ));
        }
        message(&self.dm, &self.pool, &format!("delete {}", volume.thin_id)).map_err(self.fail(
            format!("deleting thin device {} of {what}", volume.thin_id),
            "see the kernel log (dmesg)",
        ))
    }

    /// Forgets a thin id the pool may not know (a volume whose creation
    /// was interrupted): deletes it if it exists.
    pub fn discard(&mut self, volume: &Volume) {
        if self.delete(volume, "an unfinished volume").is_err() {
            // Never created, or its device gone already: only the pool's
            // record, if any, remains.
            let _ = message(&self.dm, &self.pool, &format!("delete {}", volume.thin_id));
        }
    }

    /// Removes every device of the pool from the kernel (thin devices,
    /// the pool, its linear devices; the loop devices then detach by
    /// themselves). The data stays; [`Pool::open`] brings it back.
    pub fn deactivate(mut self) -> Result<()> {
        // Thin devices this process did not activate may exist too.
        let devices = self
            .dm
            .list_devices()
            .map_err(self.fail("listing devices", "see the kernel log"))?;
        let thin_prefix = format!("{}-thin-", self.prefix);
        for (dev_name, _, _) in devices {
            if (*dev_name).to_string().starts_with(&thin_prefix) {
                self.dm
                    .device_remove(&DevId::Name(&dev_name), DmOptions::default())
                    .map_err(self.fail(format!("removing {}", &*dev_name), "unmount it first"))?;
            }
        }
        self.active.clear();
        self.pool
            .teardown(&self.dm)
            .map_err(self.fail("removing the pool", "see the kernel log"))
    }

    /// Whether the kernel has a device of this name (for tests and
    /// diagnostics).
    pub fn thin_exists(&self, thin_id: u32) -> Result<bool> {
        let name = self.thin_name(thin_id)?;
        devicemapper::device_exists(&self.dm, &name)
            .map_err(self.fail("listing devices", "see the kernel log"))
    }

    /// The pool's used and total data blocks.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let status = self
            .pool
            .status(&self.dm, DmOptions::default())
            .map_err(self.fail("reading the pool's status", "see the kernel log"))?;
        match status {
            devicemapper::ThinPoolStatus::Working(w) => {
                Ok((w.usage.used_data.0, w.usage.total_data.0))
            }
            _ => Err(StorageError::Thin {
                pool: self.pool_name(),
                action: "reading the pool's status".to_owned(),
                reason: "the pool has failed".to_owned(),
                fix: "check it with thin_check".to_owned(),
            }),
        }
    }
}

fn unreachable_missing(thin_id: u32) -> StorageError {
    StorageError::Thin {
        pool: String::new(),
        action: format!("thin device {thin_id}"),
        reason: "not active after activation".to_owned(),
        fix: "report this bug".to_owned(),
    }
}
