//! Who may mutate: root, members of the configured group, and whoever
//! polkit allows `org.lxvirt.lxvirt1.manage` (when polkit runs). Who may
//! read: the same, and whoever polkit allows `org.lxvirt.lxvirt1.monitor`
//! (by default everyone; without polkit, everyone).
//!
//! Before any of that, a caller inside one of lxvirt's own containers is
//! refused whatever its uid (its root may be host root, and the bus
//! socket may be reachable from inside), unless the container's
//! `<lxvirt:api access='read|manage'/>` lets it through.
//!
//! The bus policy lets every local user call lxvirtd (only root may own
//! its name); these checks decide, on any bus. A caller on the daemon's
//! private socket (`private`) is checked the same way, by the uid and
//! pid the socket reported when it connected.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use nix::unistd::{Gid, Group, Uid, User};
use zbus::OwnedGuid;
use zbus::message::Header;
use zbus::names::{BusName, OwnedUniqueName};

use super::error::Error;
use crate::core::tenants::Tenants;
use crate::domain::ApiAccess;
use crate::service::polkit::{Decision, MANAGE_ACTION, MONITOR_ACTION, Polkit, Subject};

/// Bus connections allowed to read are remembered, up to this many
/// (then forgotten all at once): a unique name is never reused on a bus,
/// and reads are frequent (a property read each).
const READERS_REMEMBERED: usize = 4096;

/// The processes behind bus connections are remembered, up to this many
/// (then forgotten all at once): a connection's uid and pid are those of
/// its process when it connected and never change, and asking the bus is
/// a round trip on the path of every call.
const CALLERS_REMEMBERED: usize = 4096;

/// Decides whether a caller may call mutating methods, or read.
#[derive(Debug, Clone)]
pub struct Authorizer {
    group: Option<String>,
    polkit: Option<Polkit>,
    tenants: Tenants,
    readers: Arc<Mutex<HashSet<OwnedUniqueName>>>,
    callers: Arc<Mutex<HashMap<OwnedUniqueName, Caller>>>,
    /// The processes behind the private socket's connections, by the
    /// GUID each connection was given when it was accepted (its messages
    /// carry no sender to ask the bus about).
    peers: Arc<Mutex<HashMap<OwnedGuid, Caller>>>,
}

/// The process behind a bus connection, as the bus reports it.
#[derive(Debug, Clone, Copy)]
struct Caller {
    uid: u32,
    pid: u32,
}

impl Authorizer {
    /// `group`: members of this group may mutate besides root (`lxvirt` by default).
    pub fn new(group: Option<String>) -> Authorizer {
        Authorizer {
            group,
            polkit: None,
            tenants: Tenants::default(),
            readers: Arc::default(),
            callers: Arc::default(),
            peers: Arc::default(),
        }
    }

    /// Registers the process behind a private-socket connection, as the
    /// socket reported it (`SO_PEERCRED`), until [`Authorizer::peer_gone`].
    pub(crate) fn peer_connected(&self, guid: OwnedGuid, uid: u32, pid: u32) {
        self.peers().insert(guid, Caller { uid, pid });
    }

    pub(crate) fn peer_gone(&self, guid: &OwnedGuid) {
        self.peers().remove(guid);
    }

