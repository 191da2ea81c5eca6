//! A hostile OCI image layout (index, manifest, config and layer, with
//! their digests made to match) imported into a scratch store: refused or
//! imported, never a panic; nothing written outside it; no partial image.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxvirtd::fuzzing::oci_import(data));
