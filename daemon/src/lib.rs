//! lxvirtd: the lxvirt daemon as a library.
//!
//! - [`domain`]: the domain XML model (raw tree, typed definition, schema),
//!   the crate `lxvirt_domain`.
//! - [`core`]: the lifecycle core — the single owner of domain state, the
//!   transition table and the persistent store.
//! - [`driver`]: the seam between the core and the drivers ([`lxc`];
//!   [`qemu`], whose QMP client is there, is being written).
//! - [`dbus`]: the D-Bus adapter and the client proxies.
//! - [`host`]: what the host supports.
//! - [`security`]: sVirt, the SELinux labels of containers.
//! - [`daemon`]: wiring it all together; `lxvirtd`'s main is a thin shell.
//! - [`persist`], [`error_chain`]: the bottom layer every other module may
//!   use (crash-safe and versioned files; errors on one line).

pub mod cgroup;
pub mod core;
pub mod daemon;
pub mod dbus;
pub use lxvirt_domain as domain;
pub mod driver;
pub mod error_chain;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod host;
pub mod lxc;
pub mod net;
pub mod persist;
pub mod qemu;
pub mod seccomp;
pub mod security;
pub mod service;
pub mod storage;
pub mod sys;
