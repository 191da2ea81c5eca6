//! `org.freedesktop.DBus.ObjectManager` at the manager's path, served from
//! the summaries of the exported objects.
//!
//! zbus's own implementation walks its object tree and calls every
//! interface's `GetAll`, which copies each property into an owned variant
//! of its own (with 6,000 domains: 80,000 copies and 90 ms under the object
//! tree's lock). This one copies each object's summary once and writes the
//! reply straight from it. zbus still sends `InterfacesAdded` and
//! `InterfacesRemoved`: it recognises an object manager by its interface
//! name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::ser::{Serialize, SerializeMap, Serializer};
use zbus::fdo::ManagedObjects as ZbusManagedObjects;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, Type, Variant as Value, interface};

use super::auth::Authorizer;
use super::domain::DomainObject;
use super::error::Error;
use super::exported::{Exported, SharedSummary};
use super::network::NetworkObject;
use crate::core::{DomainSummary, NetworkSummary};

/// An exported object, as the object manager lists it.
#[derive(Debug, Clone)]
pub(crate) enum Registered {
    Domain(SharedSummary<DomainSummary>),
    Network(SharedSummary<NetworkSummary>),
}

/// A copy of an exported object's summary.
enum Snapshot {
    Domain(DomainSummary),
    Network(NetworkSummary),
}

impl Registered {
    fn snapshot(&self) -> Snapshot {
        match self {
            Registered::Domain(summary) => Snapshot::Domain(summary.get()),
            Registered::Network(summary) => Snapshot::Network(summary.get()),
        }
    }
}

/// The objects below the manager, by path. The event adapter changes it
/// just before it changes the object server (so that a client that asks
/// for the objects and watches the signals sees each object in one of
/// them, at worst in both).
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry(Arc<RwLock<HashMap<OwnedObjectPath, Registered>>>);

impl Registry {
    pub(crate) fn insert(&self, path: OwnedObjectPath, object: Registered) {
        self.write().insert(path, object);
    }

    pub(crate) fn remove(&self, path: &OwnedObjectPath) {
        self.write().remove(path);
    }

    /// The names of the objects right below `parent`, sorted.
    pub(crate) fn children_of(&self, parent: &str) -> Vec<String> {
        let objects = self.read();
        let mut children: Vec<String> = objects
            .keys()
            .filter_map(|path| path.as_str().strip_prefix(parent)?.strip_prefix('/'))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        children.sort_unstable();
        children.dedup();
        children
    }

    fn snapshot(&self) -> ManagedObjects {
        let objects = self.read();
        ManagedObjects(
            objects
                .iter()
                .map(|(path, object)| (path.clone(), object.snapshot()))
                .collect(),
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<OwnedObjectPath, Registered>> {
        match self.0.read() {
            Ok(guard) => guard,
            // Writers only insert or remove whole entries.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<OwnedObjectPath, Registered>> {
        match self.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The object at the manager's path that lists the objects below it.
pub(crate) struct ObjectManager {
    registry: Registry,
    authorizer: Authorizer,
}

impl ObjectManager {
    pub(crate) fn new(registry: Registry, authorizer: Authorizer) -> Self {
        ObjectManager {
            registry,
            authorizer,
        }
    }
}

#[interface(name = "org.freedesktop.DBus.ObjectManager")]
impl ObjectManager {
    /// Every domain and network object with all its properties.
    async fn get_managed_objects(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<ManagedObjects, Error> {
        self.authorizer
            .check_read(connection, Some(&header))
            .await?;
        Ok(self.registry.snapshot())
    }

    // zbus emits these itself as objects come and go below this one (with
    // `zbus::fdo::ObjectManager`'s emitters); declared here so that
    // introspection shows them.
    #[zbus(signal)]
    async fn interfaces_added(
        emitter: &SignalEmitter<'_>,
        object_path: zbus::ObjectPath<'_>,
        interfaces_and_properties: std::collections::HashMap<
            zbus::names::InterfaceName<'_>,
            std::collections::HashMap<&str, Value<'_>>,
        >,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn interfaces_removed(
        emitter: &SignalEmitter<'_>,
        object_path: zbus::ObjectPath<'_>,
        interfaces: &[zbus::names::InterfaceName<'_>],
    ) -> zbus::Result<()>;
}

/// The reply of `GetManagedObjects`, `a{oa{sa{sv}}}`, written from copies
/// of the summaries with each property borrowed from its summary.
pub(crate) struct ManagedObjects(Vec<(OwnedObjectPath, Snapshot)>);

impl Type for ManagedObjects {
    const SIGNATURE: &'static zbus::Signature = <ZbusManagedObjects as Type>::SIGNATURE;
}

impl Serialize for ManagedObjects {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut objects = serializer.serialize_map(Some(self.0.len()))?;
        for (path, snapshot) in &self.0 {
            objects.serialize_entry(path, &OneInterface(snapshot))?;
        }
        objects.end()
    }
}

/// An object's interfaces: each object here has one besides the standard ones.
struct OneInterface<'a>(&'a Snapshot);

impl Serialize for OneInterface<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (interface, properties) = match self.0 {
            Snapshot::Domain(summary) => {
                (DomainObject::INTERFACE, DomainObject::properties(summary))
            }
            Snapshot::Network(summary) => {
                (NetworkObject::INTERFACE, NetworkObject::properties(summary))
            }
        };
        let mut interfaces = serializer.serialize_map(Some(1))?;
        interfaces.serialize_entry(interface, &Properties(properties))?;
        interfaces.end()
    }
}

struct Properties<'a>(Vec<(&'static str, Value<'a>)>);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut properties = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            properties.serialize_entry(name, value)?;
        }
        properties.end()
    }
}
