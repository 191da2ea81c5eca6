//! What domains and networks share: finding a definition by name or uuid,
//! and the checks a define makes of a new definition's name and uuid.

use std::collections::HashMap;
use std::path::PathBuf;

use uuid::Uuid;

use crate::core::types::{CoreError, Lookup};

/// The definitions of one kind the manager holds, by uuid and by name,
/// and the names whose file could not be loaded.
#[derive(Debug)]
pub(super) struct Index<'a, E> {
    /// What they are called in messages (`domain`, `network`).
    pub kind: &'static str,
    pub by_uuid: &'a HashMap<Uuid, E>,
    pub names: &'a HashMap<String, Uuid>,
    pub blocked: &'a HashMap<String, PathBuf>,
    /// The name of a definition.
    pub name_of: fn(&E) -> &str,
}

impl<'a, E> Index<'a, E> {
    /// The definition `lookup` names, if there is one.
    pub fn find(&self, lookup: &Lookup) -> Option<&'a E> {
        let uuid = match lookup {
            Lookup::Name(name) => self.names.get(name),
            Lookup::Uuid(uuid) => Some(uuid),
        };
        uuid.and_then(|u| self.by_uuid.get(u))
    }

    /// Checks the name and uuid of a definition about to be defined from
    /// `xml`, and returns the uuid of the definition it replaces. A name
    /// whose file could not be loaded is refused; a document without
    /// `<uuid>` takes the uuid of the definition of that name, so that
    /// applying the same file twice is idempotent; a name or uuid another
    /// definition has is refused.
    pub fn claim(&self, xml: &str, name: &str, uuid: &mut Uuid) -> Result<Option<Uuid>, CoreError> {
        if let Some(path) = self.blocked.get(name) {
            return Err(CoreError::Blocked {
                kind: self.kind,
                name: name.to_owned(),
                path: path.clone(),
            });
        }
        let existing = self.names.get(name).copied();
        if let Some(existing) = existing {
            if !has_explicit_uuid(xml) {
                *uuid = existing;
            }
            if *uuid != existing {
                return Err(CoreError::NameTaken {
                    kind: self.kind,
                    name: name.to_owned(),
                    existing,
                });
            }
        } else if let Some(other) = self.by_uuid.get(uuid) {
            return Err(CoreError::UuidTaken {
                kind: self.kind,
                uuid: *uuid,
                other: (self.name_of)(other).to_owned(),
            });
        }
        Ok(existing)
    }
}

/// Whether a document names its uuid (the parser generates one otherwise).
fn has_explicit_uuid(xml: &str) -> bool {
    crate::domain::xml::parse_str(xml)
        .map(|root| root.element("uuid").is_some())
        .unwrap_or(false)
}
