//! Integration with the service manager (systemd) the daemon runs under.

pub mod journal;
pub mod notify;
pub mod polkit;
pub mod settings;
pub mod systemd;
