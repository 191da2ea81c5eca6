//! The raw layer of the domain model: a small, position-carrying XML tree.
//!
//! Every document lxvirt accepts (from D-Bus, from the CLI, from the config
//! directory) is untrusted. This module turns bytes into a tree of
//! [`Element`]s, refusing hostile input up front: documents over
//! [`MAX_DOCUMENT_BYTES`], invalid UTF-8, DTDs and entity declarations,
//! unknown entity references and nesting deeper than [`MAX_DEPTH`]. Each
//! element and attribute keeps its line and column so that the typed layer
//! (and the RelaxNG validator) can point at the offending spot.
//!
//! serde's derive cannot carry per-element positions, which the error
//! messages need; this tree mirrors the XML one-to-one instead and the typed
//! layer converts from it with `TryFrom`.

use std::fmt;
use std::ops::Range;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// The byte order mark a document may start with.
const BOM: char = '\u{feff}';

/// `text` without white space at its ends as XML sees it (ASCII: a
/// vertical tab or a no-break space stays), as the schema's `token` type
/// strips it.
pub(crate) fn trim_space(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// The length of `text`'s leading byte order mark, if any.
fn bom_len(text: &str) -> usize {
    if text.starts_with(BOM) {
        BOM.len_utf8()
    } else {
        0
    }
}
/// Deepest element nesting accepted. Domain documents need about six levels;
/// `<metadata>` content gets the rest.
pub const MAX_DEPTH: usize = 64;
/// Most attributes accepted on one element (domain elements have at most a
/// handful; this bounds the work per start tag).
pub const MAX_ATTRIBUTES: usize = 256;

/// A 1-based line and column (in characters) in the source document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An attribute as written, with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Namespace URI, `None` for unprefixed attributes (and `xmlns` declarations).
    pub namespace: Option<String>,
    /// Local name, without prefix.
    pub name: String,
    /// Qualified name as written (`lxc:foo`, `xmlns:lxc`).
    pub qname: String,
    /// Value with entity and character references resolved.
    pub value: String,
    pub pos: Pos,
}

/// A child of an element: another element or a run of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An element as written, with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, `None` when the element is in no namespace.
    pub namespace: Option<String>,
    /// Local name, without prefix.
    pub name: String,
    /// Qualified name as written.
    pub qname: String,
    /// Attributes in document order, namespace declarations included.
    pub attributes: Vec<Attribute>,
    pub children: Vec<Node>,
    /// Position of the `<` that opens the element.
    pub pos: Pos,
    /// Byte range of the element's content (between the start and end tags)
    /// in the source; empty for `<empty/>` elements. Lets callers keep a
    /// subtree verbatim (`<metadata>`).
    pub content_span: Range<usize>,
}

/// Why a document could not be read as XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("document is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{pos}: document is not valid UTF-8")]
    InvalidUtf8 { pos: Pos },
    #[error("{pos}: DTDs and entity declarations are not accepted; remove the <!DOCTYPE …> block")]
    Doctype { pos: Pos },
    #[error(
        "{pos}: unknown entity '&{name};'; only &lt; &gt; &amp; &apos; &quot; and character references are accepted"
    )]
    UnknownEntity { pos: Pos, name: String },
    #[error("{pos}: element has more than {limit} attributes")]
    TooManyAttributes { pos: Pos, limit: usize },
    #[error("{pos}: elements nest deeper than {limit} levels")]
    TooDeep { pos: Pos, limit: usize },
    #[error("{pos}: unknown namespace prefix '{prefix}'; declare it with xmlns:{prefix}=\"…\"")]
    UnknownPrefix { pos: Pos, prefix: String },
    #[error("{pos}: malformed XML: {message}")]
    Malformed { pos: Pos, message: String },
    #[error("document has no root element")]
    NoRoot,
}

impl XmlError {
    /// Where in the document the problem is, when known.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            XmlError::TooLarge { .. } | XmlError::NoRoot => None,
            XmlError::InvalidUtf8 { pos }
            | XmlError::Doctype { pos }
            | XmlError::UnknownEntity { pos, .. }
            | XmlError::TooDeep { pos, .. }
            | XmlError::TooManyAttributes { pos, .. }
            | XmlError::UnknownPrefix { pos, .. }
            | XmlError::Malformed { pos, .. } => Some(*pos),
        }
    }
}

