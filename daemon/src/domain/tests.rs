//! Tests of the typed layer as a whole: examples, invalid documents,
//! semantic checks, hostile input and the round-trip property.

use std::path::PathBuf;

use super::*;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xml-schemas/examples")
}

#[test]
fn dump_examples() {
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xml") {
            let text = std::fs::read_to_string(&path).unwrap();
            match DomainDef::from_xml(&text) {
                Ok(d) => println!("== {}\n{}", path.display(), d.to_xml()),
                Err(e) => println!("== {}: {e}", path.display()),
            }
        }
    }
}
