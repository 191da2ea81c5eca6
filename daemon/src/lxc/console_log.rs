//! The console log a monitor keeps: console 0's output appended to a file
//! whether or not a client is attached, rotated at a size so that it never
//! takes more than twice that on disk (the file and the one before it).
//!
//! The log is the ring: nothing is held in the monitor's memory, so a
//! thousand monitors stay as small as before, and `lxvirt logs` reads the
//! two files (through the daemon) while the container runs and after.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::spec::ConsoleLogSpec;

/// The open log; writes never block the monitor on anything but the disk.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    /// The current file's size.
    size: u64,
}

impl ConsoleLog {
    /// Opens (or creates, mode 0600) the log to append to.
    pub fn open(spec: &ConsoleLogSpec) -> std::io::Result<ConsoleLog> {
        let file = open_append(&spec.path)?;
        let size = file.metadata()?.len();
        Ok(ConsoleLog {
            path: spec.path.clone(),
            max_bytes: spec.max_bytes.max(1),
            file,
            size,
        })
    }

    /// Appends `bytes`, rotating first if they would take the file past
    /// its size.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, ConsoleLogSpec::previous(&self.path))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_appends_and_rotates_at_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ConsoleLogSpec {
            path: dir.path().join("web.log"),
            max_bytes: 10,
        };
        std::fs::write(&spec.path, b"boot1\n").unwrap();
        let mut log = ConsoleLog::open(&spec).unwrap();
        log.write(b"abc\n").unwrap();
        assert_eq!(std::fs::read(&spec.path).unwrap(), b"boot1\nabc\n");
        log.write(b"defg\n").unwrap();
        let previous = ConsoleLogSpec::previous(&spec.path);
        assert_eq!(std::fs::read(&previous).unwrap(), b"boot1\nabc\n");
        assert_eq!(std::fs::read(&spec.path).unwrap(), b"defg\n");
        // A chunk larger than the size goes whole into a file of its own.
        log.write(b"0123456789abcdef").unwrap();
        assert_eq!(std::fs::read(&previous).unwrap(), b"defg\n");
        assert_eq!(std::fs::read(&spec.path).unwrap(), b"0123456789abcdef");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&spec.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_link_in_place_of_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let spec = ConsoleLogSpec {
            path,
            max_bytes: 10,
        };
        assert!(ConsoleLog::open(&spec).is_err());
    }
}
