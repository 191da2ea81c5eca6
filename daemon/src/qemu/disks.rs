//! A VM's disk images on the host: who may open them while it runs.
//!
//! qemu runs as the VM's own uid, confined to the VM's labels, so before
//! it starts every image it opens is given to it — as libvirt's DAC and
//! SELinux drivers do — and given back when it stops:
//!
//! - a writable image gets the VM's uid and its image label
//!   (`svirt_image_t` with the VM's pair); a `<shareable/>` one the image
//!   type at `s0`, which every VM may use;
//! - a read-only image (`<readonly/>`, a backing layer, the base of a
//!   `<transient/>` disk) gets the shared read-only content label
//!   (`virt_content_t`), and the VM's uid only if others cannot read it;
//! - a `<transient/>` disk gets a qcow2 overlay in the VM's directory,
//!   the disk's writable top, gone when the VM stops.
//!
//! What each file was (owner, label) is recorded durably before it is
//! changed, in `qemu/NAME.disks`, so that a restarted lxvirtd still
//! gives the files back.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::{BackingStore, DiskSource, DomainDef, ImageFormat};
use crate::persist::{self, Durability, Versioned};
use crate::security::FileLabeler;

/// How a VM uses one file of its disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFile {
    pub path: PathBuf,
    pub writable: bool,
    pub shareable: bool,
}

/// The files the disks of `def` open, tops first then their backing
/// layers; the tops of transient disks are read-only (the overlay is the
/// writable one). Empty CD-ROM drives have none.
pub fn files_of(def: &DomainDef) -> Vec<DiskFile> {
    let mut files = Vec::new();
    for disk in &def.devices.disks {
        if let Some(path) = source_path(&disk.source) {
            files.push(DiskFile {
                path: path.to_owned(),
                writable: !disk.readonly && !disk.transient,
                shareable: disk.shareable,
            });
        }
        let mut next: Option<&BackingStore> = disk.backing_store.as_ref();
        while let Some(store) = next {
            if let Some(path) = store.source.as_ref().and_then(source_path) {
                files.push(DiskFile {
                    path: path.to_owned(),
                    writable: false,
                    shareable: true,
                });
            }
            next = store.backing.as_deref();
        }
    }
    files
}

fn source_path(source: &DiskSource) -> Option<&Path> {
    match source {
        DiskSource::File(p) | DiskSource::Block(p) => p.as_deref(),
        // Not run: the command line refuses such a disk.
        DiskSource::Kept(_) => None,
    }
}

/// The overlay file of disk `index` of a VM whose directory is `dir`.
pub fn overlay_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("transient-{index}.qcow2"))
}

/// What a file was before a VM was given it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Its SELinux label, where it had one and the VM relabelled it.
    pub label: Option<String>,
    /// The VM writes it and no other may (neither shareable nor read-only).
    pub exclusive: bool,
}

/// The files a running VM was given, to give back at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Given {
    pub files: Vec<Original>,
}

impl Versioned for Given {
    const VERSION: u32 = 1;
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot use the disk image {path}")]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot label the disk image {path} {label}")]
    Label {
        path: PathBuf,
        label: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the overlay of transient disk {disk} (qemu-img: {said})")]
    Overlay { disk: String, said: String },
    #[error("cannot record the owners of its disk images in {path}")]
    Record {
        path: PathBuf,
        #[source]
        source: persist::PersistError,
    },
}

/// The labels a confined VM's files get.
#[derive(Debug, Clone)]
pub struct DiskLabels {
    /// The VM's own image label (with its pair).
    pub image: String,
    /// Shared read-only content.
    pub content: String,
    pub labeler: FileLabeler,
}

/// Gives the VM (`uid`, `labels`) its disk files, recording in `record`
/// what they were; on error what was changed is given back.
pub fn give(
    files: &[DiskFile],
    uid: u32,
    labels: Option<&DiskLabels>,
    record: &Path,
) -> Result<Given, DiskError> {
    let mut given = Given::default();
    let result = files
        .iter()
        .try_for_each(|file| give_one(file, uid, labels, record, &mut given));
    match result {
        Ok(()) => Ok(given),
        Err(error) => {
            give_back(record);
            Err(error)
        }
    }
}

fn give_one(
    file: &DiskFile,
    uid: u32,
    labels: Option<&DiskLabels>,
    record: &Path,
    given: &mut Given,
) -> Result<(), DiskError> {
    let image_error = |source| DiskError::Image {
        path: file.path.clone(),
        source,
    };
    if given.files.iter().any(|g| g.path == file.path) {
        return Ok(());
    }
    let meta = std::fs::metadata(&file.path).map_err(image_error)?;
    let label = labels.map(|l| {
        if !file.writable {
            l.content.clone()
        } else if file.shareable {
            at_level(&l.image, "s0")
        } else {
            l.image.clone()
        }
    });
    given.files.push(Original {
        path: file.path.clone(),
        uid: meta.uid(),
        gid: meta.gid(),
        label: label
            .as_ref()
            .and_then(|_| crate::sys::linux::file_label(&file.path).ok()),
        exclusive: file.writable && !file.shareable,
    });
    persist::write_versioned(record, &*given, 0o600, Durability::Durable).map_err(|source| {
        DiskError::Record {
            path: record.to_owned(),
            source,
        }
    })?;
    if file.writable || meta.mode() & 0o004 == 0 {
        std::os::unix::fs::chown(&file.path, Some(uid), Some(uid)).map_err(image_error)?;
    }
    if let (Some(labels), Some(label)) = (labels, &label) {
        (labels.labeler)(&file.path, label).map_err(|source| DiskError::Label {
            path: file.path.clone(),
            label: label.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Gives back what [`give`] recorded in `record`, and removes the record;
/// one line per file that could not be given back.
pub fn give_back(record: &Path) -> Vec<String> {
    let given: Given = match persist::read_versioned_if_present(record) {
        Ok(Some(given)) => given,
        Ok(None) => return Vec::new(),
        Err(error) => return vec![crate::error_chain::error_chain(&error)],
    };
    let mut problems = Vec::new();
    for original in &given.files {
        if let Err(e) =
            std::os::unix::fs::chown(&original.path, Some(original.uid), Some(original.gid))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!(
                "cannot give {} back to {}:{}: {e}",
                original.path.display(),
                original.uid,
                original.gid
            ));
        }
        if let Some(label) = &original.label
            && let Err(e) = crate::sys::linux::set_file_label(&original.path, label)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!(
                "cannot give {} its label {label} back: {e}",
                original.path.display()
            ));
        }
    }
    let _ = std::fs::remove_file(record);
    problems
}

