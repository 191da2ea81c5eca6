//! The XML Schema datatypes lxvirt's schemas use, for the `relax-ng`
//! crate's validator.
//!
//! The crate's own XSD library compiles a `pattern` facet's regular
//! expression every time it checks a value, and checks every facet of the
//! whole schema (compiling each pattern again) at the start of every
//! validation: ~2 ms of a small document's validation and most of a large
//! one's. This library keeps each compiled pattern for the life of the
//! process, and implements only the types and facets the built-in schemas
//! use, with the crate's meaning: a schema that uses another fails to
//! compile (every test that validates a document sees it), and
//! `tests::agrees_with_the_crates_library` checks the verdicts against the
//! crate's library, value by value and document by document.

use std::collections::HashMap;
use std::sync::RwLock;

use regex::Regex;
use relax_ng::{DatatypeContext, DatatypeLibrary};

/// One datatype: how a value is read before the facets judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datatype {
    /// `string`: the value as written.
    String,
    /// `token`: runs of white space collapsed to one space, none at the
    /// ends.
    Token,
    /// An integer type with its range (`long`, `unsignedInt`, …).
    Integer { min: i128, max: i128 },
}

impl Datatype {
    fn named(name: &str) -> Option<Self> {
        let integer = |min: i128, max: i128| Some(Self::Integer { min, max });
        match name {
            "string" => Some(Self::String),
            "token" => Some(Self::Token),
            "long" => integer(i64::MIN.into(), i64::MAX.into()),
            "int" => integer(i32::MIN.into(), i32::MAX.into()),
            "unsignedLong" => integer(0, u64::MAX.into()),
            "unsignedInt" => integer(0, u32::MAX.into()),
            "unsignedShort" => integer(0, u16::MAX.into()),
            "unsignedByte" => integer(0, u8::MAX.into()),
            _ => None,
        }
    }

    fn read(self, value: &str) -> Option<Value> {
        match self {
            Self::String => Some(Value::Text(value.to_owned())),
            Self::Token => Some(Value::Text(
                value.split_ascii_whitespace().collect::<Vec<_>>().join(" "),
            )),
            Self::Integer { min, max } => read_integer(value.trim())
                .filter(|n| (min..=max).contains(n))
                .map(Value::Integer),
        }
    }
}

/// A value as the facets see it.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Text(String),
    Integer(i128),
}

/// An XSD decimal literal that denotes an integer: an optional sign,
/// digits, and an optional fraction of zeros (`7`, `+7`, `-0`, `7.`,
/// `7.00`, `.0`), as the crate's decimal reader takes it.
fn read_integer(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.bytes().any(|b| b != b'0')
    {
        return None;
    }
    let significant = whole.trim_start_matches('0');
    let magnitude: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// The library registered for the XSD datatypes' namespace.
#[derive(Default)]
pub(super) struct Datatypes {
    /// Every `pattern` facet seen, compiled, by its text.
    patterns: RwLock<HashMap<String, Regex>>,
}

impl Datatypes {
    /// Runs `use_it` on a `pattern` facet compiled (once), anchored at both
    /// ends as XSD patterns are. The compiled pattern is used in place,
    /// never cloned: a clone starts with empty match caches.
    fn with_pattern<R>(
        &self,
        pattern: &str,
        use_it: impl FnOnce(&Regex) -> R,
    ) -> Result<R, String> {
        let patterns = self
            .patterns
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(regex) = patterns.get(pattern) {
            return Ok(use_it(regex));
        }
        drop(patterns);
        let regex = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|error| format!("invalid `pattern` facet: {error}"))?;
        let result = use_it(&regex);
        self.patterns
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(pattern.to_owned())
            .or_insert(regex);
        Ok(result)
    }

    fn check_facet(&self, datatype: Datatype, name: &str, value: &str) -> Result<(), String> {
        let integer = matches!(datatype, Datatype::Integer { .. });
        match name {
            "pattern" => self.with_pattern(value, |_| ()),
            "minLength" | "maxLength" if !integer => value
                .parse::<usize>()
                .map(drop)
                .map_err(|_| format!("`{name}` must be a non-negative integer, found `{value}`")),
            "minInclusive" | "maxInclusive" if integer => datatype
                .read(value)
                .map(drop)
                .ok_or_else(|| format!("`{name}` value `{value}` is not a literal of this type")),
            _ => Err(format!(
                "facet `{name}` is not implemented for this type by lxvirt's datatype library"
            )),
        }
    }
}

