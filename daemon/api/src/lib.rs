//! lxvirt's D-Bus API as clients see it: names, paths, the committed
//! introspection contract, the typed errors, the flag words, the records
//! some methods return, and client proxies.
//!
//! Bus name `org.lxvirt.lxvirt1`; the manager at `/org/lxvirt/lxvirt1` with
//! `org.lxvirt.lxvirt1.Manager`, `org.lxvirt.lxvirt1.Images` and
//! `org.freedesktop.DBus.ObjectManager`; one object per domain at
//! `/org/lxvirt/lxvirt1/domain/_<uuid>` with `org.lxvirt.lxvirt1.Domain`;
//! one object per network at `/org/lxvirt/lxvirt1/network/_<uuid>` with
//! `org.lxvirt.lxvirt1.Network`. The contract is committed in `daemon/data/org.lxvirt.lxvirt1.xml`
//! ([`INTROSPECTION_XML`]).
//!
//! A crate of its own so that clients (`lxvirt`, tests, other programs)
//! build without the daemon; the daemon implements the interfaces
//! (`lxvirtd::dbus`) and maps its errors to [`Error`].

mod error;
mod flags;
mod images;
pub mod proxy;
mod summary;

use uuid::Uuid;
use zbus::{ObjectPath, OwnedObjectPath};

pub use error::Error;
pub use flags::{AffectFlags, UndefineFlags, XmlFlags};
pub use images::ImageRecord;
pub use summary::{ApplyStepRecord, DomainSummaryRecord};

/// The well-known bus name.
pub const BUS_NAME: &str = "org.lxvirt.lxvirt1";
/// Path of the manager object (and the ObjectManager).
pub const MANAGER_PATH: &str = "/org/lxvirt/lxvirt1";
pub const MANAGER_INTERFACE: &str = "org.lxvirt.lxvirt1.Manager";
pub const DOMAIN_INTERFACE: &str = "org.lxvirt.lxvirt1.Domain";
pub const NETWORK_INTERFACE: &str = "org.lxvirt.lxvirt1.Network";
/// The image store's interface, on the manager's object.
pub const IMAGES_INTERFACE: &str = "org.lxvirt.lxvirt1.Images";
/// Prefix of domain object paths.
pub const DOMAIN_PATH_PREFIX: &str = "/org/lxvirt/lxvirt1/domain/_";
/// Prefix of network object paths.
pub const NETWORK_PATH_PREFIX: &str = "/org/lxvirt/lxvirt1/network/_";
/// The committed introspection contract of the interfaces.
pub const INTROSPECTION_XML: &str = include_str!("../../data/org.lxvirt.lxvirt1.xml");

/// Object path of a domain: its uuid with `-` as `_`, behind a `_` so the
/// element never starts with a digit.
pub fn domain_path(uuid: Uuid) -> OwnedObjectPath {
    path_of(DOMAIN_PATH_PREFIX, uuid)
}

/// The uuid in a domain object path, if it is one.
pub fn uuid_from_path(path: &ObjectPath<'_>) -> Option<Uuid> {
    uuid_in(DOMAIN_PATH_PREFIX, path)
}

/// Object path of a network, made as a domain's is.
pub fn network_path(uuid: Uuid) -> OwnedObjectPath {
    path_of(NETWORK_PATH_PREFIX, uuid)
}

/// The uuid in a network object path, if it is one.
pub fn uuid_from_network_path(path: &ObjectPath<'_>) -> Option<Uuid> {
    uuid_in(NETWORK_PATH_PREFIX, path)
}

fn path_of(prefix: &str, uuid: Uuid) -> OwnedObjectPath {
    let path = format!("{prefix}{}", uuid.as_hyphenated()).replace('-', "_");
    // Hex digits and '_' are valid in object path elements.
    OwnedObjectPath::from(ObjectPath::from_string_unchecked(path))
}

fn uuid_in(prefix: &str, path: &ObjectPath<'_>) -> Option<Uuid> {
    let tail = path.as_str().strip_prefix(prefix)?;
    Uuid::parse_str(&tail.replace('_', "-")).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{
        DOMAIN_PATH_PREFIX, MANAGER_PATH, NETWORK_PATH_PREFIX, domain_path, network_path,
        uuid_from_network_path, uuid_from_path,
    };
    use uuid::Uuid;
    use zbus::ObjectPath;

    #[test]
    fn domain_paths_round_trip() {
        let uuid = Uuid::parse_str("0f6c4a52-9b1e-4d2a-8c3f-5e7a9b1c2d3e").unwrap();
        let path = domain_path(uuid);
        assert_eq!(
            path.as_str(),
            format!("{DOMAIN_PATH_PREFIX}0f6c4a52_9b1e_4d2a_8c3f_5e7a9b1c2d3e")
        );
        assert_eq!(uuid_from_path(&path), Some(uuid));
        let manager = ObjectPath::try_from(MANAGER_PATH).unwrap();
        assert_eq!(uuid_from_path(&manager), None);
    }

    #[test]
    fn network_paths_round_trip_and_are_not_domain_paths() {
        let uuid = Uuid::parse_str("0f6c4a52-9b1e-4d2a-8c3f-5e7a9b1c2d3e").unwrap();
        let path = network_path(uuid);
        assert_eq!(
            path.as_str(),
            format!("{NETWORK_PATH_PREFIX}0f6c4a52_9b1e_4d2a_8c3f_5e7a9b1c2d3e")
        );
        assert_eq!(uuid_from_network_path(&path), Some(uuid));
        assert_eq!(uuid_from_path(&path), None);
        assert_eq!(uuid_from_network_path(&domain_path(uuid)), None);
    }
}
