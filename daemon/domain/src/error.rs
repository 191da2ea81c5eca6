//! Errors of the typed domain layer.

use super::xml::{Pos, XmlError};

/// Why a document is not a valid domain (or network) definition.
///
/// Every variant but [`DomainError::Xml`] names the position and the element
/// at fault; `Display` gives `LINE:COL: <element>: problem; fix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The document is not well-formed or breaks a limit of the raw layer.
    #[error(transparent)]
    Xml(#[from] XmlError),

    /// A child element lxvirt does not know.
    #[error("{pos}: <{element}>: unknown element <{child}>; remove it or check its spelling{hint}")]
    UnknownElement {
        pos: Pos,
        element: String,
        child: String,
        /// Extra advice, already formatted (", known here: …").
        hint: String,
    },

    /// An attribute lxvirt does not know.
    #[error(
        "{pos}: <{element}>: unknown attribute '{attribute}'; remove it or check its spelling{hint}"
    )]
    UnknownAttribute {
        pos: Pos,
        element: String,
        attribute: String,
        hint: String,
    },

    /// A required element or attribute is absent.
    #[error("{pos}: <{element}>: missing {what}; {fix}")]
    Missing {
        pos: Pos,
        element: String,
        what: String,
        fix: String,
    },

    /// An element or attribute that may appear once appears again.
    #[error("{pos}: <{element}>: {what} appears more than once; keep only one")]
    Duplicate {
        pos: Pos,
        element: String,
        what: String,
    },

    /// A value that does not parse, is out of range or contradicts another.
    #[error("{pos}: <{element}>: {problem}; {fix}")]
    Invalid {
        pos: Pos,
        element: String,
        problem: String,
        fix: String,
    },
}

impl DomainError {
    /// Where in the document the problem is, when known.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            DomainError::Xml(e) => e.pos(),
            DomainError::UnknownElement { pos, .. }
            | DomainError::UnknownAttribute { pos, .. }
            | DomainError::Missing { pos, .. }
            | DomainError::Duplicate { pos, .. }
            | DomainError::Invalid { pos, .. } => Some(*pos),
        }
    }

    /// The element at fault, when known.
    pub fn element(&self) -> Option<&str> {
        match self {
            DomainError::Xml(_) => None,
            DomainError::UnknownElement { element, .. }
            | DomainError::UnknownAttribute { element, .. }
            | DomainError::Missing { element, .. }
            | DomainError::Duplicate { element, .. }
            | DomainError::Invalid { element, .. } => Some(element),
        }
    }

    pub(crate) fn invalid(
        pos: Pos,
        element: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        DomainError::Invalid {
            pos,
            element: element.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn missing(
        pos: Pos,
        element: &str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        DomainError::Missing {
            pos,
            element: element.to_owned(),
            what: what.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn duplicate(pos: Pos, element: &str, what: impl Into<String>) -> Self {
        DomainError::Duplicate {
            pos,
            element: element.to_owned(),
            what: what.into(),
        }
    }
}