impl DatatypeLibrary for Datatypes {
    fn validate_params(&self, type_name: &str, params: &[(&str, &str)]) -> Result<(), String> {
        let datatype = Datatype::named(type_name).ok_or_else(|| {
            format!("type `{type_name}` is not implemented by lxvirt's datatype library")
        })?;
        params
            .iter()
            .try_for_each(|(name, value)| self.check_facet(datatype, name, value))
    }

    fn matches(
        &self,
        type_name: &str,
        params: &[(&str, &str)],
        value: &str,
        _context: &DatatypeContext,
    ) -> bool {
        let Some(datatype) = Datatype::named(type_name) else {
            return false;
        };
        let Some(read) = datatype.read(value) else {
            return false;
        };
        // Several patterns on one type are alternatives (XSD); the crate
        // matches them against the value with its ends trimmed.
        let mut patterns = params
            .iter()
            .filter(|(name, _)| *name == "pattern")
            .peekable();
        if patterns.peek().is_some()
            && !patterns.any(|(_, pattern)| {
                self.with_pattern(pattern, |regex| regex.is_match(value.trim()))
                    .is_ok_and(|found| found)
            })
        {
            return false;
        }
        params.iter().all(|&(name, param)| match (name, &read) {
            ("pattern", _) => true,
            ("minLength", Value::Text(text)) => param
                .parse()
                .is_ok_and(|min: usize| text.chars().count() >= min),
            ("maxLength", Value::Text(text)) => param
                .parse()
                .is_ok_and(|max: usize| text.chars().count() <= max),
            ("minInclusive", Value::Integer(n)) => {
                matches!(datatype.read(param), Some(Value::Integer(min)) if min <= *n)
            }
            ("maxInclusive", Value::Integer(n)) => {
                matches!(datatype.read(param), Some(Value::Integer(max)) if max >= *n)
            }
            _ => false,
        })
    }

