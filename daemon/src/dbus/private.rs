//! The daemon's private socket: the manager's API peer to peer, for root
//! on this host, as systemd serves `systemctl` on `/run/systemd/private`.
//! A call there goes straight to lxvirtd instead of through dbus-daemon
//! (a hop each way fewer, and no round trip to ask the bus who called),
//! and it still works while the bus is down or busy.
//!
//! The socket is `<run-dir>/private`, root's alone (mode 0600). Each
//! connection's uid and pid come from the socket (`SO_PEERCRED`) and go
//! through the same checks as a bus caller's ([`super::Authorizer`]).
//!
//! Served at `/org/lxvirt/lxvirt1`: the manager (the lifecycle by name,
//! definitions, lookups), the images and the object manager. Not served:
//! the domain and network objects and every signal; clients read those
//! through the bus.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use zbus::{Guid, OwnedGuid};

use super::object_manager::ObjectManager;
use super::peer_socket::PeerSocket;
use super::{ImagesObject, MANAGER_PATH, ManagerObject, ManagerSettings, Shared};

use crate::core::ImageStore;

/// The socket's name in the run directory.
pub const SOCKET_NAME: &str = "private";

/// Open connections at most: each holds a descriptor and a task.
const MAX_PEERS: usize = 256;

/// How long a connection may take to authenticate before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the private socket at `path`, replacing one a killed daemon left.
/// The socket is made under another name and renamed into place once it
/// is root's alone, so that nobody else connects to it at `path`.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let staging = path.with_extension("new");
    let _ = std::fs::remove_file(&staging);
    let listener = std::os::unix::net::UnixListener::bind(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// What every connection serves.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub shared: Shared,
    pub settings: ManagerSettings,
    pub images: ImageStore,
}

/// Accepts connections on `listener` until the task is dropped.
pub(crate) async fn accept(listener: tokio::net::UnixListener, served: Served) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, most likely: let some close.
                tracing::warn!(%error, "the private socket cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let credentials = match stream.peer_cred() {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(%error, "a private-socket peer's credentials cannot be read; dropped");
                continue;
            }
        };
        let Some(pid) = credentials.pid().and_then(|p| u32::try_from(p).ok()) else {
            tracing::warn!("a private-socket peer without a pid (another pid namespace?); dropped");
            continue;
        };
        if served.shared.authorizer.peer_count() >= MAX_PEERS {
            tracing::warn!(
                max = MAX_PEERS,
                pid,
                "the private socket has as many connections as it takes; dropped"
            );
            continue;
        }
        tokio::spawn(serve_peer(stream, credentials.uid(), pid, served.clone()));
    }
}

/// Serves one connection until its peer closes it.
async fn serve_peer(stream: tokio::net::UnixStream, uid: u32, pid: u32, served: Served) {
    // The GUID names this connection to the authorizer: a peer's messages
    // carry no sender.
    let guid = Guid::generate();
    let owned = OwnedGuid::from(guid.clone());
    let Served {
        shared,
        settings,
        images,
    } = served;
    let authorizer = shared.authorizer.clone();
    authorizer.peer_connected(owned.clone(), uid, pid);
    let builder = zbus::connection::Builder::socket(PeerSocket::new(stream, uid, pid))
        .server(guid)
        .p2p()
        .serve_at(MANAGER_PATH, ManagerObject::new(shared.clone(), settings))
        .serve_at(MANAGER_PATH, ImagesObject::new(shared.clone(), images))
        .serve_at(
            MANAGER_PATH,
            ObjectManager::new(shared.registry.clone(), shared.authorizer.clone()),
        );
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.build()).await {
        Ok(Ok(connection)) => connection.closed().await,
        Ok(Err(error)) => {
            tracing::debug!(%error, uid, pid, "a private-socket connection failed to start")
        }
        Err(_) => tracing::debug!(uid, pid, "a private-socket peer did not authenticate"),
    }
    authorizer.peer_gone(&owned);
}