    /// How many private-socket connections are open.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers().len()
    }

    /// The process behind a peer-to-peer `connection`: only connections
    /// the private socket accepted have one.
    fn peer(&self, connection: &zbus::Connection) -> Result<Caller, Error> {
        self.peers()
            .get(connection.server_guid())
            .copied()
            .ok_or_else(|| {
                Error::AccessDenied(
                    "a peer-to-peer caller lxvirtd did not accept on its private socket; \
                     call through the bus"
                        .into(),
                )
            })
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedGuid, Caller>> {
        // A panic while holding it left a plain map: still usable.
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses callers inside the running containers `tenants` lists
    /// (the manager keeps it current), as their settings say.
    pub fn with_tenants(mut self, tenants: Tenants) -> Authorizer {
        self.tenants = tenants;
        self
    }

    /// Refuses `caller` if it runs inside one of lxvirt's containers whose
    /// `<lxvirt:api>` does not allow `wanted`. `Ok(true)`: it runs in the
    /// daemon's own pid namespace (or no container runs), which it cannot
    /// leave — a verdict to remember.
    fn check_origin(&self, caller: Caller, wanted: ApiAccess, action: &str) -> Result<bool, Error> {
        if self.tenants.is_empty() {
            return Ok(true);
        }
        let namespaces = crate::sys::process::pid_namespaces(caller.pid).map_err(|e| {
            Error::AccessDenied(format!(
                "cannot tell where the caller (pid {pid}) runs: {e}; call again from a process that stays until the answer",
                pid = caller.pid
            ))
        })?;
        let Some(tenant) = self.tenants.find(&namespaces) else {
            return Ok(namespaces.is_empty());
        };
        if tenant.access >= wanted {
            return Ok(false);
        }
        let setting = match wanted {
            ApiAccess::Manage => "<lxvirt:api access='manage'/>",
            _ => "<lxvirt:api access='read'/> (or 'manage')",
        };
        Err(Error::AccessDenied(format!(
            "the caller (pid {pid}, uid {uid}) runs inside container '{name}', which may not {action}: \
             its definition allows {allowed}; a container calls lxvirtd only with {setting} in its definition",
            pid = caller.pid,
            uid = caller.uid,
            name = tenant.name,
            allowed = match tenant.access {
                ApiAccess::NoAccess => "no calls",
                ApiAccess::Read => "reads only",
                ApiAccess::Manage => "every call",
            },
        )))
    }

    /// Checks that the sender of `header` may read: once per bus
    /// connection, as libvirt asks once per client. Without a header (the
    /// daemon's own use) it may.
    pub async fn check_read(
        &self,
        connection: &zbus::Connection,
        header: Option<&Header<'_>>,
    ) -> Result<(), Error> {
        let Some(header) = header else {
            return Ok(());
        };
        if self.polkit.is_none() && self.tenants.is_empty() {
            return Ok(());
        }
        let sender = header.sender();
        if sender.is_some_and(|s| self.readers().contains(s.as_str())) {
            return Ok(());
        }
        let caller = self.caller_behind(connection, sender).await?;
        // A caller in another pid namespace is checked at each new read:
        // the container it runs in may have started a moment ago.
        let remember = self.check_origin(
            caller,
            ApiAccess::Read,
            "read lxvirt's domains, networks and images",
        )?;
        let uid = caller.uid;
        if let Some(polkit) = &self.polkit
            && !self.allows(Uid::from_raw(uid))
        {
            match polkit
                .check(subject_of(caller), MONITOR_ACTION, false)
                .await
            {
                Ok(Decision::Allowed) => {}
                Ok(_) => {
                    let group = self.group.as_deref().unwrap_or("(none)");
                    return Err(Error::AccessDenied(format!(
                        "uid {uid} may not read lxvirt's domains, networks and images: polkit \
                         does not allow {MONITOR_ACTION} (root and members of group '{group}' may)"
                    )));
                }
                // Reading stays open where polkit cannot decide.
                Err(error) if error.is_absent() => {}
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain::error_chain(&error), "polkit could not decide on reading; allowed");
                }
            }
        }
        // A peer's check asks nobody: nothing to remember.
        let (true, Some(sender)) = (remember, sender) else {
            return Ok(());
        };
        let mut readers = self.readers();
        if readers.len() >= READERS_REMEMBERED {
            readers.clear();
        }
        readers.insert(sender.to_owned().into());
        Ok(())
    }

    /// The process behind a message: its bus sender's, or without one (a
    /// peer-to-peer connection) the private socket's peer.
    async fn caller_behind(
        &self,
        connection: &zbus::Connection,
        sender: Option<&zbus::names::UniqueName<'_>>,
    ) -> Result<Caller, Error> {
        match sender {
            Some(sender) => self.caller(connection, sender).await,
            None => self.peer(connection),
        }
    }

    /// The process behind `sender`: remembered, else asked of the bus.
    async fn caller(
        &self,
        connection: &zbus::Connection,
        sender: &zbus::names::UniqueName<'_>,
    ) -> Result<Caller, Error> {
        let remembered = self.callers().get(sender.as_str()).copied();
        if let Some(caller) = remembered {
            return Ok(caller);
        }
        let dbus = zbus::fdo::DBusProxy::new(connection).await?;
        let caller = caller_of(&dbus, sender).await?;
        let mut callers = self.callers();
        if callers.len() >= CALLERS_REMEMBERED {
            callers.clear();
        }
        callers.insert(sender.to_owned().into(), caller);
        Ok(caller)
    }

    fn callers(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUniqueName, Caller>> {
        // A panic while holding it left a plain map: still usable.
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, HashSet<OwnedUniqueName>> {
        // A panic while holding it left a plain set: still usable.
        self.readers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks `polkit` about callers that are neither root nor in the group.
    pub fn with_polkit(mut self, polkit: Option<Polkit>) -> Authorizer {
        self.polkit = polkit;
        self
    }

    /// Checks the sender of `header`, asking the bus for its uid (or the
    /// private socket's peer, as it connected).
    pub async fn check(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        action: &str,
    ) -> Result<(), Error> {
        let caller = self.caller_behind(connection, header.sender()).await?;
        self.check_origin(caller, ApiAccess::Manage, action)?;
        let uid = caller.uid;
        if self.allows(Uid::from_raw(uid)) {
            return Ok(());
        }
        let group = self.group.as_deref().unwrap_or("(none)");
        if let Some(polkit) = &self.polkit {
            let subject = subject_of(caller);
            let interactive = header
                .primary()
                .flags()
                .contains(zbus::message::Flags::ALLOW_INTERACTIVE_AUTH);
            match polkit.check(subject, MANAGE_ACTION, interactive).await {
                Ok(Decision::Allowed) => return Ok(()),
                Ok(Decision::NeedsAuthentication) if interactive => {
                    return Err(Error::AccessDenied(format!(
                        "uid {uid} may {action} after authenticating ({MANAGE_ACTION}), \
                         and no polkit agent asked; run one (pkttyagent) or ask an administrator"
                    )));
                }
                Ok(Decision::NeedsAuthentication) => {
                    return Err(Error::AccessDenied(format!(
                        "uid {uid} may {action} after authenticating ({MANAGE_ACTION}); \
                         call again allowing interactive authorization, with a polkit agent running"
                    )));
                }
                Ok(Decision::Denied) => {
                    return Err(Error::AccessDenied(format!(
                        "uid {uid} may not {action}: polkit denies {MANAGE_ACTION} \
                         (root and members of group '{group}' may)"
                    )));
                }
                Err(error) if error.is_absent() => {}
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain::error_chain(&error), "polkit could not decide; the group rule does");
                }
            }
        }
        Err(Error::AccessDenied(format!(
            "uid {uid} may not {action}; only root and members of group '{group}' may"
        )))
    }

    fn allows(&self, uid: Uid) -> bool {
        if uid.is_root() {
            return true;
        }
        let Some(group_name) = &self.group else {
            return false;
        };
        let Ok(Some(group)) = Group::from_name(group_name) else {
            return false;
        };
        let Ok(Some(user)) = User::from_uid(uid) else {
            return false;
        };
        user.gid == group.gid || group.mem.contains(&user.name) || in_group(&user, group.gid)
    }
}

