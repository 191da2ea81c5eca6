//! A private-socket connection as zbus sees it: a unix stream that passes
//! file descriptors, whose peer is who `SO_PEERCRED` said at accept.
//!
//! zbus's own unix stream also looks the peer's supplementary groups up
//! (`getpwuid_r`, `getgrouplist`) for every server-side connection, on a
//! blocking thread: a hop to another thread and back, and NSS, which on a
//! systemd host asks `systemd-userdbd` over varlink, before the handshake
//! can answer. Nothing here reads groups (the socket is root's; callers
//! are checked by uid, [`super::Authorizer`]), so a connection of this
//! socket reports the uid and pid alone.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, recvmsg, sendmsg, shutdown,
};
use tokio::io::Interest;
use tokio::net::UnixStream;
use zbus::connection::socket::{ReadHalf, Socket, Split, WriteHalf};
use zbus::export::async_trait::async_trait;
use zbus::fdo::ConnectionCredentials;

/// Descriptors one message may carry at most: the kernel's `SCM_MAX_FD`,
/// so that none it delivers is cut off.
const MAX_FDS: usize = 253;

/// An accepted private-socket connection and its peer's uid and pid.
#[derive(Debug)]
pub struct PeerSocket {
    stream: UnixStream,
    peer: Peer,
}

/// Who is at the other end, as the socket said.
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    pid: u32,
}

impl Peer {
    fn credentials(self) -> ConnectionCredentials {
        ConnectionCredentials::default()
            .set_unix_user_id(self.uid)
            .set_process_id(self.pid)
    }
}

impl PeerSocket {
    pub fn new(stream: UnixStream, uid: u32, pid: u32) -> PeerSocket {
        PeerSocket {
            stream,
            peer: Peer { uid, pid },
        }
    }
}

impl Socket for PeerSocket {
    type ReadHalf = PeerRead;
    type WriteHalf = PeerWrite;

    fn split(self) -> Split<PeerRead, PeerWrite> {
        let stream = Arc::new(self.stream);
        Split::new(
            PeerRead {
                stream: stream.clone(),
                peer: self.peer,
            },
            PeerWrite {
                stream,
                peer: self.peer,
            },
        )
    }
}

/// The half a connection receives through.
#[derive(Debug)]
pub struct PeerRead {
    stream: Arc<UnixStream>,
    peer: Peer,
}

/// The half a connection sends through.
#[derive(Debug)]
pub struct PeerWrite {
    stream: Arc<UnixStream>,
    peer: Peer,
}

#[async_trait]
impl ReadHalf for PeerRead {
    async fn recvmsg(&mut self, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let fd = self.stream.as_raw_fd();
        self.stream
            .async_io(Interest::READABLE, || receive(fd, buffer))
            .await
    }

    fn can_pass_unix_fd(&self) -> bool {
        true
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(self.peer.credentials())
    }
}

#[async_trait]
impl WriteHalf for PeerWrite {
    async fn sendmsg(&mut self, buffer: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        self.stream
            .async_io(Interest::WRITABLE, || send(fd, buffer, &raw))
            .await
    }

    async fn close(&mut self) -> io::Result<()> {
        match shutdown(self.stream.as_raw_fd(), Shutdown::Both) {
            // The peer went first.
            Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    fn can_pass_unix_fd(&self) -> bool {
        true
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(self.peer.credentials())
    }
}

/// One `recvmsg` on `fd`, with the descriptors that came along. An end of
/// stream is an error, as zbus expects of a socket.
fn receive(fd: RawFd, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buffer)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel has just installed these descriptors in
            // this process for this message; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message carried more than {MAX_FDS} file descriptors"),
        ));
    }
    if msg.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the peer closed the connection",
        ));
    }
    Ok((msg.bytes, fds))
}

/// One `sendmsg` on `fd`, the descriptors (if any) with it.
fn send(fd: RawFd, buffer: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(buffer)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    Ok(sendmsg::<()>(
        fd,
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;

    use zbus::{Guid, interface};

    use super::PeerSocket;

    /// What the tests call on the server's side.
    struct Echo;

    #[interface(name = "org.lxvirt.test.Echo")]
    impl Echo {
        /// Reads what `fd` holds, hands back a descriptor of its own
        /// holding the same, and says who called.
        async fn pass(
            &self,
            fd: zbus::OwnedFd,
            #[zbus(connection)] connection: &zbus::Connection,
        ) -> (String, zbus::OwnedFd, u32, u32, u32) {
            let mut text = String::new();
            std::fs::File::from(OwnedFd::from(fd))
                .read_to_string(&mut text)
                .unwrap();
            let (read, mut write) = std::io::pipe().unwrap();
            write.write_all(text.as_bytes()).unwrap();
            drop(write);
            let creds = connection.peer_creds().await.unwrap();
            (
                text,
                OwnedFd::from(read).into(),
                creds.unix_user_id().unwrap(),
                creds.process_id().unwrap(),
                creds.unix_group_ids().map_or(0, |g| g.len() as u32),
            )
        }
    }

    #[zbus::proxy(
        interface = "org.lxvirt.test.Echo",
        default_service = "org.lxvirt.test",
        default_path = "/test"
    )]
    trait Echo {
        fn pass(&self, fd: zbus::Fd<'_>) -> zbus::Result<(String, zbus::OwnedFd, u32, u32, u32)>;
    }

    /// The pid the server is told its peer has: not this process's, so
    /// that the tests see it came from the [`PeerSocket`], not the socket.
    /// (The uid must be the real one: the handshake checks the peer's
    /// claim against it.)
    const TOLD_PID: u32 = 17;

    /// A server over a [`PeerSocket`] and a client of zbus's own, on the
    /// two ends of a real socket pair.
    async fn pair() -> (zbus::Connection, zbus::Connection) {
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let client = client.into_std().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let server = zbus::connection::Builder::socket(PeerSocket::new(server, uid, TOLD_PID))
            .server(Guid::generate())
            .p2p()
            .serve_at("/test", Echo)
            .build();
        let client = zbus::connection::Builder::unix_stream(client).p2p().build();
        let (server, client) = tokio::join!(server, client);
        (server.unwrap(), client.unwrap())
    }

    /// Descriptors go both ways; the peer is who the socket said, with no
    /// groups looked up.
    #[tokio::test]
    async fn descriptors_pass_both_ways_and_the_peer_is_the_accepted_one() {
        let (_server, client) = pair().await;
        let echo = EchoProxy::new(&client).await.unwrap();
        for round in 0..3 {
            let (read, mut write) = std::io::pipe().unwrap();
            let sent = format!("round {round}");
            write.write_all(sent.as_bytes()).unwrap();
            drop(write);
            let read = OwnedFd::from(read);
            let (text, fd, uid, pid, groups) = echo.pass(zbus::Fd::from(&read)).await.unwrap();
            assert_eq!(text, sent);
            let mut back = String::new();
            std::fs::File::from(OwnedFd::from(fd))
                .read_to_string(&mut back)
                .unwrap();
            assert_eq!(back, sent, "the server's descriptor reads the same");
            let me = nix::unistd::getuid().as_raw();
            assert_eq!((uid, pid, groups), (me, TOLD_PID, 0));
        }
    }

    /// A client that goes away ends the server's connection.
    #[tokio::test]
    async fn the_connection_ends_when_the_peer_closes() {
        let (server, client) = pair().await;
        drop(client);
        tokio::time::timeout(std::time::Duration::from_secs(5), server.closed())
            .await
            .expect("the server's connection ended");
    }
}
