//! SELinux's configuration files lxvirtd reads (`lxc_contexts`, the
//! virtual contexts, `/etc/selinux/config`): every label comes out a
//! context or the default.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lxvirtd::fuzzing::selinux_config(data));
