//! Who may mutate: root, members of the configured group, and whoever
//! polkit allows `org.lxvirt.lxvirt1.manage` (when polkit runs).
//!
//! The bus policy lets every local user call lxvirtd (only root may own
//! its name); this check decides, for every call that changes something,
//! on any bus.

use nix::unistd::{Gid, Group, Uid, User};
use zbus::message::Header;
use zbus::names::BusName;

use super::error::Error;
use crate::service::polkit::{Decision, MANAGE_ACTION, Polkit, Subject};

/// Decides whether a caller may call mutating methods.
#[derive(Debug, Clone)]
pub struct Authorizer {
    group: Option<String>,
    polkit: Option<Polkit>,
}

impl Authorizer {
    /// `group`: members of this group may mutate besides root (`lxvirt` by default).
    pub fn new(group: Option<String>) -> Authorizer {
        Authorizer {
            group,
            polkit: None,
        }
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
        let uid = dbus
            .get_connection_unix_user(BusName::Unique(sender.to_owned()))
            .await
            .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))?;
        if self.allows(Uid::from_raw(uid)) {
            return Ok(());
        }
        let group = self.group.as_deref().unwrap_or("(none)");
        if let Some(polkit) = &self.polkit {
            let pid = dbus
                .get_connection_unix_process_id(BusName::Unique(sender.to_owned()))
                .await
                .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))?;
            let subject = Subject {
                pid,
                start_time: crate::sys::process::start_time(nix::unistd::Pid::from_raw(
                    i32::try_from(pid).unwrap_or(-1),
                ))
                .unwrap_or(0),
                uid,
            };
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
