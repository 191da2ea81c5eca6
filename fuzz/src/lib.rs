//! What the XML targets share: the parser–schema agreement and the
//! canonical form's round trip, for any document kind.

use lxvirt_domain::{DocumentKind, DomainDef, NetworkDef, schema};

/// A definition read from and written as XML.
pub trait Definition: Sized + PartialEq + std::fmt::Debug {
    const KIND: DocumentKind;
    fn parse(text: &str) -> Option<Self>;
    fn format(&self) -> String;
}

impl Definition for DomainDef {
    const KIND: DocumentKind = DocumentKind::Domain;
    fn parse(text: &str) -> Option<Self> {
        DomainDef::from_xml(text).ok()
    }
    fn format(&self) -> String {
        self.to_xml()
    }
}

impl Definition for NetworkDef {
    const KIND: DocumentKind = DocumentKind::Network;
    fn parse(text: &str) -> Option<Self> {
        NetworkDef::from_xml(text).ok()
    }
    fn format(&self) -> String {
        self.to_xml()
    }
}

/// Parsing `data` never panics; a document the parser accepts, the
/// schema accepts; its canonical form parses to the same definition,
/// formats to the same text, and the schema accepts it.
pub fn check<T: Definition>(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(def) = T::parse(text) else {
        return;
    };
    if let Err(errors) = schema::validate_str(T::KIND, text) {
        panic!("the parser accepted what the schema refuses: {errors}\n{text}");
    }
    let first = def.format();
    let again =
        T::parse(&first).unwrap_or_else(|| panic!("the canonical form does not parse\n{first}"));
    assert_eq!(again, def, "format → parse changed the definition\n{first}");
    assert_eq!(
        again.format(),
        first,
        "the canonical form is not a fixed point"
    );
    if let Err(errors) = schema::validate_str(T::KIND, &first) {
        panic!("the schema refuses the canonical form: {errors}\n{first}");
    }
}
