//! The lifecycle core: the single owner of domain state.
//!
//! Front ends (the D-Bus adapter, tests) hold a [`ManagerHandle`] and send
//! [`Command`]s; the [`Manager`] task applies them one at a time, persists
//! through the [`store`], and publishes [`Event`]s that the front ends turn
//! into signals. Nothing else mutates domain state.

pub mod lifecycle;
pub mod manager;
pub mod persist;
pub mod store;

pub use lifecycle::{InvalidState, Operation, Reason, State};
pub use manager::{
    CoreError, DomainSummary, Event, EventKind, Lifecycle, Lookup, Manager, ManagerHandle, Seq,
    XmlFlags,
};