/// The uid and pid of the process behind `sender`, from the bus (one
/// round trip).
async fn caller_of(
    dbus: &zbus::fdo::DBusProxy<'_>,
    sender: &zbus::names::UniqueName<'_>,
) -> Result<Caller, Error> {
    let credentials = dbus
        .get_connection_credentials(BusName::Unique(sender.to_owned()))
        .await
        .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))?;
    match (credentials.unix_user_id(), credentials.process_id()) {
        (Some(uid), Some(pid)) => Ok(Caller { uid, pid }),
        _ => Err(Error::AccessDenied(
            "cannot identify the caller: the bus did not report its uid and pid".into(),
        )),
    }
}

/// polkit's subject for `caller`.
fn subject_of(caller: Caller) -> Subject {
    Subject {
        pid: caller.pid,
        start_time: crate::sys::process::start_time(nix::unistd::Pid::from_raw(
            i32::try_from(caller.pid).unwrap_or(-1),
        ))
        .unwrap_or(0),
        uid: caller.uid,
    }
}

fn in_group(user: &User, gid: Gid) -> bool {
    let Ok(name) = std::ffi::CString::new(user.name.as_bytes()) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|groups| groups.contains(&gid))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_allowed_and_nobody_is_not() {
        let auth = Authorizer::new(Some("lxvirt-no-such-group".into()));
        assert!(auth.allows(Uid::from_raw(0)));
        assert!(!auth.allows(Uid::from_raw(65534)));
        assert!(!Authorizer::new(None).allows(Uid::from_raw(65534)));
    }
}
