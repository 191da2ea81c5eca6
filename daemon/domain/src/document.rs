//! The kinds of document lxvirt reads, told apart by their root element,
//! and a parsed document of either kind.

use super::xml::{self, Element};
use super::{DomainDef, DomainError, NetworkDef};

/// A kind of document, named after its root element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// `<domain>`: a container or virtual machine.
    Domain,
    /// `<network>`: a virtual network.
    Network,
}

impl DocumentKind {
    pub const ALL: [DocumentKind; 2] = [DocumentKind::Domain, DocumentKind::Network];

    /// The name of the root element.
    pub fn root_name(self) -> &'static str {
        match self {
            DocumentKind::Domain => "domain",
            DocumentKind::Network => "network",
        }
    }

    /// The kind of document `root` is the root of, if any.
    pub fn of(root: &Element) -> Option<DocumentKind> {
        if root.namespace.is_some() {
            return None;
        }
        DocumentKind::ALL
            .into_iter()
            .find(|k| k.root_name() == root.name)
    }
}

impl std::fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.root_name())
    }
}

/// A parsed and validated document of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Domain(Box<DomainDef>),
    Network(Box<NetworkDef>),
}

impl Document {
    /// Parses a document, its kind told by its root element.
    pub fn from_xml(text: &str) -> Result<Document, DomainError> {
        let root = xml::parse_str(text)?;
        Document::from_element(&root, text)
    }

    /// Converts a parsed tree; `source` is the text it was parsed from.
    pub fn from_element(root: &Element, source: &str) -> Result<Document, DomainError> {
        match DocumentKind::of(root) {
            Some(DocumentKind::Domain) => {
                DomainDef::from_element(root, source).map(|d| Document::Domain(Box::new(d)))
            }
            Some(DocumentKind::Network) => {
                NetworkDef::from_element(root).map(|n| Document::Network(Box::new(n)))
            }
            None => Err(DomainError::invalid(
                root.pos,
                &root.qname,
                format!("the root element is <{}>", root.qname),
                "lxvirt reads <domain> and <network> documents",
            )),
        }
    }

    pub fn kind(&self) -> DocumentKind {
        match self {
            Document::Domain(_) => DocumentKind::Domain,
            Document::Network(_) => DocumentKind::Network,
        }
    }

    /// The document as canonical XML (a domain's persistent definition).
    pub fn to_xml(&self) -> String {
        match self {
            Document::Domain(d) => d.to_xml(),
            Document::Network(n) => n.to_xml(),
        }
    }
}
