//! The QEMU/KVM driver: runs `qemu-system-*` guests and talks to them
//! over QMP ([`qmp`]), and to their guest agents ([`agent`]).

pub mod agent;
pub mod command;
pub mod disks;
mod guest_exec;
pub mod host;
pub mod instance;
mod link;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use link::fuzz_state_files;
pub mod process;
pub mod qmp;
mod stats;
pub mod tap;
