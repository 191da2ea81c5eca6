//! The persistent store: definitions and autostart marks under the config
//! directory, one [`Store`] per kind of document: domains
//! (`domains/NAME.xml`, `autostart/NAME`), networks (`networks/NAME.xml`,
//! `networks/autostart/NAME`), and any other [`Definition`].
//!
//! Files are written atomically and never rewritten behind the user's back:
//! a file that cannot be read at load time is reported and skipped, and its
//! name stays blocked so that a define cannot overwrite it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::domain::{DomainDef, DomainError, NetworkDef};
use crate::persist::{self, TEMP_PREFIX};

/// A kind of definition the store keeps: a document with a name and a
/// uuid, read and written as canonical XML.
pub trait Definition: Sized + Send {
    /// What it is called in messages (`domain`).
    const KIND: &'static str;
    /// Its directory below the config directory.
    const DIR: &'static str;
    /// The directory of its autostart marks below the config directory.
    const AUTOSTART_DIR: &'static str;

    fn name(&self) -> &str;
    fn uuid(&self) -> Uuid;
    fn from_bytes(bytes: &[u8]) -> Result<Self, DomainError>;
    fn to_xml(&self) -> String;
}

impl Definition for DomainDef {
    const KIND: &'static str = "domain";
    const DIR: &'static str = "domains";
    const AUTOSTART_DIR: &'static str = "autostart";

    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn uuid(&self) -> Uuid {
        self.uuid
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, DomainError> {
        DomainDef::from_bytes(bytes)
    }

    fn to_xml(&self) -> String {
        DomainDef::to_xml(self)
    }
}

impl Definition for NetworkDef {
    const KIND: &'static str = "network";
    const DIR: &'static str = "networks";
    const AUTOSTART_DIR: &'static str = "networks/autostart";

    fn name(&self) -> &str {
        NetworkDef::name(self)
    }

    fn uuid(&self) -> Uuid {
        self.uuid
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, DomainError> {
        NetworkDef::from_bytes(bytes)
    }

    fn to_xml(&self) -> String {
        NetworkDef::to_xml(self)
    }
}

/// A failure to read or write the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A file found at load time that could not become a definition.
#[derive(Debug, thiserror::Error)]
pub enum LoadProblem {
    #[error("{path}: cannot read")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: invalid definition")]
    Invalid {
        path: PathBuf,
        #[source]
        source: DomainError,
    },
    #[error(
        "{path}: file is named '{file_name}' but defines {kind} '{name}'; rename the file to {name}.xml"
    )]
    NameMismatch {
        path: PathBuf,
        kind: &'static str,
        file_name: String,
        name: String,
    },
    #[error(
        "{path}: uuid {uuid} is already used by {kind} '{other}' ({other_path}); give one of them a new uuid"
    )]
    DuplicateUuid {
        path: PathBuf,
        kind: &'static str,
        uuid: Uuid,
        other: String,
        other_path: PathBuf,
    },
    /// A temporary file of a write that never finished (its call was
    /// never answered): removed, as the definition beside it is whole.
    #[error(
        "{path}: left over from an interrupted write, whose call was never answered; {}",
        match removal_error {
            None => "removed".to_owned(),
            Some(e) => format!("cannot remove it ({e}); remove it by hand"),
        }
    )]
    Leftover {
        path: PathBuf,
        removal_error: Option<String>,
    },
}

impl LoadProblem {
    pub fn path(&self) -> &Path {
        match self {
            LoadProblem::Unreadable { path, .. }
            | LoadProblem::Invalid { path, .. }
            | LoadProblem::NameMismatch { path, .. }
            | LoadProblem::DuplicateUuid { path, .. }
            | LoadProblem::Leftover { path, .. } => path,
        }
    }
}

/// A definition read from the store.
#[derive(Debug)]
pub struct Stored<D = DomainDef> {
    pub def: D,
    pub autostart: bool,
}

/// What [`Store::load`] found.
#[derive(Debug)]
pub struct Loaded<D = DomainDef> {
    pub definitions: Vec<Stored<D>>,
    pub problems: Vec<LoadProblem>,
    /// Names whose file exists but could not be loaded: defining them again
    /// would overwrite the user's file, so the manager refuses that.
    pub blocked: HashMap<String, PathBuf>,
}

impl<D> Default for Loaded<D> {
    fn default() -> Self {
        Loaded {
            definitions: Vec::new(),
            problems: Vec::new(),
            blocked: HashMap::new(),
        }
    }
}

/// Definitions of one kind on disk.
#[derive(Debug)]
pub struct Store<D = DomainDef> {
    domains_dir: PathBuf,
    autostart_dir: PathBuf,
    kind: std::marker::PhantomData<fn() -> D>,
}

