//! Network XML: as domain_xml, for `<network>` documents (the schema
//! now also checks the canonical form).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lxvirt_domain::NetworkDef;

fuzz_target!(|data: &[u8]| lxvirt_fuzz::check::<NetworkDef>(data));
