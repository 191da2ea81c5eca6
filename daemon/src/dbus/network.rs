//! `org.lxvirt.lxvirt1.Network`: one object per network.
//!
//! As for domains, properties are served from a summary the event adapter
//! keeps current; methods go to the core. Networks cannot start yet, so
//! `Active` is always false and there is no `Start` or `Destroy`.

use uuid::Uuid;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, Variant as Value, interface};

use super::exported::{Changes, Exported, SharedSummary, set_property};
use super::{NETWORK_INTERFACE, Shared, error::Error};
use crate::core::{NetworkSummary, XmlFlags};
use lxvirt_api::network_path;

/// A network's object.
#[derive(Debug)]
pub struct NetworkObject {
    uuid: Uuid,
    summary: SharedSummary<NetworkSummary>,
    shared: Shared,
}

impl Exported for NetworkObject {
    type Summary = NetworkSummary;
    const INTERFACE: &'static str = NETWORK_INTERFACE;

    fn path(uuid: Uuid) -> OwnedObjectPath {
        network_path(uuid)
    }

    fn uuid_of(summary: &NetworkSummary) -> Uuid {
        summary.uuid
    }

    fn new(summary: NetworkSummary, shared: Shared) -> Self {
        NetworkObject {
            uuid: summary.uuid,
            summary: SharedSummary::new(summary),
            shared,
        }
    }

    fn shared_summary(&self) -> SharedSummary<NetworkSummary> {
        self.summary.clone()
    }

    fn changed_properties(
        old: &NetworkSummary,
        new: &NetworkSummary,
    ) -> Vec<(&'static str, Value<'static>)> {
        let mut changes = Changes::new(old, new);
        changes.property("Active", |s| s.active);
        changes.property("Persistent", |s| s.persistent);
        changes.property("Autostart", |s| s.autostart);
        changes.property("Bridge", |s| s.bridge.clone());
        changes.into_vec()
    }

    fn lifecycle<'a>(
        emitter: &'a SignalEmitter<'a>,
        event: &'a str,
        detail: &'a str,
    ) -> impl std::future::Future<Output = zbus::Result<()>> + Send + 'a {
        NetworkObject::lifecycle(emitter, event, detail)
    }
}

#[interface(name = "org.lxvirt.lxvirt1.Network")]
impl NetworkObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.summary.get().name
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.to_string()
    }

    /// Whether its bridge is up; always false: networks cannot start yet.
    #[zbus(property)]
    fn active(&self) -> bool {
        self.summary.get().active
    }

    #[zbus(property)]
    fn persistent(&self) -> bool {
        self.summary.get().persistent
    }

    /// Whether the network is marked to start with the host (kept, but
    /// networks cannot start yet).
    #[zbus(property)]
    fn autostart(&self) -> bool {
        self.summary.get().autostart
    }

    #[zbus(property)]
    async fn set_autostart(
        &mut self,
        enabled: bool,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<()> {
        let call = self.shared.handle.network_set_autostart(self.uuid, enabled);
        let action = "change network autostart";
        set_property(&self.shared, connection, header, action, call).await?;
        self.summary.update(|s| s.autostart = enabled);
        Ok(())
    }

    /// The name of its bridge: the one `<bridge name=>` gives, else the
    /// one the daemon picked when it was defined.
    #[zbus(property)]
    fn bridge(&self) -> String {
        self.summary.get().bridge
    }

    /// The network's XML; flags as for a domain's (none changes it yet).
    #[zbus(name = "GetXML")]
    async fn get_xml(&self, flags: u32) -> Result<String, Error> {
        Ok(self
            .shared
            .handle
            .network_get_xml(self.uuid, XmlFlags(flags))
            .await?)
    }

    /// Removes the definition; the object goes away.
    async fn undefine(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let undefine = async {
            let seq = self.shared.handle.network_undefine(self.uuid).await?;
            Ok(((), seq))
        };
        (self.shared)
            .mutate(connection, &header, "undefine networks", undefine)
            .await
    }

    /// A lifecycle event: `defined` (`added`, `updated`), `undefined`
    /// (`removed`).
    #[zbus(signal)]
    pub(crate) async fn lifecycle(
        emitter: &SignalEmitter<'_>,
        event: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}
