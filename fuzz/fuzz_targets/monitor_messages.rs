//! Messages between the daemon and a monitor, as either side decodes
//! them: a message or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxvirtd::fuzzing::monitor_messages(data));