impl<D> Clone for Store<D> {
    fn clone(&self) -> Self {
        Store {
            domains_dir: self.domains_dir.clone(),
            autostart_dir: self.autostart_dir.clone(),
            kind: std::marker::PhantomData,
        }
    }
}

const DEF_MODE: u32 = 0o600;

impl<D: Definition> Store<D> {
    /// Opens the store under `config_dir`, creating its directories.
    pub fn open(config_dir: &Path) -> Result<Store<D>, StoreError> {
        let store = Store {
            domains_dir: config_dir.join(D::DIR),
            autostart_dir: config_dir.join(D::AUTOSTART_DIR),
            kind: std::marker::PhantomData,
        };
        for dir in [&store.domains_dir, &store.autostart_dir] {
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(store)
    }

    pub fn definition_path(&self, name: &str) -> PathBuf {
        self.domains_dir.join(format!("{name}.xml"))
    }

    fn autostart_path(&self, name: &str) -> PathBuf {
        self.autostart_dir.join(name)
    }

    /// The names marked for autostart: one directory read rather than a
    /// lookup per definition.
    fn autostart_names(&self) -> std::collections::HashSet<String> {
        fs::read_dir(&self.autostart_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads every definition. Never fails as a whole: each bad file becomes
    /// a [`LoadProblem`] and is left untouched.
    pub fn load(&self) -> Result<Loaded<D>, StoreError> {
        let mut loaded = Loaded::default();
        let entries = fs::read_dir(&self.domains_dir).map_err(|source| StoreError::ReadDir {
            path: self.domains_dir.clone(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        // Deterministic order: the first file wins a uuid conflict.
        paths.sort();
        let mut by_uuid: HashMap<Uuid, (String, PathBuf)> = HashMap::new();
        let mut definitions = Vec::new();
        for path in paths {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_name.starts_with(TEMP_PREFIX) {
                // The rename that commits a write never happened: the
                // definition beside it is the old one, or none, as the
                // unanswered caller may find. Left there, the file would
                // also block a later write by a daemon with the same pid.
                let removal_error = fs::remove_file(&path).err().map(|e| e.to_string());
                loaded.problems.push(LoadProblem::Leftover {
                    path,
                    removal_error,
                });
                continue;
            }
            let Some(stem) = file_name.strip_suffix(".xml") else {
                continue;
            };
            let stem = stem.to_owned();
            definitions.push((path, stem));
        }
        // Read and parsed on every CPU (thousands of them at start-up),
        // then taken in order.
        let read = crate::core::parallel::map(definitions, |(path, stem)| {
            let def = self.load_one(&path, &stem);
            (path, stem, def)
        });
        let autostart = self.autostart_names();
        for (path, stem, def) in read {
            match def {
                Ok(def) => {
                    if let Some((other, other_path)) = by_uuid.get(&def.uuid()) {
                        loaded.blocked.insert(stem, path.clone());
                        loaded.problems.push(LoadProblem::DuplicateUuid {
                            path,
                            kind: D::KIND,
                            uuid: def.uuid(),
                            other: other.clone(),
                            other_path: other_path.clone(),
                        });
                        continue;
                    }
                    let autostart = autostart.contains(stem.as_str());
                    by_uuid.insert(def.uuid(), (stem, path));
                    loaded.definitions.push(Stored { def, autostart });
                }
                Err(problem) => {
                    loaded.blocked.insert(stem, path);
                    loaded.problems.push(problem);
                }
            }
        }
        Ok(loaded)
    }

    fn load_one(&self, path: &Path, stem: &str) -> Result<D, LoadProblem> {
        let bytes = fs::read(path).map_err(|source| LoadProblem::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let def = D::from_bytes(&bytes).map_err(|source| LoadProblem::Invalid {
            path: path.to_owned(),
            source,
        })?;
        if def.name() != stem {
            return Err(LoadProblem::NameMismatch {
                path: path.to_owned(),
                kind: D::KIND,
                file_name: stem.to_owned(),
                name: def.name().to_owned(),
            });
        }
        Ok(def)
    }

    /// Writes a definition atomically (creates or replaces `NAME.xml`).
    pub fn save(&self, def: &D) -> Result<(), StoreError> {
        let path = self.definition_path(def.name());
        persist::write_atomic(&path, def.to_xml().as_bytes(), DEF_MODE)
            .map_err(|source| StoreError::Write { path, source })
    }

    /// Removes a definition and its autostart mark.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.set_autostart(name, false)?;
        let path = self.definition_path(name);
        match persist::remove_durable(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Remove { path, source }),
        }
    }

    /// Creates or removes the autostart mark of `name`.
    pub fn set_autostart(&self, name: &str, enabled: bool) -> Result<(), StoreError> {
        let path = self.autostart_path(name);
        if enabled {
            persist::write_atomic(&path, b"", 0o644)
                .map_err(|source| StoreError::Write { path, source })
        } else {
            match persist::remove_durable(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StoreError::Remove { path, source }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, uuid: &str) -> DomainDef {
        DomainDef::from_xml(&format!(
            "<domain type='lxc'><name>{name}</name><uuid>{uuid}</uuid><memory>65536</memory>\
             <os><type>exe</type><init>/bin/sh</init></os><devices><console type='pty'/></devices></domain>"
        ))
        .unwrap()
    }

    const U1: &str = "11111111-2222-3333-4444-555555555555";
    const U2: &str = "11111111-2222-3333-4444-666666666666";

    #[test]
    fn save_load_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = Store::open(dir.path()).unwrap();
        store.save(&def("web", U1)).unwrap();
        store.set_autostart("web", true).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.definitions.len(), 1);
        assert_eq!(loaded.definitions[0].def, def("web", U1));
        assert!(loaded.definitions[0].autostart);
        store.remove("web").unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.definitions.is_empty());
        assert!(!dir.path().join("autostart/web").exists());
    }

    #[test]
    fn bad_files_are_reported_skipped_and_kept_and_leftovers_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = Store::open(dir.path()).unwrap();
        store.save(&def("good", U1)).unwrap();
        let domains = dir.path().join("domains");
        let torn = b"<domain type='lxc'><name>torn</name><uui";
        fs::write(domains.join("torn.xml"), torn).unwrap();
        fs::write(domains.join("other.xml"), def("named", U2).to_xml()).unwrap();
        fs::write(domains.join("dup.xml"), def("dup", U1).to_xml()).unwrap();
        fs::write(domains.join(".tmp-x.xml-1"), b"half").unwrap();
        let loaded = store.load().unwrap();
        let names: Vec<_> = loaded
            .definitions
            .iter()
            .map(|d| d.def.name.to_string())
            .collect();
        // "dup.xml" sorts before "good.xml" and so wins the uuid.
        assert_eq!(names, vec!["dup"]);
        assert_eq!(loaded.problems.len(), 4, "{:?}", loaded.problems);
        assert!(loaded.blocked.contains_key("torn"));
        assert!(loaded.blocked.contains_key("other"));
        assert!(loaded.blocked.contains_key("good"));
        for problem in &loaded.problems {
            if let LoadProblem::Leftover {
                path,
                removal_error,
            } = problem
            {
                assert_eq!(removal_error, &None);
                assert!(!path.exists(), "a leftover temporary file is removed");
                assert!(problem.to_string().ends_with("removed"), "{problem}");
            } else {
                assert!(problem.path().exists(), "{problem} deleted");
            }
        }
        assert_eq!(fs::read(domains.join("torn.xml")).unwrap(), torn);
    }

    fn network(name: &str, uuid: &str) -> NetworkDef {
        NetworkDef::from_xml(&format!(
            "<network><name>{name}</name><uuid>{uuid}</uuid><bridge name='br-{name}'/>\
             <ip address='192.168.150.1' prefix='24'/></network>"
        ))
        .unwrap()
    }

    #[test]
    fn networks_are_kept_beside_domains() {
        let dir = tempfile::tempdir().unwrap();
        let domains: Store = Store::open(dir.path()).unwrap();
        let networks: Store<NetworkDef> = Store::open(dir.path()).unwrap();
        domains.save(&def("web", U1)).unwrap();
        networks.save(&network("lan", U2)).unwrap();
        networks.set_autostart("lan", true).unwrap();
        assert!(dir.path().join("networks/lan.xml").exists());
        assert!(dir.path().join("networks/autostart/lan").exists());
        // Neither kind sees the other's files (networks/autostart is not a
        // definition either).
        assert_eq!(domains.load().unwrap().definitions.len(), 1);
        let loaded = networks.load().unwrap();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.definitions.len(), 1);
        assert_eq!(loaded.definitions[0].def, network("lan", U2));
        assert!(loaded.definitions[0].autostart);
        networks.remove("lan").unwrap();
        assert!(networks.load().unwrap().definitions.is_empty());
        assert!(!dir.path().join("networks/autostart/lan").exists());
        assert_eq!(domains.load().unwrap().definitions.len(), 1);
    }

    #[test]
    fn bad_network_files_are_reported_and_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store<NetworkDef> = Store::open(dir.path()).unwrap();
        let networks = dir.path().join("networks");
        fs::write(networks.join("torn.xml"), b"<network><name>torn</na").unwrap();
        fs::write(networks.join("other.xml"), network("named", U1).to_xml()).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.definitions.is_empty());
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
        assert!(loaded.blocked.contains_key("torn"));
        assert!(loaded.blocked.contains_key("other"));
        let mismatch = loaded
            .problems
            .iter()
            .find(|p| matches!(p, LoadProblem::NameMismatch { .. }))
            .unwrap();
        assert!(
            mismatch.to_string().contains("defines network 'named'"),
            "{mismatch}"
        );
    }
}
