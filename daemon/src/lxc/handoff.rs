//! How a spare monitor gives its early processes (the early init and the
//! early mounter, see [`launch`](crate::lxc::launch)) their spec: the
//! bytes go into a pipe nobody waits on, then an eventfd carries their
//! length and wakes the early process.
//!
//! Not woken by the pipe: a pipe's wake-up is a "sync" one, which tells
//! the scheduler the writer is about to sleep, so the woken process is
//! queued on the writer's CPU. The monitor does not sleep — it goes on
//! making the container's cgroups — and the early process waited behind it
//! (~0.9 ms measured) while the other CPU idled. An eventfd's wake-up lets
//! the scheduler put it on an idle CPU at once. A second pipe tells the
//! early process that the monitor went away (end of file) without a spec.
//! (A memfd would hold any size of spec, but SELinux labels it `tmpfs_t`,
//! which the policy's domains may not write; a pipe they may.)

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// The monitor's side.
#[derive(Debug)]
pub struct SpecSender {
    /// Non-blocking: a spec larger than the pipe holds (64 KiB; specs are
    /// a few) fails the hand-over instead of waiting for a reader that
    /// reads only once told.
    spec: File,
    go: OwnedFd,
    /// Closed (dropped) when the monitor has no spec to give.
    alive: OwnedFd,
}

/// The early process's side.
#[derive(Debug)]
pub struct SpecReceiver {
    spec: File,
    go: OwnedFd,
    alive: OwnedFd,
}

/// A sender and its receiver, for one early process: the receiver goes
/// to the child of the next fork, which closes the sender's descriptors
/// (see [`SpecSender::raw_fds`]); the parent drops the receiver.
pub fn spec_handoff() -> Result<(SpecSender, SpecReceiver), Errno> {
    let (spec_r, spec_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&spec_w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let go = OwnedFd::from(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?);
    let (alive_r, alive_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let receiver = SpecReceiver {
        spec: File::from(spec_r),
        go: go
            .as_fd()
            .try_clone_to_owned()
            .map_err(crate::sys::linux::io_errno)?,
        alive: alive_r,
    };
    let sender = SpecSender {
        spec: File::from(spec_w),
        go,
        alive: alive_w,
    };
    Ok((sender, receiver))
}

impl SpecSender {
    /// Its descriptors, which a forked child must close: the receiver
    /// learns the monitor went away only when every copy of them is shut.
    pub fn raw_fds(&self) -> [RawFd; 3] {
        [
            self.spec.as_raw_fd(),
            self.go.as_raw_fd(),
            self.alive.as_raw_fd(),
        ]
    }

    /// Gives the receiver `spec` (not empty).
    pub fn give(self, spec: &[u8]) -> std::io::Result<()> {
        let length = u64::try_from(spec.len()).map_err(std::io::Error::other)?;
        if length == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        (&self.spec).write_all(spec)?;
        nix::unistd::write(self.go.as_fd(), &length.to_ne_bytes())?;
        Ok(())
    }
}

impl SpecReceiver {
    /// Waits for the spec; `None` when the sender went away without one
    /// (or the descriptors failed).
    pub fn wait(self) -> Option<Vec<u8>> {
        loop {
            let mut fds = [
                PollFd::new(self.go.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.alive.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(Errno::EINTR) => continue,
                Err(_) => return None,
                Ok(_) => {}
            }
            // The spec first: the sender may be gone already after giving it.
            if fds[0].any().unwrap_or(false) {
                let mut length = [0u8; 8];
                let read = nix::unistd::read(self.go.as_fd(), &mut length).ok()?;
                if read != length.len() {
                    return None;
                }
                let length = usize::try_from(u64::from_ne_bytes(length)).ok()?;
                let mut spec = vec![0u8; length];
                (&self.spec).read_exact(&mut spec).ok()?;
                return Some(spec);
            }
            if fds[1].any().unwrap_or(false) {
                return None;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::spec_handoff;

    #[test]
    fn the_receiver_gets_the_bytes_given() {
        let (sender, receiver) = spec_handoff().unwrap();
        let spec = vec![b'x'; 20_000];
        sender.give(&spec).unwrap();
        assert_eq!(receiver.wait(), Some(spec));
    }

    /// More than the pipe holds fails at once (the receiver reads only
    /// once told), and the receiver then ends its wait.
    #[test]
    fn a_spec_larger_than_the_pipe_is_refused_without_waiting() {
        let (sender, receiver) = spec_handoff().unwrap();
        assert!(sender.give(&vec![b'x'; 1 << 20]).is_err());
        assert_eq!(receiver.wait(), None);
    }

    #[test]
    fn a_sender_gone_without_a_spec_ends_the_wait() {
        let (sender, receiver) = spec_handoff().unwrap();
        drop(sender);
        assert_eq!(receiver.wait(), None);
    }

    #[test]
    fn an_empty_spec_is_refused() {
        let (sender, _receiver) = spec_handoff().unwrap();
        assert!(sender.give(b"").is_err());
    }
}
