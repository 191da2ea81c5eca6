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
use lxvirt_domain::DomainDef;

fuzz_target!(|data: &[u8]| lxvirt_fuzz::check::<DomainDef>(data));
