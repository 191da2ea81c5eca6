//! Typed D-Bus errors: clients match on these names, never on message text.

use crate::core::CoreError;
use crate::core::error_chain;
use crate::lxc::convert::ConvertError;

/// Errors returned by lxvirt's D-Bus methods, named
/// `org.lxvirt.lxvirt1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.lxvirt.lxvirt1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No domain has the given name, uuid or object path.
    NoSuchDomain(String),
    /// The document is not valid domain XML.
    InvalidXml(String),
    /// The name or uuid is taken, or the name's file is unreadable.
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
}

impl From<CoreError> for Error {
    fn from(error: CoreError) -> Self {
        let message = error_chain(&error);
        match error {
            CoreError::NoSuchDomain(_) => Error::NoSuchDomain(message),
            CoreError::InvalidXml(_) => Error::InvalidXml(message),
            CoreError::NameTaken { .. }
            | CoreError::UuidTaken { .. }
            | CoreError::Blocked { .. } => Error::AlreadyExists(message),
            CoreError::InvalidState(_) | CoreError::NotPersistent(_) | CoreError::Busy { .. } => {
                Error::InvalidState(message)
            }
            CoreError::DriverUnavailable { .. } => Error::DriverUnavailable(message),
            CoreError::Convert(error) => match error {
                ConvertError::NotSupported { .. } => Error::NotSupported(message),
                ConvertError::NotContainer { .. } => Error::DriverUnavailable(message),
                ConvertError::ShareTargetNotRunning { .. } => Error::InvalidState(message),
                ConvertError::Device { .. } | ConvertError::BadPid { .. } => Error::Failed(message),
            },
            CoreError::Security(error) if error.is_unavailable() => {
                Error::SecurityUnavailable(message)
            }
            CoreError::InvalidFlags(_) => Error::InvalidArgument(message),
            CoreError::Driver(_)
            | CoreError::Security(_)
            | CoreError::Failed { .. }
            | CoreError::Store { .. }
            | CoreError::ShuttingDown => Error::Failed(message),
        }
    }
}

impl From<Error> for zbus::fdo::Error {
    /// Property setters can only return `fdo` errors.
    fn from(error: Error) -> Self {
        match error {
            Error::ZBus(e) => zbus::fdo::Error::ZBus(e),
            Error::AccessDenied(m) => zbus::fdo::Error::AccessDenied(m),
            Error::NoSuchDomain(m) => zbus::fdo::Error::UnknownObject(m),
            Error::InvalidArgument(m) | Error::InvalidXml(m) => zbus::fdo::Error::InvalidArgs(m),
            Error::NotSupported(m) => zbus::fdo::Error::NotSupported(m),
            Error::AlreadyExists(m)
            | Error::InvalidState(m)
            | Error::DriverUnavailable(m)
            | Error::SecurityUnavailable(m)
            | Error::Failed(m) => zbus::fdo::Error::Failed(m),
        }
    }
}
