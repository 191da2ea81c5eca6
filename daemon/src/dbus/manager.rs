//! `org.lxvirt.lxvirt1.Manager`.

use uuid::Uuid;
use zbus::OwnedObjectPath;
use zbus::message::Header;
use zbus::{Connection, interface};

use super::{Shared, domain_path, error::Error};
use crate::core::Lookup;

/// The manager object at `/org/lxvirt/lxvirt1`.
#[derive(Debug)]
pub struct ManagerObject {
    shared: Shared,
    capabilities_xml: String,
}

impl ManagerObject {
    pub(crate) fn new(shared: Shared, capabilities_xml: String) -> Self {
        ManagerObject {
            shared,
            capabilities_xml,
        }
    }
}

#[interface(name = "org.lxvirt.lxvirt1.Manager")]
impl ManagerObject {
    /// Defines (or updates) a persistent domain from its XML; returns its object path.
    #[zbus(name = "DefineXML")]
    async fn define_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "define domains")
            .await?;
        let (summary, seq) = self.shared.handle.define_xml(xml).await?;
        self.shared.published(seq).await;
        Ok(domain_path(summary.uuid))
    }

    /// Creates and starts a transient domain (forgotten when it stops);
    /// returns its object path once it runs.
    #[zbus(name = "CreateXML")]
    async fn create_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        xml: String,
    ) -> Result<OwnedObjectPath, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "create domains")
            .await?;
        let (uuid, seq) = self.shared.handle.create_xml(xml).await?;
        self.shared.published(seq).await;
        Ok(domain_path(uuid))
    }

    /// Object paths of every domain, sorted by name.
    async fn list_domains(&self) -> Result<Vec<OwnedObjectPath>, Error> {
        let list = self.shared.handle.list().await?;
        Ok(list.into_iter().map(|s| domain_path(s.uuid)).collect())
    }

    async fn lookup_by_name(&self, name: String) -> Result<OwnedObjectPath, Error> {
        let summary = self.shared.handle.lookup(Lookup::Name(name)).await?;
        Ok(domain_path(summary.uuid))
    }

    #[zbus(name = "LookupByUUID")]
    async fn lookup_by_uuid(&self, uuid: String) -> Result<OwnedObjectPath, Error> {
        let uuid = Uuid::parse_str(&uuid)
            .map_err(|e| Error::InvalidArgument(format!("'{uuid}' is not a uuid: {e}")))?;
        let summary = self.shared.handle.lookup(Lookup::Uuid(uuid)).await?;
        Ok(domain_path(summary.uuid))
    }

    /// An XML description of what this host supports.
    async fn get_capabilities(&self) -> String {
        self.capabilities_xml.clone()
    }

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}
