//! Network XML: as domain_xml, for `<network>` documents.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lxvirt_domain::{DocumentKind, NetworkDef, schema};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(def) = NetworkDef::from_xml(text) else {
        return;
    };
    if let Err(errors) = schema::validate_str(DocumentKind::Network, text) {
        panic!("the parser accepted what the schema refuses: {errors}\n{text}");
    }
    let first = def.to_xml();
    let again = NetworkDef::from_xml(&first)
        .unwrap_or_else(|e| panic!("the canonical form does not parse: {e}\n{first}"));
    assert_eq!(again, def, "format → parse changed the definition\n{first}");
    assert_eq!(
        again.to_xml(),
        first,
        "the canonical form is not a fixed point"
    );
});