/// Maps byte offsets of a document to line and column.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// The last position computed (offset, line index, column), so that
    /// positions asked in document order cost the distance walked, not the
    /// length of the line again.
    cursor: std::cell::Cell<(usize, usize, usize)>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        // A byte order mark takes no column: the first line starts after it.
        let mut line_starts = vec![bom_len(text)];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            text,
            line_starts,
            cursor: std::cell::Cell::new((0, 0, 0)),
        }
    }

    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.clamp(self.line_starts[0], self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let (last_offset, last_line, last_column) = self.cursor.get();
        let (from, base) = if last_line == line && last_offset >= start && last_offset <= offset {
            (last_offset, last_column)
        } else {
            (start, 0)
        };
        let column = base
            + self
                .text
                .get(from..offset)
                .map_or(offset - from, |s| s.chars().count());
        self.cursor.set((offset, line, column));
        Pos {
            line: saturating_u32(line + 1),
            column: saturating_u32(column + 1),
        }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Position of the first invalid UTF-8 sequence in `bytes`.
fn utf8_error_pos(bytes: &[u8], valid_up_to: usize) -> Pos {
    // The prefix is valid by definition of `valid_up_to`.
    let prefix = std::str::from_utf8(&bytes[..valid_up_to]).unwrap_or_default();
    LineIndex::new(prefix).pos(valid_up_to)
}

/// Parses a document from bytes, enforcing the size and encoding limits.
pub fn parse_bytes(bytes: &[u8]) -> Result<Element, XmlError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge {
            size: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| XmlError::InvalidUtf8 {
        pos: utf8_error_pos(bytes, e.valid_up_to()),
    })?;
    parse_str(text)
}

/// Parses a document, enforcing the size limit.
pub fn parse_str(text: &str) -> Result<Element, XmlError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge {
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let index = LineIndex::new(text);
    let mut reader = NsReader::from_str(text);
    // The reader skips a leading byte order mark and counts its positions
    // from after it; spans and positions here are offsets into `text`.
    let skipped = bom_len(text);
    let offset =
        |position: u64| usize::try_from(position).map_or(usize::MAX, |p| p.saturating_add(skipped));
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;

    // Elements still open, innermost last; each with the offset where its
    // content starts.
    let mut stack: Vec<(Element, usize)> = Vec::new();
    let mut root: Option<Element> = None;

    loop {
        let event_start = offset(reader.buffer_position());
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = offset(reader.error_position());
                return Err(XmlError::Malformed {
                    pos: index.pos(at),
                    message: e.to_string(),
                });
            }
        };
        let pos = index.pos(event_start);
        let namespace = match resolved {
            ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return Err(XmlError::UnknownPrefix { pos, prefix });
            }
        };
        let content_start = offset(reader.buffer_position());
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() && stack.is_empty() => {
                let _ = start;
                return Err(XmlError::Malformed {
                    pos,
                    message: "more than one root element".into(),
                });
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep {
                        pos,
                        limit: MAX_DEPTH,
                    });
                }
                let element = element_from(
                    &reader,
                    &index,
                    &start,
                    namespace,
                    pos,
                    event_start,
                    content_start,
                )?;
                stack.push((element, content_start));
            }
            Event::Empty(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep {
                        pos,
                        limit: MAX_DEPTH,
                    });
                }
                let mut element = element_from(
                    &reader,
                    &index,
                    &start,
                    namespace,
                    pos,
                    event_start,
                    content_start,
                )?;
                element.content_span = content_start..content_start;
                attach(&mut stack, &mut root, element);
            }
            Event::End(_) => {
                // check_end_names guarantees the match with the open element.
                if let Some((mut element, start)) = stack.pop() {
                    element.content_span = start..event_start;
                    attach(&mut stack, &mut root, element);
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                push_text(&mut stack, &content, pos)?;
            }
            Event::CData(c) => {
                let content = c.into_inner().into_owned();
                push_text(&mut stack, &content, pos)?;
            }
            Event::GeneralRef(r) => {
                let resolved = resolve_reference(&r, pos)?;
                push_text(&mut stack, &resolved, pos)?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype { pos }),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if let Some((open, _)) = stack.last() {
        return Err(XmlError::Malformed {
            pos: open.pos,
            message: format!("element <{}> is not closed", open.qname),
        });
    }
    root.ok_or(XmlError::NoRoot)
}

fn attach(stack: &mut [(Element, usize)], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some((parent, _)) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

fn push_text(stack: &mut [(Element, usize)], text: &str, pos: Pos) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some((parent, _)) => {
            if let Some(Node::Text(prev)) = parent.children.last_mut() {
                prev.push_str(text);
            } else {
                parent.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError::Malformed {
            pos,
            message: "text outside the root element".into(),
        }),
    }
}

fn resolve_reference(r: &BytesRef<'_>, pos: Pos) -> Result<String, XmlError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c.to_string()),
            Ok(None) | Err(_) => Err(XmlError::Malformed {
                pos,
                message: format!("invalid character reference '&{};'", r.xml10_content()),
            }),
        };
    }
    let name = r.xml10_content();
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(s) => Ok(s.to_owned()),
        None => Err(XmlError::UnknownEntity {
            pos,
            name: name.into_owned(),
        }),
    }
}

