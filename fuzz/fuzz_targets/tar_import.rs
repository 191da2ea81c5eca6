//! A hostile archive imported into a scratch store: refused or imported,
//! never a panic; nothing written outside the store; no partial image.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxvirtd::fuzzing::tar_import(data));
