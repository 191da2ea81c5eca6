//! sysvinit's control FIFO (`/run/initctl`, `/dev/initctl` on older
//! systems): a container whose init is sysvinit shuts down cleanly when
//! asked for runlevel 0 there, as `telinit 0` asks; SIGTERM it ignores.
//!
//! The FIFO is opened from the host through `/proc/INIT/root` with
//! `RESOLVE_IN_ROOT`, so a symlink the container planted cannot lead the
//! monitor (root on the host) out of the container's root, and only a
//! FIFO is written.

use std::io::Write as _;
use std::os::fd::AsFd as _;

use nix::fcntl::OFlag;
use nix::sys::stat::{SFlag, fstat};

use crate::sys::linux::open_in_root;

/// Where sysvinit listens, newest first.
const FIFOS: [&str; 2] = ["run/initctl", "dev/initctl"];
/// `INIT_MAGIC` of sysvinit's `initreq.h`.
const INIT_MAGIC: i32 = 0x0309_1969;
/// `INIT_CMD_RUNLVL`.
const INIT_CMD_RUNLVL: i32 = 1;
/// `sizeof(struct init_request)`: four ints and a 368-byte union.
const REQUEST_SIZE: usize = 384;

#[derive(Debug, thiserror::Error)]
pub enum InitctlError {
    #[error(
        "the container has no sysvinit control FIFO (/run/initctl, /dev/initctl): its init is not sysvinit; use mode 'signal' or 'systemd'"
    )]
    NoFifo,
    #[error("nothing reads the container's {path}: its init is not listening")]
    NoReader { path: &'static str },
    #[error("cannot write the runlevel request to the container's {path}")]
    Write {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Whether the container of `init_pid` has an initctl FIFO.
pub fn present(init_pid: i32) -> bool {
    FIFOS.iter().any(|path| open(init_pid, path, false).is_ok())
}

/// Asks the init of `init_pid` for `runlevel` (`b'0'` halts, `b'6'`
/// reboots).
pub fn request_runlevel(init_pid: i32, runlevel: u8) -> Result<(), InitctlError> {
    for path in FIFOS {
        match open(init_pid, path, true) {
            Ok(fifo) => {
                return std::fs::File::from(fifo)
                    .write_all(&runlevel_request(runlevel))
                    .map_err(|source| InitctlError::Write { path, source });
            }
            Err(nix::errno::Errno::ENXIO) => return Err(InitctlError::NoReader { path }),
            Err(_) => {}
        }
    }
    Err(InitctlError::NoFifo)
}

/// The FIFO at `path` in the container's root; `ENOENT` for a file that
/// is not a FIFO. For writing, non-blocking: `ENXIO` when nobody reads.
fn open(init_pid: i32, path: &str, write: bool) -> nix::Result<std::os::fd::OwnedFd> {
    let access = if write {
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
    } else {
        OFlag::O_PATH
    };
    let root = format!("/proc/{init_pid}/root");
    let fifo = open_in_root(std::path::Path::new(&root), path, access)?;
    let kind = SFlag::from_bits_truncate(fstat(fifo.as_fd())?.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFIFO {
        Ok(fifo)
    } else {
        Err(nix::errno::Errno::ENOENT)
    }
}

/// sysvinit's `struct init_request` asking for `runlevel`, in this host's
/// byte order (init reads it on the same machine).
fn runlevel_request(runlevel: u8) -> [u8; REQUEST_SIZE] {
    let mut request = [0u8; REQUEST_SIZE];
    let fields = [INIT_MAGIC, INIT_CMD_RUNLVL, i32::from(runlevel), 0];
    for (slot, value) in request.chunks_exact_mut(4).zip(fields) {
        slot.copy_from_slice(&value.to_ne_bytes());
    }
    request
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;

    #[test]
    fn the_request_is_sysvinits_layout() {
        let request = runlevel_request(b'0');
        assert_eq!(request.len(), 384);
        assert_eq!(&request[0..4], &0x0309_1969i32.to_ne_bytes());
        assert_eq!(&request[4..8], &1i32.to_ne_bytes());
        assert_eq!(&request[8..12], &i32::from(b'0').to_ne_bytes());
        assert!(request[12..].iter().all(|b| *b == 0));
    }

    /// This process's root stands in for a container's: a FIFO with a
    /// reader gets the request, a regular file at the path is not
    /// written, and a missing FIFO says so.
    #[test]
    fn a_request_reaches_a_listening_fifo_only() {
        let dir = tempfile::tempdir().unwrap();
        // /proc/self/root resolves as `/`: paths below are absolute.
        let me = std::process::id() as i32;
        let rel = |p: &std::path::Path| p.strip_prefix("/").unwrap().to_str().unwrap().to_owned();
        let fifo = dir.path().join("initctl");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let reader =
            nix::fcntl::open(&fifo, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty()).unwrap();
        let path = rel(&fifo);
        let opened = open(me, &path, true).unwrap();
        std::fs::File::from(opened)
            .write_all(&runlevel_request(b'6'))
            .unwrap();
        let mut got = [0u8; REQUEST_SIZE];
        let read = nix::unistd::read(&reader, &mut got).unwrap();
        assert_eq!(read, REQUEST_SIZE);
        assert_eq!(got, runlevel_request(b'6'));
        drop(reader);
        // No reader: ENXIO rather than a blocked monitor.
        assert_eq!(open(me, &path, true).unwrap_err(), nix::errno::Errno::ENXIO);
        // A regular file is not a FIFO.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert_eq!(
            open(me, &rel(&plain), true).unwrap_err(),
            nix::errno::Errno::ENOENT
        );
    }
}
