//! Who may mutate: root, members of the configured group, and whoever
//! polkit allows `org.lxvirt.lxvirt1.manage` (when polkit runs). Who may
//! read: the same, and whoever polkit allows `org.lxvirt.lxvirt1.monitor`
//! (by default everyone; without polkit, everyone).
//!
//! The bus policy lets every local user call lxvirtd (only root may own
//! its name); these checks decide, on any bus.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use nix::unistd::{Gid, Group, Uid, User};
use zbus::message::Header;
use zbus::names::{BusName, OwnedUniqueName};

use super::error::Error;
use crate::service::polkit::{Decision, MANAGE_ACTION, MONITOR_ACTION, Polkit, Subject};

/// Bus connections allowed to read are remembered, up to this many
/// (then forgotten all at once): a unique name is never reused on a bus,
/// and reads are frequent (a property read each).
const READERS_REMEMBERED: usize = 4096;

/// Decides whether a caller may call mutating methods, or read.
#[derive(Debug, Clone)]
pub struct Authorizer {
    group: Option<String>,
    polkit: Option<Polkit>,
    readers: Arc<Mutex<HashSet<OwnedUniqueName>>>,
}

impl Authorizer {
    /// `group`: members of this group may mutate besides root (`lxvirt` by default).
    pub fn new(group: Option<String>) -> Authorizer {
        Authorizer {
            group,
            polkit: None,
            readers: Arc::default(),
        }
    }

    /// Checks that the sender of `header` may read: once per connection,
    /// as libvirt asks once per client. Without a header (the daemon's own
    /// use) or a sender (a peer-to-peer connection) it may.
    pub async fn check_read(
        &self,
        connection: &zbus::Connection,
        header: Option<&Header<'_>>,
    ) -> Result<(), Error> {
        let Some(sender) = header.and_then(|h| h.sender()) else {
            return Ok(());
        };
        let Some(polkit) = &self.polkit else {
            return Ok(());
        };
        if self.readers().contains(sender.as_str()) {
            return Ok(());
        }
        let dbus = zbus::fdo::DBusProxy::new(connection).await?;
        let uid = uid_of(&dbus, sender).await?;
        if !self.allows(Uid::from_raw(uid)) {
            let subject = subject_of(&dbus, sender, uid).await?;
            match polkit.check(subject, MONITOR_ACTION, false).await {
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
        let mut readers = self.readers();
        if readers.len() >= READERS_REMEMBERED {
            readers.clear();
        }
        readers.insert(sender.to_owned().into());
        Ok(())
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

    /// Checks the sender of `header`, asking the bus for its uid.
    pub async fn check(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        action: &str,
    ) -> Result<(), Error> {
        let Some(sender) = header.sender() else {
            // A peer-to-peer connection: whoever could open the socket is trusted.
            return Ok(());
        };
        let dbus = zbus::fdo::DBusProxy::new(connection).await?;
        let uid = uid_of(&dbus, sender).await?;
        if self.allows(Uid::from_raw(uid)) {
            return Ok(());
        }
        let group = self.group.as_deref().unwrap_or("(none)");
        if let Some(polkit) = &self.polkit {
            let subject = subject_of(&dbus, sender, uid).await?;
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

/// The uid of the process behind `sender`, from the bus.
async fn uid_of(
    dbus: &zbus::fdo::DBusProxy<'_>,
    sender: &zbus::names::UniqueName<'_>,
) -> Result<u32, Error> {
    dbus.get_connection_unix_user(BusName::Unique(sender.to_owned()))
        .await
        .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))
}

/// polkit's subject for the process behind `sender`.
async fn subject_of(
    dbus: &zbus::fdo::DBusProxy<'_>,
    sender: &zbus::names::UniqueName<'_>,
    uid: u32,
) -> Result<Subject, Error> {
    let pid = dbus
        .get_connection_unix_process_id(BusName::Unique(sender.to_owned()))
        .await
        .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))?;
    Ok(Subject {
        pid,
        start_time: crate::sys::process::start_time(nix::unistd::Pid::from_raw(
            i32::try_from(pid).unwrap_or(-1),
        ))
        .unwrap_or(0),
        uid,
    })
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
