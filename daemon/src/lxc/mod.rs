//! The LXC driver: containers from domain definitions, each under a small
//! per-container monitor process that survives daemon restarts.

pub mod console_log;
pub mod convert;
pub mod driver;
pub mod enter;
pub mod handoff;
pub mod hotplug;
pub mod initctl;
pub mod instance;
pub mod launch;
pub mod live_devices;
pub mod monitor;
pub mod mount_template;
pub mod network;
pub mod protocol;
pub mod ptys;
pub mod setup;
pub mod signal;
pub mod spawner;
pub mod spec;
pub mod terminal;
