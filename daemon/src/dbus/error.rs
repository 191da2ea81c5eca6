//! The daemon's errors as typed D-Bus errors ([`Error`], defined with
//! the rest of the contract in `lxvirt_api`).

pub use lxvirt_api::Error;

use crate::core::CoreError;
use crate::driver::ErrorKind;
use crate::error_chain::error_chain;
use crate::storage::StorageError;

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

/// The D-Bus error for an image store error met while doing `what`
/// ("cannot import image 'web'"): the message says what, then why.
pub(crate) fn storage_while(what: &str, error: &StorageError) -> Error {
    storage(error, format!("{what}: {}", error_chain(error)))
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
            CoreError::NoSuchNetwork(_) => Error::NoSuchNetwork(message),
            CoreError::InvalidXml(_)
            | CoreError::InvalidNetworkXml(_)
            | CoreError::NotADefinition { .. }
            | CoreError::ApplyRefused(_) => Error::InvalidXml(message),
            CoreError::NameTaken { .. }
            | CoreError::UuidTaken { .. }
            | CoreError::Blocked { .. }
            | CoreError::BridgeTaken { .. }
            | CoreError::SubnetOverlap { .. } => Error::AlreadyExists(message),
            CoreError::InvalidState(_)
            | CoreError::NotPersistent(_)
            | CoreError::Busy { .. }
            | CoreError::NetworkState { .. }
            | CoreError::NotRunning { .. }
            | CoreError::NetworkInUse { .. }
            | CoreError::NetworkUnavailable { .. } => Error::InvalidState(message),
            CoreError::DriverUnavailable { .. } => Error::DriverUnavailable(message),
            CoreError::NoConsoleLog { .. } => Error::NotSupported(message),
            CoreError::Driver(error) => match error.kind {
                ErrorKind::NotSupported => Error::NotSupported(message),
                ErrorKind::Unavailable => Error::DriverUnavailable(message),
                ErrorKind::InvalidState => Error::InvalidState(message),
                ErrorKind::SecurityUnavailable => Error::SecurityUnavailable(message),
                ErrorKind::Failed => Error::Failed(message),
                ErrorKind::InvalidArgument => Error::InvalidArgument(message),
            },
            CoreError::StoppedMeanwhile { .. } => Error::InvalidState(message),
            CoreError::Security(error) if error.is_unavailable() => {
                Error::SecurityUnavailable(message)
            }
            CoreError::InvalidFlags(_)
            | CoreError::NoSuchInterface { .. }
            | CoreError::DeviceRefused { .. }
            | CoreError::TuningRefused { .. } => Error::InvalidArgument(message),
            CoreError::StorageUnavailable(_) => Error::StorageUnavailable(message),
            CoreError::Storage(error) | CoreError::DomainStorage { source: error, .. } => {
                storage(&error, message)
            }
            CoreError::Security(_)
            | CoreError::Userns(_)
            | CoreError::StartFailed { .. }
            | CoreError::LiveStatus { .. }
            | CoreError::Network(_)
            | CoreError::PortRefused { .. }
            | CoreError::Store { .. }
            | CoreError::LogPipe { .. }
            | CoreError::ShuttingDown => Error::Failed(message),
        }
    }
}
