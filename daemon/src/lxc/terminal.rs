//! A terminal for a command entered with `enter -t` (`lxvirt shell`): a
//! new pty of the container's own devpts instance, as a login inside
//! would open, so that it counts against the container's ptys, carries the
//! container's file label, and `tty`/`ttyname` inside name it.
//!
//! The monitor opens the container's `/dev/pts/ptmx` from the host through
//! `/proc/INIT/root` with `RESOLVE_IN_ROOT` (a link the container planted
//! cannot lead outside its root), checks that it is the ptmx of a devpts
//! (not a device node that would open the host's instance), and takes
//! the slave with `TIOCGPTPEER`, which needs no path at all.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{SFlag, fstat};
use nix::sys::statfs::{DEVPTS_SUPER_MAGIC, fstatfs};

use crate::sys::linux::open_in_root;

/// Opens a pty in the devpts of the container whose init is `init_pid`;
/// the slave goes to `owner` (host uid and gid of root inside) when the
/// container has a user namespace. Returns (master, slave).
pub fn open(init_pid: i32, owner: Option<(u32, u32)>) -> nix::Result<(OwnedFd, OwnedFd)> {
    open_in(format!("/proc/{init_pid}/root").as_str(), owner)
}

/// As [`open`], in the root directory `root`.
fn open_in(root: &str, owner: Option<(u32, u32)>) -> nix::Result<(OwnedFd, OwnedFd)> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY;
    let master = open_in_root(std::path::Path::new(root), "/dev/pts/ptmx", flags)?;
    let kind = SFlag::from_bits_truncate(fstat(master.as_fd())?.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFCHR || fstatfs(master.as_fd())?.filesystem_type() != DEVPTS_SUPER_MAGIC {
        return Err(Errno::ENODEV);
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, valid for the
    // call; it acts only on the master we own.
    Errno::result(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new
    // descriptor of the master's slave, which nothing else owns.
    let slave =
        Errno::result(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the ioctl succeeded: `slave` is a new descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(
            slave.as_fd(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )?;
    }
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;

    #[test]
    fn the_pty_comes_from_a_devpts_inside_the_root_only() {
        if !nix::unistd::Uid::effective().is_root() {
            return; // mknod needs root; the real tests run as root
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        // A link that would leave the root resolves inside it: nothing.
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::os::unix::fs::symlink("/elsewhere/pts", dir.path().join("dev/pts")).unwrap();
        assert_eq!(open_in(root, None).unwrap_err(), Errno::ENOENT);
        // A ptmx node outside a devpts would open the host's instance.
        std::fs::remove_file(dir.path().join("dev/pts")).unwrap();
        std::fs::create_dir_all(dir.path().join("dev/pts")).unwrap();
        nix::sys::stat::mknod(
            &dir.path().join("dev/pts/ptmx"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(5, 2),
        )
        .unwrap();
        // (The kernel refuses one without a devpts at `pts` beside it;
        // lxvirt refuses any that is not a devpts's own.)
        let refused = open_in(root, None).unwrap_err();
        assert!(
            matches!(refused, Errno::ENOENT | Errno::ENODEV),
            "{refused}"
        );
        // The host's own devpts gives a terminal, its slave owned as asked.
        let (master, slave) = open_in("/", Some((4242, 4343))).unwrap();
        assert!(nix::unistd::isatty(&slave).unwrap());
        let stat = fstat(slave.as_fd()).unwrap();
        assert_eq!((stat.st_uid, stat.st_gid), (4242, 4343));
        drop(master);
    }
}
