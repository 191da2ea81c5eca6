//! One device's XML, as AttachDevice, DetachDevice and UpdateDevice take
//! it: parsing never panics, for containers and virtual machines (the
//! first byte chooses).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lxvirt_domain::{DeviceDef, DomainType};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if kind & 1 == 0 {
        DomainType::Lxc
    } else {
        DomainType::Kvm
    };
    let _ = DeviceDef::from_xml(kind, text);
});
