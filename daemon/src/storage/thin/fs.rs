//! File systems on thin volumes: making one (`mkfs.ext4`, `mkfs.xfs`) and
//! mounting one for the backend's own work (filling an image volume,
//! comparing a container's volume with its image's).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::super::error::{Result, StorageError};
use super::ThinConfig;

/// The file system made in image volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsType {
    #[default]
    Ext4,
    Xfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// The program that makes it, and the package that has it.
    pub fn mkfs(self) -> (&'static str, &'static str) {
        match self {
            FsType::Ext4 => ("mkfs.ext4", "e2fsprogs"),
            FsType::Xfs => ("mkfs.xfs", "xfsprogs"),
        }
    }

    /// Mount options the backend's own mounts need: xfs refuses to mount
    /// a second file system with the same UUID, which a snapshot has. (The
    /// containers' snapshots get a UUID of their own, see [`fresh_uuid`],
    /// so that the container setup mounts them without options.)
    pub fn mount_data(self) -> &'static str {
        match self {
            FsType::Ext4 => "",
            FsType::Xfs => "nouuid",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsType {
    type Err = String;
    fn from_str(s: &str) -> Result<FsType, String> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            _ => Err(format!("unknown file system '{s}'; use 'ext4' or 'xfs'")),
        }
    }
}

/// Whether `program` is on `PATH` (or in the sbin directories, which a
/// daemon's `PATH` may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs `program` (from `package`) with `args` on `device`; a failure
/// says what failed and `fix`.
fn run_tool(program: &str, package: &str, args: &[&str], device: &Path, fix: &str) -> Result<()> {
    let Some(exe) = find_program(program) else {
        return Err(StorageError::ThinTool {
            what: format!("{program} is not installed"),
            fix: format!("install {package}, or use the other file system (--dm-fs)"),
        });
    };
    let output = Command::new(&exe)
        .args(args)
        .arg(device)
        .output()
        .map_err(|e| StorageError::io(&exe, e))?;
    if !output.status.success() {
        return Err(StorageError::ThinTool {
            what: format!(
                "{program} {} {} failed ({}): {}",
                args.join(" "),
                device.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            fix: fix.to_owned(),
        });
    }
    Ok(())
}

/// Makes a file system of type `fs` on `device` (a new, empty volume).
pub fn mkfs(fs: FsType, device: &Path) -> Result<()> {
    let (program, package) = fs.mkfs();
    let args: &[&str] = match fs {
        // Few inodes (one per 64 KiB), no discard (a new thin volume is
        // unmapped already). The inode tables are written now, once, in
        // the platform image's volume that every snapshot shares: left
        // uninitialised, the kernel would zero them in the background at
        // every container's first mount, taking pool space per container.
        // The journal needs no zeroing: an unwritten thin block reads as
        // zeros.
        FsType::Ext4 => &[
            "-q",
            "-F",
            "-m",
            "0",
            "-i",
            "65536",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=1,nodiscard",
        ],
        FsType::Xfs => &["-q", "-f", "-K"],
    };
    run_tool(
        program,
        package,
        args,
        device,
        "check the pool's free space (dmsetup status)",
    )
}

/// Gives the file system on `device` (a new snapshot, not mounted) a UUID
/// of its own where the file system needs one to be mounted beside its
/// origin: xfs (`xfs_admin -U generate`); ext4 mounts either way.
pub fn fresh_uuid(fs: FsType, device: &Path) -> Result<()> {
    match fs {
        FsType::Ext4 => Ok(()),
        FsType::Xfs => run_tool(
            "xfs_admin",
            "xfsprogs",
            &["-U", "generate"],
            device,
            "see the kernel log (dmesg)",
        ),
    }
}

/// A mount of a volume for the backend's own work, unmounted on drop.
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Mounts `device` (a file system of `config.fs`, with its
    /// `mount_context`) on the existing directory `target`, read-only
    /// unless `writable`.
    pub fn new(
        device: &Path,
        config: &ThinConfig,
        target: &Path,
        writable: bool,
    ) -> Result<Mounted> {
        let fs = config.fs;
        let mut data = fs.mount_data().to_owned();
        if let Some(context) = &config.mount_context {
            if !data.is_empty() {
                data.push(',');
            }
            data.push_str(&format!("context=\"{context}\""));
        }
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if !writable {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            Some(device),
            target,
            Some(fs.as_str()),
            flags,
            Some(data.as_str()),
        )
        .map_err(|e| StorageError::ThinTool {
            what: format!(
                "mounting {} ({fs}) on {}: {e}",
                device.display(),
                target.display()
            ),
            fix: match e {
                nix::errno::Errno::ENODEV => format!("the kernel has no {fs} (modprobe {fs})"),
                _ => "see the kernel log (dmesg)".to_owned(),
            },
        })?;
        Ok(Mounted {
            target: target.to_owned(),
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts, reporting a failure (drop only tries, lazily).
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        umount2(&self.target, MntFlags::empty()).map_err(|e| StorageError::errno(&self.target, e))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}
