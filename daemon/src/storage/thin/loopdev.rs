//! The thin backend's seam to loop devices and block devices: attaching a
//! file to a free loop device (through [`crate::sys`]), finding the loop device a file is attached
//! to already (a restarted daemon), and the size of a block device.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// The loop device `file` is attached to, if any (by the kernel's record of
/// each loop device's backing file).
pub fn find_attached(sys_block: &Path, file: &Path) -> io::Result<Option<PathBuf>> {
    let file = fs::canonicalize(file)?;
    let entries = match fs::read_dir(sys_block) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        match fs::read_to_string(entry.path().join("loop/backing_file")) {
            Ok(backing) if Path::new(backing.trim_end_matches('\n')) == file => {
                return Ok(Some(Path::new("/dev").join(name)));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Attaches `file` to a free loop device with autoclear (the device goes
/// away when its last user lets go) and returns the device's path and an
/// open handle: the caller keeps it until another user (the
/// device-mapper table) holds the device, or autoclear detaches it at once.
pub fn attach(file: &Path) -> io::Result<(PathBuf, File)> {
    use crate::sys::Syscalls;
    let device = crate::sys::Linux
        .loop_attach(file, false)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let handle = match device.fd {
        Some(fd) => File::from(fd),
        None => File::open(&device.path)?,
    };
    Ok((device.path, handle))
}

/// The size in bytes of a block device.
pub fn block_size(device: &Path) -> io::Result<u64> {
    let file = File::open(device)?;
    if !file.metadata()?.file_type().is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block device",
        ));
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // at a live u64; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_loop_device_by_its_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        fs::write(&file, b"").unwrap();
        let sys = dir.path().join("sys");
        fs::create_dir_all(sys.join("loop3/loop")).unwrap();
        fs::create_dir_all(sys.join("sda")).unwrap();
        fs::create_dir_all(sys.join("loop7/loop")).unwrap();
        fs::write(sys.join("loop3/loop/backing_file"), "/elsewhere\n").unwrap();
        assert_eq!(find_attached(&sys, &file).unwrap(), None);
        let canonical = fs::canonicalize(&file).unwrap();
        fs::write(
            sys.join("loop7/loop/backing_file"),
            format!("{}\n", canonical.display()),
        )
        .unwrap();
        assert_eq!(
            find_attached(&sys, &file).unwrap(),
            Some(PathBuf::from("/dev/loop7"))
        );
        assert_eq!(
            find_attached(&dir.path().join("none"), &file).unwrap(),
            None
        );
        assert!(block_size(&file).is_err());
    }
}
