//! Who may mutate: root, and members of the configured group.
//!
//! The bus policy file is the first gate; this check is the second, so
//! that a daemon on a bus without lxvirt's policy (a private or session
//! bus) is not open to every local user.

use nix::unistd::{Gid, Group, Uid, User};
use zbus::message::Header;
use zbus::names::BusName;

use super::error::Error;

/// Decides whether a caller may call mutating methods.
#[derive(Debug, Clone)]
pub struct Authorizer {
    group: Option<String>,
}

impl Authorizer {
    /// `group`: members of this group may mutate besides root (`lxvirt` by default).
    pub fn new(group: Option<String>) -> Authorizer {
        Authorizer { group }
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
            Ok(())
        } else {
            let group = self.group.as_deref().unwrap_or("(none)");
            Err(Error::AccessDenied(format!(
                "uid {uid} may not {action}; only root and members of group '{group}' may"
            )))
        }
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
