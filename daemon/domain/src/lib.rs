//! The domain model: XML documents to typed definitions and back.
//!
//! [`xml`] reads bytes into a position-carrying tree and refuses hostile
//! input; `parse` turns that tree into a validated [`DomainDef`]; `format`
//! writes a definition back as canonical XML; [`schema`] validates a tree
//! against the RELAX NG schema. `kept` holds the table of libvirt's VM
//! elements that are accepted and stored without typed fields
//! ([`KeptElement`]; [`DomainDef::unsupported_for_vm`] lists them).
//!
//! A crate of its own, below the daemon: the `lxvirt` client checks and
//! edits definitions with it without building the daemon (device-mapper
//! bindings, drivers). It knows nothing of D-Bus or the host.

pub mod addr;
mod cpuset;
mod def;
mod document;
mod error;
mod format;
mod kept;
pub mod network;
mod parse;
pub mod schema;
pub mod syscalls;
mod units;
mod values;
// The raw layer's tests unwrap freely.
#[cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
pub mod xml;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod arb;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod network_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod test_support;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod vm_tests;

pub use cpuset::CpuSet;
pub use def::*;
pub use document::{Document, DocumentKind};
pub use error::DomainError;
pub use format::FormatOptions;
pub use network::NetworkDef;
pub use parse::is_context;
pub use units::{parse_size, unit_scale};
pub use values::{Capability, DomainName, IdRef, MacAddr, NetworkName};

impl DomainDef {
    /// Parses and validates a domain document.
    pub fn from_xml(text: &str) -> Result<DomainDef, DomainError> {
        let root = xml::parse_str(text)?;
        parse::parse_domain(&root, text)
    }

    /// Like [`DomainDef::from_xml`], from bytes that must be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Result<DomainDef, DomainError> {
        let root = xml::parse_bytes(bytes)?;
        // parse_bytes has checked the encoding.
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        parse::parse_domain(&root, text)
    }

    /// Converts a parsed tree; `source` is the text it was parsed from,
    /// needed to keep `<metadata>` verbatim.
    pub fn from_element(root: &xml::Element, source: &str) -> Result<DomainDef, DomainError> {
        parse::parse_domain(root, source)
    }

    /// The persistent definition as canonical XML (no live-only data).
    pub fn to_xml(&self) -> String {
        format::format_domain(self, FormatOptions::default())
    }

    /// The definition of a running domain, with its live security labels.
    pub fn to_live_xml(&self) -> String {
        format::format_domain(self, FormatOptions { live: true })
    }

    /// Formats with explicit options.
    pub fn to_xml_with(&self, options: FormatOptions) -> String {
        format::format_domain(self, options)
    }
}

impl Interface {
    /// The `<interface>` element alone, as `AttachDevice` and
    /// `UpdateDevice` take it ([`DeviceDef::from_xml`] reads it back).
    pub fn to_xml(&self) -> String {
        format::format_interface_element(self)
    }
}