    fn values_equal(
        &self,
        type_name: &str,
        expected: &str,
        _expected_context: &DatatypeContext,
        actual: &str,
        _actual_context: &DatatypeContext,
    ) -> bool {
        let Some(datatype) = Datatype::named(type_name) else {
            return false;
        };
        match (datatype.read(expected), datatype.read(actual)) {
            (Some(expected), Some(actual)) => expected == actual,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use relax_ng::{DatatypeRegistry, Schema, SchemaSource, SchemaSyntax, XSD_DATATYPE_LIBRARY};

    use super::super::{Doc, NoResolver, compiled, schema_text};
    use super::*;
    use crate::document::DocumentKind;
    use crate::xml;

    fn ours() -> DatatypeRegistry {
        let mut registry = DatatypeRegistry::builtin_only();
        registry.register(XSD_DATATYPE_LIBRARY, Datatypes::default());
        registry
    }

    /// Every `<data>` pattern of the built-in schemas, as written (none
    /// holds an `<except>`).
    fn data_patterns() -> Vec<String> {
        let mut found = Vec::new();
        for kind in [DocumentKind::Domain, DocumentKind::Network] {
            let mut rest = schema_text(kind);
            while let Some(start) = rest.find("<data ") {
                let tail = &rest[start..];
                let end = match (tail.find("/>"), tail.find('>')) {
                    (Some(slash), Some(close)) if slash + 1 == close => close + 1,
                    _ => tail.find("</data>").expect("an unclosed <data>") + "</data>".len(),
                };
                found.push(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
        found.sort();
        found.dedup();
        found
    }

    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// Whether `<v>value</v>` is valid against `<element name="v">pattern</element>`,
    /// for the crate's XSD library and for this one.
    fn verdicts(pattern: &str, value: &str) -> (bool, bool) {
        let text = format!(
            "<element name='v' xmlns='http://relaxng.org/ns/structure/1.0' \
             datatypeLibrary='http://www.w3.org/2001/XMLSchema-datatypes'>{pattern}</element>"
        );
        let source = SchemaSource::new(&text, "test:v.rng", SchemaSyntax::Xml);
        let schema = Schema::compile(&source, &NoResolver).expect("the test schema compiles");
        let document = xml::parse_str(&format!("<v>{}</v>", escape(value))).expect("the value");
        let valid = |registry: &DatatypeRegistry| {
            schema
                .validate(registry, &Doc(&document))
                .expect("every datatype is supported")
                .is_empty()
        };
        (valid(&DatatypeRegistry::new()), valid(&ours()))
    }

    const VALUES: &[&str] = &[
        "",
        " ",
        "0",
        "1",
        "7",
        " 7 ",
        "+7",
        "-7",
        "-0",
        "+0",
        "7.",
        "7.0",
        "7.5",
        ".0",
        ".",
        "-",
        "+",
        "+-1",
        "007",
        "1e3",
        "0x1f",
        "1K",
        "255",
        "256",
        "-1",
        "65535",
        "65536",
        "4194304",
        "4194305",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999999999999999999999",
        "١٢",
        "a",
        "A",
        "a b",
        " a  b ",
        "\ta\n",
        "\u{a0}a\u{a0}",
        "_a0",
        "0a",
        "/usr/bin/env",
        "/",
        "./x",
        "eth0",
        "vnet0",
        "br-lan.10",
        "52:54:00:12:34:56",
        "52:54:00:12:34:5G",
        "10.0.0.1",
        "10.0.0.256",
        "fe80::1",
        "2001:db8::/64",
        "00000000-0000-0000-0000-000000000000",
        "6f3c2a1e-1b2c-4d5e-8f90-a1b2c3d4e5f6",
        "system_u:system_r:svirt_lxc_net_t:s0:c1,c2",
        "s0",
        "mount",
        "read",
        "x86_64",
        "on",
        "yes",
        "true",
        "0-3,5",
        "0-",
        "512 MiB",
        "a\r\nb",
        "ünïcode",
    ];

    #[test]
    fn agrees_with_the_crates_library_value_by_value() {
        let mut patterns = data_patterns();
        assert!(
            patterns.len() > 20,
            "the schemas' <data> patterns: {patterns:?}"
        );
        // Every type and facet beside the schemas' own combinations.
        for datatype in [
            "string",
            "token",
            "long",
            "int",
            "unsignedLong",
            "unsignedInt",
            "unsignedShort",
            "unsignedByte",
        ] {
            patterns.push(format!("<data type='{datatype}'/>"));
            patterns.push(format!(
                "<data type='{datatype}'><param name='pattern'>[0-9]+|a.*</param>\
                 <param name='pattern'>\\s*b</param></data>"
            ));
            patterns.push(format!("<value type='{datatype}'>7</value>"));
            patterns.push(format!("<value type='{datatype}'> a  b </value>"));
        }
        for integer in ["long", "unsignedInt", "unsignedByte"] {
            patterns.push(format!(
                "<data type='{integer}'><param name='minInclusive'>+1</param>\
                 <param name='maxInclusive'>255.0</param></data>"
            ));
        }
        for text in ["string", "token"] {
            patterns.push(format!(
                "<data type='{text}'><param name='minLength'>1</param>\
                 <param name='maxLength'>3</param></data>"
            ));
        }
        let mut disagreements = Vec::new();
        for pattern in &patterns {
            for value in VALUES
                .iter()
                .map(|v| v.to_string())
                .chain(["x".repeat(300)])
            {
                let (crates, this) = verdicts(pattern, &value);
                if crates != this {
                    disagreements.push(format!("{pattern} {value:?}: crate {crates}, ours {this}"));
                }
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }

    #[test]
    fn agrees_with_the_crates_library_document_by_document() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        for dir in [
            "xml-schemas/examples",
            "xml-schemas/examples/invalid",
            "fuzz/corpus/domain_xml",
            "fuzz/corpus/network_xml",
        ] {
            for entry in std::fs::read_dir(root.join(dir)).expect(dir) {
                let path = entry.expect(dir).path();
                if path.is_file() {
                    files.push(path);
                }
            }
        }
        let crates = DatatypeRegistry::new();
        let (mut compared, mut invalid) = (0, 0);
        for path in &files {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let Ok(document) = xml::parse_str(&text) else {
                continue;
            };
            let kind = match document.name.as_str() {
                "domain" => DocumentKind::Domain,
                "network" => DocumentKind::Network,
                _ => continue,
            };
            let compiled = compiled(kind).as_ref().expect("the built-in schema");
            let with = |registry: &DatatypeRegistry| {
                compiled
                    .schema
                    .validate(registry, &Doc(&document))
                    .expect("every datatype is supported")
            };
            let expected = with(&crates);
            assert_eq!(with(&compiled.registry), expected, "{}", path.display());
            compared += 1;
            invalid += usize::from(!expected.is_empty());
        }
        // Enough of both verdicts that the comparison means something.
        assert!(
            compared > 300 && invalid > 50,
            "{compared} documents, {invalid} invalid"
        );
    }

    #[test]
    fn a_type_or_facet_it_does_not_know_is_refused_by_name() {
        let library = Datatypes::default();
        let refused = library.validate_params("date", &[]).unwrap_err();
        assert!(refused.contains("`date`"), "{refused}");
        let refused = library
            .validate_params("token", &[("minInclusive", "1")])
            .unwrap_err();
        assert!(refused.contains("`minInclusive`"), "{refused}");
        let refused = library
            .validate_params("token", &[("pattern", "(")])
            .unwrap_err();
        assert!(refused.contains("pattern"), "{refused}");
    }
}
