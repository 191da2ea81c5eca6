//! Storage backends: how layers are stacked into a container's root.
//!
//! Layers are stored the same way for every backend — a directory in
//! overlayfs format (whiteouts as character devices 0:0, opaque directories
//! marked with `trusted.overlay.opaque=y`) — and the backend decides how a
//! container's root is made from them: overlayfs stacks the directories
//! directly; device-mapper thin provisioning ([`super::thin`]) materialises
//! each image in a thin volume snapshotted from its parent's.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::copy::{CopyStats, copy_layer};
use super::error::{Result, StorageError};
use super::id::ImageId;
pub use super::thin::DeviceMapper;

/// The backends lxvirt knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Overlay,
    DeviceMapper,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::Overlay, BackendKind::DeviceMapper];

    /// The name in the daemon's configuration and in capabilities.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Overlay => "overlay",
            BackendKind::DeviceMapper => "devicemapper",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "overlay" | "overlayfs" => Ok(BackendKind::Overlay),
            "devicemapper" | "dm-thin" => Ok(BackendKind::DeviceMapper),
            _ => Err(format!(
                "unknown storage backend '{s}'; use 'overlay' or 'devicemapper'"
            )),
        }
    }
}

/// Whether a backend can run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Why not, and what to do, as a sentence for capabilities and errors.
    Unavailable(String),
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available)
    }
}

/// The mount that gives a container its root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootMount {
    Overlay(OverlayMount),
    /// A block device holding the container's whole root (a thin snapshot).
    Block(BlockMount),
}

/// A file system on a block device: `mount -t <fs_type> -o <options>
/// <device> <target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMount {
    /// The device node (`/dev/dm-N`).
    pub device: PathBuf,
    /// `ext4` or `xfs`.
    pub fs_type: String,
    /// Mount options the file system needs (without `context=`).
    pub data: String,
    /// Where to mount it (an empty directory next to the writable layer's
    /// state; the container setup may mount elsewhere).
    pub target: PathBuf,
}

impl BlockMount {
    /// The mount options, with `context="…"` when the container has an
    /// SELinux label (quoted: the label's `c1,c2` has a comma): every file
    /// of the volume then carries the container's label, whatever the
    /// volume holds.
    pub fn options(&self, context: Option<&str>) -> String {
        let mut options = self.data.clone();
        if let Some(context) = context {
            if !options.is_empty() {
                options.push(',');
            }
            options.push_str(&format!("context=\"{context}\""));
        }
        options
    }
}

/// One image of a chain, as the store hands it to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub id: ImageId,
    /// Its read-only layer directory (overlay format).
    pub dir: PathBuf,
}

/// An overlayfs mount: `mount -t overlay overlay -o <options> <target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// The image's layers, top first (the image itself, then its parent, …).
    pub lowerdir: Vec<PathBuf>,
    /// The container's writable layer.
    pub upperdir: PathBuf,
    /// overlayfs's work directory (same file system as `upperdir`).
    pub workdir: PathBuf,
    /// Where to mount it (an empty directory next to the writable layer;
    /// the container setup may mount elsewhere).
    pub target: PathBuf,
}

/// The longest mount option string the kernel takes (one page, less NUL).
pub const MAX_MOUNT_DATA: usize = 4095;

impl OverlayMount {
    /// The mount options: layers, and `context="…"` when the container has
    /// an SELinux label (quoted: the label's `c1,c2` has a comma).
    ///
    /// `redirect_dir=off` and `metacopy=off` make every change a full copy
    /// in the upper directory, which is what [`super::Store::commit`] turns
    /// into a layer; `index=off` and `xino=off` keep the layers movable.
    pub fn options(&self, context: Option<&str>) -> String {
        let lower: Vec<String> = self
            .lowerdir
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
            lower.join(":"),
            self.upperdir.display(),
            self.workdir.display()
        );
        if let Some(context) = context {
            options.push_str(&format!(",context=\"{context}\""));
        }
        options
    }
}

/// A storage backend.
///
/// `container` arguments are a writable layer's directory,
/// `<state>/containers/<domain>`; `chain` arguments are an image and its
/// ancestors, top first.
pub trait Backend: Send + Sync + fmt::Debug {
    fn kind(&self) -> BackendKind;

