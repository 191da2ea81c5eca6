//! The daemon's image store: opened once at start with the configured
//! backend, or the reason it could not be, so that the daemon still
//! manages domains on a host where the backend does not work.

use std::path::Path;
use std::sync::Arc;

use crate::storage::thin::ThinConfig;
use crate::storage::{self, Availability, BackendKind, OpenReport, Store};

/// Where in the state directory the store lives.
pub const STORE_SUBDIR: &str = "storage";

/// The image store, or why there is none. Cheap to clone.
#[derive(Debug, Clone)]
pub enum ImageStore {
    Ready(Arc<Store>),
    Unavailable(StorageUnavailable),
}

/// Image operations are refused: the configured backend cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the image store is not available: storage backend '{backend}' cannot be used: {reason}; restart lxvirtd with another --storage-backend (see GetCapabilities)"
)]
pub struct StorageUnavailable {
    pub backend: BackendKind,
    pub reason: String,
}

impl ImageStore {
    /// Opens the store in `STATE_DIR/storage` with the `kind` backend (`dm`
    /// configures the device-mapper one). Returns what opening cleaned up,
    /// for the caller to log.
    pub fn open(
        state_dir: &Path,
        kind: BackendKind,
        dm: &ThinConfig,
    ) -> (ImageStore, Option<OpenReport>) {
        let backend = storage::backend::backend_with(kind, dm);
        if let Availability::Unavailable(reason) = backend.availability() {
            return (
                ImageStore::Unavailable(StorageUnavailable {
                    backend: kind,
                    reason,
                }),
                None,
            );
        }
        match Store::open(&state_dir.join(STORE_SUBDIR), backend) {
            Ok((store, report)) => (ImageStore::Ready(Arc::new(store)), Some(report)),
            Err(error) => (
                ImageStore::Unavailable(StorageUnavailable {
                    backend: kind,
                    reason: crate::error_chain::error_chain(&error),
                }),
                None,
            ),
        }
    }

    /// A store that is never available (tests, and hosts where the daemon
    /// was told not to manage images).
    pub fn unavailable(backend: BackendKind, reason: impl Into<String>) -> ImageStore {
        ImageStore::Unavailable(StorageUnavailable {
            backend,
            reason: reason.into(),
        })
    }

    /// The store, or why it cannot be used.
    pub fn get(&self) -> Result<Arc<Store>, StorageUnavailable> {
        match self {
            ImageStore::Ready(store) => Ok(Arc::clone(store)),
            ImageStore::Unavailable(why) => Err(why.clone()),
        }
    }

    /// The backend in use (or configured but unusable).
    pub fn backend(&self) -> BackendKind {
        match self {
            ImageStore::Ready(store) => store.backend().kind(),
            ImageStore::Unavailable(why) => why.backend,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_backend_says_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        // On a host without device-mapper (these machines) it is
        // unavailable; where it works, the store opens.
        let (store, report) = ImageStore::open(
            dir.path(),
            BackendKind::DeviceMapper,
            &ThinConfig::default(),
        );
        if let ImageStore::Unavailable(why) = &store {
            assert!(report.is_none());
            let text = why.to_string();
            assert!(text.contains("'devicemapper'"), "{text}");
            assert!(text.contains(&why.reason), "{text}");
            assert!(store.get().is_err());
            assert_eq!(store.backend(), BackendKind::DeviceMapper);
        }
        let (store, _) = ImageStore::open(dir.path(), BackendKind::Overlay, &ThinConfig::default());
        if storage::backend::backend(BackendKind::Overlay)
            .availability()
            .is_available()
        {
            assert!(store.get().is_ok());
            assert!(dir.path().join(STORE_SUBDIR).join("images").is_dir());
        }
    }
}
