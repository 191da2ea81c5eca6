//! Typed D-Bus errors: clients match on these names, never on message text.

use crate::core::CoreError;
use crate::error_chain::error_chain;
use crate::lxc::convert::ConvertError;
use crate::storage::StorageError;

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
    /// The image store's backend cannot be used on this host.
    StorageUnavailable(String),
    /// No image has the given name or id (or several ids start with it).
    NoSuchImage(String),
    /// The image is used by a domain or a child image.
    ImageInUse(String),
}

/// The D-Bus error for an image store error.
fn storage(error: &StorageError, message: String) -> Error {
    match error {
        StorageError::NoSuchImage(_) | StorageError::AmbiguousImage { .. } => {
            Error::NoSuchImage(message)
        }
        StorageError::ImageInUse { .. } => Error::ImageInUse(message),
        StorageError::TagExists { .. } => Error::AlreadyExists(message),
        StorageError::BackendUnavailable { .. } => Error::StorageUnavailable(message),
        StorageError::NoWritableLayer(_) | StorageError::WritableLayerMismatch { .. } => {
            Error::InvalidState(message)
        }
        StorageError::InvalidName { .. }
        | StorageError::InvalidDomain { .. }
        | StorageError::UnsafeEntry { .. }
        | StorageError::BadArchive { .. }
        | StorageError::UnsupportedCompression { .. }
        | StorageError::Oci { .. }
        | StorageError::ChainTooLong { .. } => Error::InvalidArgument(message),
        _ => Error::Failed(message),
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        let message = error_chain(&error);
        storage(&error, message)
    }
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
                ConvertError::Device { .. }
                | ConvertError::BadPid { .. }
                | ConvertError::ImageRootMissing { .. } => Error::Failed(message),
            },
            CoreError::Security(error) if error.is_unavailable() => {
                Error::SecurityUnavailable(message)
            }
            CoreError::InvalidFlags(_) => Error::InvalidArgument(message),
            CoreError::StorageUnavailable(_) => Error::StorageUnavailable(message),
            CoreError::Storage(error) | CoreError::DomainStorage { source: error, .. } => {
                storage(&error, message)
            }
            CoreError::Driver(_)
            | CoreError::Security(_)
            | CoreError::Userns(_)
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
            | Error::StorageUnavailable(m)
            | Error::NoSuchImage(m)
            | Error::ImageInUse(m)
            | Error::Failed(m) => zbus::fdo::Error::Failed(m),
        }
    }
}