    /// Whether it works on this host; checked when the store opens.
    fn availability(&self) -> Availability;

    /// Called once by [`super::Store::open`] with the state directory,
    /// after [`Backend::availability`] said yes.
    fn open(&self, _state_dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Creates the writable layer's directories in the new, empty
    /// directory `container` (renamed into place afterwards).
    fn create_writable(&self, container: &Path) -> Result<()>;

    /// The mount of a container's root.
    fn root_mount(&self, chain: &[Layer], container: &Path) -> Result<RootMount>;

    /// Writes the container's changes against its image, in overlay
    /// format, into the new directory `dest`: the layer of the new image
    /// `new`, whose parent is `chain[0]`.
    fn commit(
        &self,
        container: &Path,
        chain: &[Layer],
        new: &ImageId,
        dest: &Path,
        owners: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CopyStats>;

    /// Releases what the backend holds for a writable layer about to be
    /// removed (the container is stopped, its root unmounted).
    fn remove_writable(&self, _container: &Path) -> Result<()> {
        Ok(())
    }

    /// Releases what the backend holds for an image about to be removed
    /// (no child image or writable layer uses it).
    fn remove_image(&self, _id: &ImageId) -> Result<()> {
        Ok(())
    }
}

/// A shared backend is a backend (the daemon or a test keeps a handle to
/// the one the store uses).
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn kind(&self) -> BackendKind {
        (**self).kind()
    }
    fn availability(&self) -> Availability {
        (**self).availability()
    }
    fn open(&self, state_dir: &Path) -> Result<()> {
        (**self).open(state_dir)
    }
    fn create_writable(&self, container: &Path) -> Result<()> {
        (**self).create_writable(container)
    }
    fn root_mount(&self, chain: &[Layer], container: &Path) -> Result<RootMount> {
        (**self).root_mount(chain, container)
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
        (**self).commit(container, chain, new, dest, owners, progress)
    }
    fn remove_writable(&self, container: &Path) -> Result<()> {
        (**self).remove_writable(container)
    }
    fn remove_image(&self, id: &ImageId) -> Result<()> {
        (**self).remove_image(id)
    }
}

/// The overlayfs backend (the default).
#[derive(Debug, Clone)]
pub struct Overlay {
    proc_filesystems: PathBuf,
}

impl Overlay {
    /// `proc_filesystems` is `/proc/filesystems` on a real host.
    pub fn new(proc_filesystems: impl Into<PathBuf>) -> Overlay {
        Overlay {
            proc_filesystems: proc_filesystems.into(),
        }
    }
}

impl Default for Overlay {
    fn default() -> Overlay {
        Overlay::new("/proc/filesystems")
    }
}

impl Backend for Overlay {
    fn kind(&self) -> BackendKind {
        BackendKind::Overlay
    }

    fn availability(&self) -> Availability {
        match fs::read_to_string(&self.proc_filesystems) {
            Ok(text)
                if text
                    .lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay")) =>
            {
                Availability::Available
            }
            Ok(_) => Availability::Unavailable(format!(
                "overlayfs is not in {}; load it with 'modprobe overlay'",
                self.proc_filesystems.display()
            )),
            Err(e) => {
                Availability::Unavailable(format!("{}: {e}", self.proc_filesystems.display()))
            }
        }
    }

    fn create_writable(&self, container: &Path) -> Result<()> {
        for dir in ["upper", "work", "merged"] {
            let path = container.join(dir);
            fs::create_dir(&path).map_err(|e| StorageError::io(&path, e))?;
        }
        Ok(())
    }