fn element_from(
    reader: &NsReader<&[u8]>,
    index: &LineIndex<'_>,
    start: &BytesStart<'_>,
    namespace: Option<String>,
    pos: Pos,
    event_start: usize,
    tag_end: usize,
) -> Result<Element, XmlError> {
    let qname = start.name().as_ref().to_owned();
    let name = start.local_name().as_ref().to_owned();
    let mut attributes = Vec::new();
    let mut search_from = event_start + 1 + qname.len();
    for attr in start.attributes() {
        if attributes.len() == MAX_ATTRIBUTES {
            return Err(XmlError::TooManyAttributes {
                pos,
                limit: MAX_ATTRIBUTES,
            });
        }
        let attr = attr.map_err(|e| XmlError::Malformed {
            pos,
            message: e.to_string(),
        })?;
        let attr_qname = attr.key.as_ref().to_owned();
        // Locate the attribute inside the start tag for a precise position.
        let attr_pos = match attribute_offset(index.text, search_from, tag_end, &attr_qname) {
            Some(offset) => {
                search_from = offset + attr_qname.len();
                index.pos(offset)
            }
            None => pos,
        };
        let value =
            attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| match e {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                    ) => XmlError::UnknownEntity {
                        pos: attr_pos,
                        name,
                    },
                    other => XmlError::Malformed {
                        pos: attr_pos,
                        message: other.to_string(),
                    },
                })?;
        let is_declaration = attr_qname == "xmlns" || attr_qname.starts_with("xmlns:");
        let (attr_ns, local) = if is_declaration {
            (None, attr.key.local_name().as_ref().to_owned())
        } else {
            match reader.resolver().resolve_attribute(attr.key) {
                (ResolveResult::Bound(ns), local) => {
                    (Some(ns.as_ref().to_owned()), local.as_ref().to_owned())
                }
                (ResolveResult::Unbound, local) => (None, local.as_ref().to_owned()),
                (ResolveResult::Unknown(prefix), _) => {
                    return Err(XmlError::UnknownPrefix {
                        pos: attr_pos,
                        prefix,
                    });
                }
            }
        };
        attributes.push(Attribute {
            namespace: attr_ns,
            name: local,
            qname: attr_qname,
            value: value.into_owned(),
            pos: attr_pos,
        });
    }
    Ok(Element {
        namespace,
        name,
        qname,
        attributes,
        children: Vec::new(),
        pos,
        content_span: 0..0,
    })
}

