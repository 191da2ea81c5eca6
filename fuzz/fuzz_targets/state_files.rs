//! Every versioned state file lxvirtd reads (live status, exit records,
//! port records, image store metadata, id blocks, …): refused or read,
//! never a panic; what is read is written and read back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxvirtd::fuzzing::state_files(data));
