//! Storage backends: how layers are stacked into a container's root.
//!
//! Layers are stored the same way for every backend — a directory in
//! overlayfs format (whiteouts as character devices 0:0, opaque directories
//! marked with `trusted.overlay.opaque=y`) — and the backend decides how a
//! container's root is made from them: overlayfs stacks the directories
//! directly; device-mapper thin provisioning (later, in the nested VM)
//! materialises each layer in a thin volume snapshotted from its parent's.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::error::{Result, StorageError};

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
pub trait Backend: Send + Sync + fmt::Debug {
    fn kind(&self) -> BackendKind;

    /// Whether it works on this host; checked when the store opens.
    fn availability(&self) -> Availability;

    /// Creates the writable layer's directories in the new, empty
    /// directory `container`.
    fn create_writable(&self, container: &Path) -> Result<()>;

    /// The directory holding the container's changes in overlay format
    /// (what commit copies into a new layer).
    fn changes(&self, container: &Path) -> PathBuf;

    /// The mount of a container's root: `layers` top first, the writable
    /// layer in `container`.
    fn root_mount(&self, layers: Vec<PathBuf>, container: &Path) -> Result<RootMount>;
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

    fn changes(&self, container: &Path) -> PathBuf {
        container.join("upper")
    }

    fn root_mount(&self, layers: Vec<PathBuf>, container: &Path) -> Result<RootMount> {
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

/// The device-mapper thin-provisioning backend. Not implemented on hosts
/// without device-mapper: it reports itself unavailable, with the reason.
#[derive(Debug, Clone)]
pub struct DeviceMapper {
    control: PathBuf,
}

impl DeviceMapper {
    /// `control` is `/dev/mapper/control` on a real host.
    pub fn new(control: impl Into<PathBuf>) -> DeviceMapper {
        DeviceMapper {
            control: control.into(),
        }
    }

    fn unavailable(&self) -> StorageError {
        let reason = match self.availability() {
            Availability::Unavailable(reason) => reason,
            Availability::Available => String::new(),
        };
        StorageError::BackendUnavailable {
            backend: BackendKind::DeviceMapper.to_string(),
            reason,
        }
    }
}

impl Default for DeviceMapper {
    fn default() -> DeviceMapper {
        DeviceMapper::new("/dev/mapper/control")
    }
}

impl Backend for DeviceMapper {
    fn kind(&self) -> BackendKind {
        BackendKind::DeviceMapper
    }

    fn availability(&self) -> Availability {
        let control = self.control.display();
        match fs::OpenOptions::new().read(true).write(true).open(&self.control) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Availability::Unavailable(format!(
                "{control} does not exist: this kernel has no device-mapper; use the overlay backend"
            )),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Availability::Unavailable(format!(
                "{control}: no device-mapper in this kernel (ENODEV); use the overlay backend"
            )),
            Err(e) => Availability::Unavailable(format!("{control}: {e}")),
            Ok(_) => Availability::Unavailable(
                "device-mapper is present but the thin-provisioning backend is not built yet; use the overlay backend"
                    .to_owned(),
            ),
        }
    }

    fn create_writable(&self, _container: &Path) -> Result<()> {
        Err(self.unavailable())
    }

    fn changes(&self, container: &Path) -> PathBuf {
        container.join("upper")
    }

    fn root_mount(&self, _layers: Vec<PathBuf>, _container: &Path) -> Result<RootMount> {
        Err(self.unavailable())
    }
}

/// The backend of `kind` with the host's real paths.
pub fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Overlay => Box::new(Overlay::default()),
        BackendKind::DeviceMapper => Box::new(DeviceMapper::default()),
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

        let RootMount::Overlay(mount) = overlay
            .root_mount(
                vec!["/s/images/b/layer".into(), "/s/images/a/layer".into()],
                Path::new("/s/containers/web"),
            )
            .unwrap();
        assert_eq!(
            mount.options(Some("system_u:object_r:container_file_t:s0:c1,c2")),
            "lowerdir=/s/images/b/layer:/s/images/a/layer,upperdir=/s/containers/web/upper,\
             workdir=/s/containers/web/work,redirect_dir=off,metacopy=off,index=off,xino=off,\
             context=\"system_u:object_r:container_file_t:s0:c1,c2\""
        );
        assert_eq!(mount.target, Path::new("/s/containers/web/merged"));
        assert!(matches!(
            overlay.root_mount(vec!["/a:b/layer".into()], Path::new("/s/c")),
            Err(StorageError::UnusablePath { .. })
        ));
        let many = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/lxvirt/images/{i:064}/layer")))
            .collect();
        assert!(matches!(
            overlay.root_mount(many, Path::new("/s/c")),
            Err(StorageError::ChainTooLong { layers: 100 })
        ));
    }

    #[test]
    fn devicemapper_says_why_it_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let dm = DeviceMapper::new(dir.path().join("control"));
        let Availability::Unavailable(reason) = dm.availability() else {
            panic!("available")
        };
        assert!(reason.contains("no device-mapper"), "{reason}");
        let err = dm.root_mount(vec![], dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("storage backend 'devicemapper' is not available: "),
            "{err}"
        );
        assert_eq!(
            "devicemapper".parse::<BackendKind>().unwrap(),
            BackendKind::DeviceMapper
        );
        assert!("zfs".parse::<BackendKind>().is_err());
    }
}
