//! The lifecycle core: the single owner of domain and network state.
//!
//! Front ends (the D-Bus adapter, tests) hold a [`ManagerHandle`] and send
//! commands; the [`Manager`] task applies them one at a time, persists
//! through the [`store`], runs instances through the drivers it is given
//! (the seam in [`crate::driver`]), and publishes [`Event`]s that the
//! front ends turn into signals. Nothing else mutates domain state.

pub mod apply;
mod handle;
pub mod host_shutdown;
pub mod images;
pub mod lifecycle;
pub mod live;
pub mod logs;
pub mod manager;
pub(crate) mod parallel;
pub mod store;
pub mod tenants;
pub mod types;

pub use images::{ImageStore, StorageUnavailable};
pub use lifecycle::{InvalidState, Operation, Reason, State};
pub use manager::{Manager, ManagerConfig, ManagerHandle};
pub use types::{
    CoreError, DomainStats, DomainSummary, Event, EventKind, Lifecycle, Lookup, NetworkSummary,
    Seq, UndefineFlags, XmlFlags,
};