/// The writable, unshared images a VM holds, from its record.
pub fn exclusive_in(record: &Path) -> Vec<PathBuf> {
    persist::read_versioned_if_present::<Given>(record)
        .ok()
        .flatten()
        .map(|g| {
            g.files
                .into_iter()
                .filter(|f| f.exclusive)
                .map(|f| f.path)
                .collect()
        })
        .unwrap_or_default()
}

/// `context` at `level` (`user:role:type:level`).
fn at_level(context: &str, level: &str) -> String {
    let base: Vec<&str> = context.splitn(4, ':').take(3).collect();
    format!("{}:{level}", base.join(":"))
}

/// Makes the qcow2 overlay `overlay` over `base` (of `format`), owned by
/// `uid`.
pub fn make_overlay(
    disk: &str,
    base: &Path,
    format: ImageFormat,
    overlay: &Path,
    uid: u32,
) -> Result<(), DiskError> {
    let output = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", format.as_str(), "-b"])
        .arg(base)
        .arg(overlay)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiskError::Overlay {
            disk: disk.to_owned(),
            said: format!("cannot run it: {e}; install qemu-utils"),
        })?;
    if !output.status.success() {
        return Err(DiskError::Overlay {
            disk: disk.to_owned(),
            said: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    std::os::unix::fs::chown(overlay, Some(uid), Some(uid)).map_err(|source| DiskError::Image {
        path: overlay.to_owned(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_of_tops_and_backing_layers() {
        let def = DomainDef::from_xml(
            "<domain type='qemu'><name>vm</name><memory unit='MiB'>64</memory>\
             <os><type>hvm</type></os><devices>\
             <disk type='file' device='disk'><driver type='qcow2'/><source file='/i/top.qcow2'/>\
               <backingStore type='file'><format type='raw'/><source file='/i/base.raw'/></backingStore>\
               <target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><source file='/i/t.raw'/><target dev='vdb' bus='virtio'/><transient/></disk>\
             <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdc' bus='virtio'/><shareable/></disk>\
             <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>\
             </devices></domain>",
        )
        .unwrap();
        let file = |path: &str, writable, shareable| DiskFile {
            path: path.into(),
            writable,
            shareable,
        };
        assert_eq!(
            files_of(&def),
            [
                file("/i/top.qcow2", true, false),
                file("/i/base.raw", false, true),
                file("/i/t.raw", false, false),
                file("/dev/sdz", true, true),
            ]
        );
    }

    #[test]
    fn shareable_images_are_at_s0() {
        assert_eq!(
            at_level("system_u:object_r:svirt_image_t:s0:c1,c2", "s0"),
            "system_u:object_r:svirt_image_t:s0"
        );
    }

    /// Files are given to the VM's uid and given back as they were, also
    /// from the record alone (a restarted daemon).
    #[test]
    fn images_are_given_and_given_back() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        let base = dir.path().join("base.raw");
        std::fs::write(&disk, b"disk").unwrap();
        std::fs::write(&base, b"base").unwrap();
        std::os::unix::fs::chown(&disk, Some(1234), Some(1235)).unwrap();
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let record = dir.path().join("vm.disks");
        let files = [
            DiskFile {
                path: disk.clone(),
                writable: true,
                shareable: false,
            },
            DiskFile {
                path: base.clone(),
                writable: false,
                shareable: true,
            },
        ];
        let given = give(&files, 4_000_000, None, &record).unwrap();
        assert_eq!(given.files.len(), 2);
        assert_eq!(std::fs::metadata(&disk).unwrap().uid(), 4_000_000);
        // Others could not read it: the VM gets it too.
        assert_eq!(std::fs::metadata(&base).unwrap().uid(), 4_000_000);
        assert_eq!(exclusive_in(&record), std::slice::from_ref(&disk));
        assert!(give_back(&record).is_empty());
        assert_eq!(std::fs::metadata(&disk).unwrap().uid(), 1234);
        assert_eq!(std::fs::metadata(&disk).unwrap().gid(), 1235);
        assert_eq!(std::fs::metadata(&base).unwrap().uid(), 0);
        assert!(!record.exists());
        // A missing file refuses the start and gives back what was given.
        let missing = [
            files[0].clone(),
            DiskFile {
                path: dir.path().join("nope.raw"),
                writable: true,
                shareable: false,
            },
        ];
        let error = give(&missing, 4_000_000, None, &record).unwrap_err();
        assert!(error.to_string().contains("nope.raw"), "{error}");
        assert_eq!(std::fs::metadata(&disk).unwrap().uid(), 1234);
        assert!(!record.exists());
    }
}