    fn commit(
        &self,
        container: &Path,
        _chain: &[Layer],
        _new: &ImageId,
        dest: &Path,
        owners: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CopyStats> {
        // The upper directory is the change set already.
        copy_layer(&container.join("upper"), dest, owners, progress)
    }

    fn root_mount(&self, chain: &[Layer], container: &Path) -> Result<RootMount> {
        let layers: Vec<PathBuf> = chain.iter().map(|l| l.dir.clone()).collect();
        for path in layers.iter().map(|p| p.as_path()).chain([container]) {
            let text = path.as_os_str().as_encoded_bytes();
            if text.iter().any(|b| matches!(b, b',' | b':' | b'\\' | b'"')) {
                return Err(StorageError::UnusablePath {
                    path: path.to_owned(),
                });
            }
        }
        let mount = OverlayMount {
            lowerdir: layers,
            upperdir: container.join("upper"),
            workdir: container.join("work"),
            target: container.join("merged"),
        };
        // Leave room for a context="…" label.
        if mount.options(None).len() + 128 > MAX_MOUNT_DATA {
            return Err(StorageError::ChainTooLong {
                layers: mount.lowerdir.len(),
            });
        }
        Ok(RootMount::Overlay(mount))
    }
}

/// The backend of `kind` with the host's real paths and the default
/// device-mapper configuration.
pub fn backend(kind: BackendKind) -> Box<dyn Backend> {
    backend_with(kind, &super::thin::ThinConfig::default())
}

/// The backend of `kind`; `dm` configures the device-mapper backend.
pub fn backend_with(kind: BackendKind, dm: &super::thin::ThinConfig) -> Box<dyn Backend> {
    match kind {
        BackendKind::Overlay => Box::new(Overlay::default()),
        BackendKind::DeviceMapper => Box::new(DeviceMapper::new(dm.clone())),
    }
}

/// Every backend and whether it works here, for `GetCapabilities`.
pub fn probe_all() -> Vec<(BackendKind, Availability)> {
    BackendKind::ALL
        .iter()
        .map(|kind| (*kind, backend(*kind).availability()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_and_availability() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path().join("filesystems");
        fs::write(&procfs, "nodev\tsysfs\nnodev\toverlay\n\text4\n").unwrap();
        let overlay = Overlay::new(&procfs);
        assert!(overlay.availability().is_available());
        fs::write(&procfs, "nodev\tsysfs\n").unwrap();
        assert!(!overlay.availability().is_available());

        let id = |c: char| ImageId::parse(&c.to_string().repeat(64)).unwrap();
        let layer = |c: char, dir: &str| Layer {
            id: id(c),
            dir: dir.into(),
        };
        let Ok(RootMount::Overlay(mount)) = overlay.root_mount(
            &[
                layer('b', "/s/images/b/layer"),
                layer('a', "/s/images/a/layer"),
            ],
            Path::new("/s/containers/web"),
        ) else {
            panic!("not an overlay")
        };
        assert_eq!(
            mount.options(Some("system_u:object_r:container_file_t:s0:c1,c2")),
            "lowerdir=/s/images/b/layer:/s/images/a/layer,upperdir=/s/containers/web/upper,\
             workdir=/s/containers/web/work,redirect_dir=off,metacopy=off,index=off,xino=off,\
             context=\"system_u:object_r:container_file_t:s0:c1,c2\""
        );
        assert_eq!(mount.target, Path::new("/s/containers/web/merged"));
        assert!(matches!(
            overlay.root_mount(&[layer('a', "/a:b/layer")], Path::new("/s/c")),
            Err(StorageError::UnusablePath { .. })
        ));
        let many: Vec<Layer> = (0..100)
            .map(|i| layer('c', &format!("/var/lib/lxvirt/images/{i:064}/layer")))
            .collect();
        assert!(matches!(
            overlay.root_mount(&many, Path::new("/s/c")),
            Err(StorageError::ChainTooLong { layers: 100 })
        ));
    }

    #[test]
    fn block_mount_options_quote_the_context() {
        let mount = BlockMount {
            device: "/dev/dm-3".into(),
            fs_type: "xfs".into(),
            data: "nouuid".into(),
            target: "/s/containers/web/merged".into(),
        };
        assert_eq!(mount.options(None), "nouuid");
        assert_eq!(
            mount.options(Some("system_u:object_r:svirt_sandbox_file_t:s0:c1,c2")),
            "nouuid,context=\"system_u:object_r:svirt_sandbox_file_t:s0:c1,c2\""
        );
    }

    #[test]
    fn backend_kinds_parse() {
        assert_eq!(
            "devicemapper".parse::<BackendKind>().unwrap(),
            BackendKind::DeviceMapper
        );
        assert!("zfs".parse::<BackendKind>().is_err());
    }
}
