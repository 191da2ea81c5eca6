//! Typed D-Bus errors: clients match on these names, never on message text.
//!
//! The daemon maps its own errors to these (`lxvirtd::dbus`); clients get
//! them back from a failed call as `zbus::Error::MethodError` with the
//! name, or converted with `Error::from(zbus::Error)`.

/// Errors returned by lxvirt's D-Bus methods, named
/// `org.lxvirt.lxvirt1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.lxvirt.lxvirt1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No domain has the given name, uuid or object path.
    NoSuchDomain(String),
    /// The document is not valid domain (or network) XML.
    InvalidXml(String),
    /// The name or uuid is taken, or the name's file is unreadable; for a
    /// network also its bridge name or a subnet another network has.
    AlreadyExists(String),
    /// The operation is not allowed in the domain's state.
    InvalidState(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// lxvirt does not support this (yet).
    NotSupported(String),
    /// The domain's driver cannot run on this host.
    DriverUnavailable(String),
    /// The security driver the domain asks for is not available.
    SecurityUnavailable(String),
    /// An argument is malformed.
    InvalidArgument(String),
    /// The daemon failed to do something it should be able to (I/O, …).
    Failed(String),
    /// The image store's backend cannot be used on this host.
    StorageUnavailable(String),
    /// No image has the given name or id (or several ids start with it).
    NoSuchImage(String),
    /// The image is used by a domain or a child image.
    ImageInUse(String),
    /// No network has the given name, uuid or object path.
    NoSuchNetwork(String),
}

impl From<Error> for zbus::fdo::Error {
    /// Property setters can only return `fdo` errors.
    fn from(error: Error) -> Self {
        match error {
            Error::ZBus(e) => zbus::fdo::Error::ZBus(e),
            Error::AccessDenied(m) => zbus::fdo::Error::AccessDenied(m),
            Error::NoSuchDomain(m) | Error::NoSuchNetwork(m) => zbus::fdo::Error::UnknownObject(m),
            Error::InvalidArgument(m) | Error::InvalidXml(m) => zbus::fdo::Error::InvalidArgs(m),
            Error::NotSupported(m) => zbus::fdo::Error::NotSupported(m),
            Error::AlreadyExists(m)
            | Error::InvalidState(m)
            | Error::DriverUnavailable(m)
            | Error::SecurityUnavailable(m)
            | Error::StorageUnavailable(m)
            | Error::NoSuchImage(m)
            | Error::ImageInUse(m)
            | Error::Failed(m) => zbus::fdo::Error::Failed(m),
        }
    }
}
