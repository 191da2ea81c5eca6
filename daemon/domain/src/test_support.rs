//! What the tests of both documents share: parsing and formatting through
//! one trait, the assertions made on every document, and the examples.

use std::path::{Path, PathBuf};

use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use super::{DomainDef, DomainError, NetworkDef};

/// A document type with canonical formatting.
pub(crate) trait Document: Sized + PartialEq + std::fmt::Debug {
    fn parse(text: &str) -> Result<Self, DomainError>;
    fn format(&self) -> String;
    /// What formatting keeps (live-only data dropped).
    fn persistent(&self) -> Self;
}

impl Document for DomainDef {
    fn parse(text: &str) -> Result<Self, DomainError> {
        DomainDef::from_xml(text)
    }

    fn format(&self) -> String {
        self.to_xml()
    }

    fn persistent(&self) -> Self {
        DomainDef::persistent(self)
    }
}

impl Document for NetworkDef {
    fn parse(text: &str) -> Result<Self, DomainError> {
        NetworkDef::from_xml(text)
    }

    fn format(&self) -> String {
        self.to_xml()
    }

    fn persistent(&self) -> Self {
        self.clone()
    }
}

pub(crate) fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../xml-schemas/examples")
}

/// The `.xml` files of `dir`, sorted.
pub(crate) fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    files
}

/// Whether an example file is a network document (`network-*.xml`).
pub(crate) fn is_network_example(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("network-"))
}

/// Parses `doc`, which must be valid.
pub(crate) fn ok<D: Document>(doc: &str) -> D {
    D::parse(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

/// Asserts that `doc` fails with a message containing `needle`, at a
/// known position.
pub(crate) fn fails<D: Document>(doc: &str, needle: &str) -> DomainError {
    match D::parse(doc) {
        Ok(_) => panic!("accepted:\n{doc}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
            assert!(e.pos().is_some(), "no position: {msg}");
            e
        }
    }
}

/// Parse → format → parse gives the same definition, and formatting twice
/// gives the same text.
pub(crate) fn assert_fixed_point<D: Document>(def: &D) {
    let first = def.format();
    let again =
        D::parse(&first).unwrap_or_else(|e| panic!("formatted XML does not parse: {e}\n{first}"));
    assert_eq!(
        again,
        def.persistent(),
        "round trip changed the definition\n{first}"
    );
    assert_eq!(again.format(), first, "formatting is not a fixed point");
}

/// The round-trip property for a generated definition.
pub(crate) fn check_round_trip<D: Document>(def: &D) -> Result<(), TestCaseError> {
    let text = def.format();
    let parsed = D::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    if parsed != *def {
        return Err(TestCaseError::fail(format!(
            "round trip changed the definition: {parsed:?}\n{text}"
        )));
    }
    if parsed.format() != text {
        return Err(TestCaseError::fail(format!("not a fixed point\n{text}")));
    }
    Ok(())
}

/// Parses `text` with `insert` put in at `at`; must not panic.
pub(crate) fn parse_mutated<D: Document>(text: &str, at: Index, insert: &str) {
    let i = at.index(text.len());
    if text.is_char_boundary(i) {
        let _ = D::parse(&format!("{}{insert}{}", &text[..i], &text[i..]));
    }
}
