//! What the daemon and a container's monitor say to each other.
//!
//! - At start, the monitor writes one [`LaunchReport`] line to the pipe it
//!   was given, then closes it.
//! - While the container runs, the monitor answers [`Request`]s on a unix
//!   `SOCK_SEQPACKET` socket (`NAME.sock` in the run directory): one JSON
//!   message per packet, file descriptors alongside as `SCM_RIGHTS`.
//! - When init is gone, the monitor writes an [`ExitRecord`] (`NAME.exit`)
//!   atomically and exits; the daemon learns of it through a pidfd, also
//!   after a daemon restart.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use crate::persist::Versioned;

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors in one message (an `enter` passes stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Files of one container in the run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub socket: PathBuf,
    pub exit_record: PathBuf,
    pub log: PathBuf,
    pub status: PathBuf,
}

impl RunFiles {
    pub fn new(run_dir: &Path, name: &str) -> RunFiles {
        RunFiles {
            socket: run_dir.join(format!("{name}.sock")),
            exit_record: run_dir.join(format!("{name}.exit")),
            log: run_dir.join(format!("{name}.log")),
            status: run_dir.join(format!("{name}.status")),
        }
    }
}

/// The monitor's answer to "did the container start?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchReport {
    /// Init has been executed.
    Started { init_pid: i32 },
    /// The container could not start; nothing is left behind.
    Failed { message: String },
}

/// A request to a monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// SIGTERM to init, SIGKILL to the container after `grace_ms`.
    Shutdown { grace_ms: u64 },
    /// SIGKILL to every process of the container.
    Destroy,
    /// Attach to console `index`: the reply carries one end of a socket
    /// pair relayed to the console's pty. A new attach replaces the old.
    Console { index: u32 },
    /// Run a command inside the container with the three descriptors of
    /// the message as its stdin, stdout and stderr. The reply carries a
    /// pipe that yields an [`EnterExit`] line when the command ends.
    Enter {
        argv: Vec<String>,
        env: Vec<String>,
        cwd: Option<PathBuf>,
        /// Skip the container's SELinux process label.
        noseclabel: bool,
    },
    /// Liveness and the pids the monitor knows.
    Status,
}

/// A monitor's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Status {
        init_pid: i32,
        monitor_pid: i32,
    },
    /// The command runs as this host pid.
    Entered {
        pid: i32,
    },
    Error {
        message: String,
    },
}

/// How an `enter`ed command ended, written to its exit pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnterExit {
    Exited { code: i32 },
    Signaled { signal: i32 },
}

/// How init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitExit {
    Exited { code: i32 },
    Signaled { signal: i32 },
}

/// What a client asked that ended the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requested {
    Shutdown,
    Destroy,
}

/// Written by the monitor when init is gone and the container cleaned up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub init: InitExit,
    pub requested: Option<Requested>,
    /// Problems while cleaning up (a cgroup that would not go away, …).
    pub cleanup_errors: Vec<String>,
}

impl Versioned for ExitRecord {
    const VERSION: u32 = 1;
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("monitor socket error")]
    Io(#[from] nix::Error),
    #[error("malformed message")]
    Json(#[from] serde_json::Error),
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("the peer closed the connection")]
    Closed,
}

/// Sends one message with optional descriptors on a seqpacket socket.
pub fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fds: &[RawFd],
) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(message)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives one message and the descriptors that came with it. Blocks
/// unless the socket is non-blocking (then `EAGAIN` comes back as an error).
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
) -> Result<(T, Vec<OwnedFd>), ProtocolError> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // SAFETY: the kernel just installed `fd` in this process
                    // for us (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    if len == 0 {
        return Err(ProtocolError::Closed);
    }
    let message = serde_json::from_slice(&buffer[..len])?;
    Ok((message, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    #[test]
    fn messages_and_descriptors_cross_a_seqpacket_pair() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let request = Request::Enter {
            argv: vec!["hostname".into()],
            env: vec![],
            cwd: None,
            noseclabel: true,
        };
        send(a.as_fd(), &request, &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let (got, fds): (Request, _) = recv(b.as_fd()).unwrap();
        assert_eq!(got, request);
        assert_eq!(fds.len(), 2);
        // The passed write end works.
        nix::unistd::write(&fds[1], b"x").unwrap();
        let mut buf = [0u8; 1];
        nix::unistd::read(&r, &mut buf).unwrap();
        assert_eq!(&buf, b"x");
        drop(a);
        assert!(matches!(
            recv::<Request>(b.as_fd()),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn wire_format_is_stable() {
        assert_eq!(
            serde_json::to_string(&Request::Shutdown { grace_ms: 5000 }).unwrap(),
            r#"{"op":"shutdown","grace_ms":5000}"#
        );
        assert_eq!(
            serde_json::to_string(&LaunchReport::Started { init_pid: 7 }).unwrap(),
            r#"{"started":{"init_pid":7}}"#
        );
    }
}
