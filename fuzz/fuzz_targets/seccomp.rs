//! The seccomp compiler against its policy: for random additions and
//! random calls, the interpreter's verdict on the compiled program is the
//! policy's.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxvirtd::fuzzing::seccomp(data));
