//! The LXC driver: containers from domain definitions, each under a small
//! per-container monitor process that survives daemon restarts.

pub mod convert;
pub mod protocol;
pub mod spec;
