//! Domain XML: parsing never panics, hangs or allocates without bound; a
//! document the parser accepts is a fixed point of format → parse (the
//! same definition, the same text), and the schema accepts it.
//!
//! The reverse does not hold and is not asserted: the schema says what a
//! document may look like, the parser also checks what it means (names
//! and targets used twice, a network and `<sharenet>` together, values
//! out of range for this host, …); docs/fuzzing.md lists the classes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lxvirt_domain::{DocumentKind, DomainDef, schema};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(def) = DomainDef::from_xml(text) else {
        return;
    };
    if let Err(errors) = schema::validate_str(DocumentKind::Domain, text) {
        panic!("the parser accepted what the schema refuses: {errors}\n{text}");
    }
    let first = def.to_xml();
    let again = DomainDef::from_xml(&first)
        .unwrap_or_else(|e| panic!("the canonical form does not parse: {e}\n{first}"));
    assert_eq!(again, def, "format → parse changed the definition\n{first}");
    assert_eq!(
        again.to_xml(),
        first,
        "the canonical form is not a fixed point"
    );
    if let Err(errors) = schema::validate_str(DocumentKind::Domain, &first) {
        panic!("the schema refuses the canonical form: {errors}\n{first}");
    }
});