/// Byte offset of attribute `attr` in `text[from..tag_end]` (a start tag,
/// searched from just after the previous attribute): good enough for error
/// positions, and linear in the tag's length over all its attributes.
fn attribute_offset(text: &str, from: usize, tag_end: usize, attr: &str) -> Option<usize> {
    let tag = text.get(..tag_end)?;
    let mut from = from;
    while let Some(found) = tag.get(from..)?.find(attr) {
        let at = from + found;
        let before_ok = tag[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let after_ok = tag[at + attr.len()..].trim_start().starts_with('=');
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + attr.len();
    }
    None
}

impl Element {
    /// Child elements, in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements in no namespace with local name `name`.
    pub fn elements_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements()
            .filter(move |e| e.namespace.is_none() && e.name == name)
    }

    /// The first child element in no namespace called `name`.
    pub fn element(&self, name: &str) -> Option<&Element> {
        self.elements()
            .find(|e| e.namespace.is_none() && e.name == name)
    }

    /// The attribute in no namespace called `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|a| a.namespace.is_none() && a.name == name && a.qname == name)
    }

    /// The value of the attribute in no namespace called `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attribute(name).map(|a| a.value.as_str())
    }

    /// Concatenated character data of this element's direct text children.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// Whether the element has neither child elements nor non-blank text.
    pub fn is_empty(&self) -> bool {
        self.children.iter().all(|n| match n {
            Node::Element(_) => false,
            Node::Text(t) => t.trim().is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_elements_attributes_and_positions() {
        let doc = "<domain type='lxc'>\n  <name>web</name>\n  <devices><console type=\"pty\"/></devices>\n</domain>";
        let root = parse_str(doc).unwrap();
        assert_eq!(root.name, "domain");
        assert_eq!(root.attr("type"), Some("lxc"));
        assert_eq!(root.pos, Pos { line: 1, column: 1 });
        let name = root.element("name").unwrap();
        assert_eq!(name.text(), "web");
        assert_eq!(name.pos, Pos { line: 2, column: 3 });
        let console = root.element("devices").unwrap().element("console").unwrap();
        assert_eq!(
            console.attribute("type").unwrap().pos,
            Pos {
                line: 3,
                column: 21
            }
        );
    }

    #[test]
    fn resolves_predefined_and_character_references() {
        let root = parse_str("<a t='&lt;&#65;'>x &amp; y &#x42;</a>").unwrap();
        assert_eq!(root.attr("t"), Some("<A"));
        assert_eq!(root.text(), "x & y B");
    }

    #[test]
    fn resolves_namespaces() {
        let doc = "<domain xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'><lxc:namespace/></domain>";
        let root = parse_str(doc).unwrap();
        let ns = root.elements().next().unwrap();
        assert_eq!(ns.name, "namespace");
        assert_eq!(ns.qname, "lxc:namespace");
        assert_eq!(
            ns.namespace.as_deref(),
            Some("http://libvirt.org/schemas/domain/lxc/1.0")
        );
        assert!(root.element("namespace").is_none());
    }

    #[test]
    fn keeps_content_span_for_verbatim_copies() {
        let doc = "<d><metadata><x:a xmlns:x='u'>1</x:a></metadata></d>";
        let root = parse_str(doc).unwrap();
        let md = root.element("metadata").unwrap();
        assert_eq!(&doc[md.content_span.clone()], "<x:a xmlns:x='u'>1</x:a>");
    }

    /// A document may start with a byte order mark (the domain_xml
    /// fuzzer's find: `<metadata>` was kept three bytes early, and its
    /// canonical form did not parse).
    #[test]
    fn a_byte_order_mark_shifts_no_span_or_position() {
        let doc =
            "\u{feff}<d>\n<metadata><x:a xmlns:x='u'>1</x:a></metadata><e a='1' b='&bad;'/></d>";
        let error = parse_str(doc).unwrap_err();
        assert!(
            matches!(error, XmlError::UnknownEntity { pos, .. } if pos == Pos { line: 2, column: 55 }),
            "{error:?}"
        );
        let doc = "\u{feff}<d><metadata><x:a xmlns:x='u'>1</x:a></metadata><e b='2'/></d>";
        let root = parse_str(doc).unwrap();
        assert_eq!(root.pos, Pos { line: 1, column: 1 });
        let md = root.element("metadata").unwrap();
        assert_eq!(md.pos, Pos { line: 1, column: 4 });
        assert_eq!(&doc[md.content_span.clone()], "<x:a xmlns:x='u'>1</x:a>");
        let e = root.element("e").unwrap();
        assert_eq!(
            e.attributes[0].pos,
            Pos {
                line: 1,
                column: 52
            }
        );
        let error = parse_str("\u{feff}<d></e>").unwrap_err();
        assert!(
            matches!(error, XmlError::Malformed { pos, .. } if pos.line == 1 && pos.column > 3),
            "{error:?}"
        );
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let doc = "<?xml version='1.0'?>\n<!DOCTYPE d [<!ENTITY x 'boom'>]>\n<d>&x;</d>";
        assert!(matches!(parse_str(doc), Err(XmlError::Doctype { pos }) if pos.line == 2));
        assert!(matches!(
            parse_str("<d>&x;</d>"),
            Err(XmlError::UnknownEntity { name, .. }) if name == "x"
        ));
        assert!(matches!(
            parse_str("<d a='&x;'/>"),
            Err(XmlError::UnknownEntity { name, .. }) if name == "x"
        ));
    }

    #[test]
    fn refuses_oversized_deep_and_invalid_utf8() {
        let big = format!("<d>{}</d>", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(parse_str(&big), Err(XmlError::TooLarge { .. })));
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(parse_str(&deep), Err(XmlError::TooDeep { .. })));
        let mut bytes = b"<d>\n  \xff</d>".to_vec();
        assert_eq!(
            parse_bytes(&bytes),
            Err(XmlError::InvalidUtf8 {
                pos: Pos { line: 2, column: 3 }
            })
        );
        bytes.truncate(3);
        assert!(parse_bytes(&bytes).is_err());
    }

    #[test]
    fn reports_malformed_documents_with_position() {
        let err = parse_str("<d>\n  <a></b>\n</d>").unwrap_err();
        assert_eq!(err.pos().map(|p| p.line), Some(2));
        assert!(matches!(
            parse_str("<d/><e/>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(parse_str("<d>"), Err(XmlError::Malformed { .. })));
        assert!(matches!(parse_str("  "), Err(XmlError::NoRoot)));
        assert!(matches!(
            parse_str("<x:d/>"),
            Err(XmlError::UnknownPrefix { .. })
        ));
    }
}
