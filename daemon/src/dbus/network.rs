//! `org.lxvirt.lxvirt1.Network`: one object per network.
//!
//! As for domains, properties are served from a summary the event adapter
//! keeps current; methods go to the core.

use uuid::Uuid;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, Variant as Value, interface};

use super::exported::{Exported, SharedSummary, set_property};
use super::object_manager::Registered;
use super::{NETWORK_INTERFACE, Shared, error::Error};
use crate::core::{NetworkSummary, XmlFlags};
use lxvirt_api::network_path;

/// `Destroy` flag: even with running domains on the network.
const NETWORK_DESTROY_FORCE: u32 = 1;

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

    fn registered(summary: SharedSummary<NetworkSummary>) -> Registered {
        Registered::Network(summary)
    }

    fn properties(s: &NetworkSummary) -> Vec<(&'static str, Value<'_>)> {
        vec![
            ("Name", s.name.as_str().into()),
            ("UUID", s.uuid.to_string().into()),
            ("Active", s.active.into()),
            ("Persistent", s.persistent.into()),
            ("Autostart", s.autostart.into()),
            ("Bridge", s.bridge.as_str().into()),
        ]
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
    async fn name(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.name.clone()))
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    async fn uuid(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.uuid.to_string())
    }

    /// Whether it runs: its bridge, rules and DHCP/DNS server are up.
    #[zbus(property)]
    async fn active(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<bool> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.active))
    }

    #[zbus(property)]
    async fn persistent(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<bool> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.persistent))
    }

    /// Whether the network starts with the host (before the autostart
    /// domains).
    #[zbus(property)]
    async fn autostart(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<bool> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.autostart))
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
    async fn bridge(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<String> {
        self.shared.may_read(connection, header.as_ref()).await?;
        Ok(self.summary.read(|s| s.bridge.clone()))
    }

    /// The network's XML: the live one while active, unless flags ask for
    /// the persistent one (`INACTIVE`, 2).
    #[zbus(name = "GetXML")]
    async fn get_xml(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        flags: u32,
    ) -> Result<String, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        Ok(self
            .shared
            .handle
            .network_get_xml(self.uuid, XmlFlags(flags))
            .await?)
    }

    /// Brings the network up: bridge, addresses, firewall table, DHCP and
    /// DNS; returns once it serves.
    async fn start(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let start = async {
            let seq = self.shared.handle.network_start(self.uuid).await?;
            Ok(((), seq))
        };
        (self.shared)
            .mutate(connection, &header, "start networks", start)
            .await
    }

    /// Takes the network down. Refused while running domains have ports
    /// on it, unless flags has `FORCE` (1).
    async fn destroy(
        &self,
        flags: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let force = flags & NETWORK_DESTROY_FORCE != 0;
        // Checked once the caller may: a refusal says nothing of the flags.
        let destroy = async {
            if flags & !NETWORK_DESTROY_FORCE != 0 {
                return Err(crate::core::CoreError::InvalidFlags(flags));
            }
            let seq = self.shared.handle.network_destroy(self.uuid, force).await?;
            Ok(((), seq))
        };
        (self.shared)
            .mutate(connection, &header, "destroy networks", destroy)
            .await
    }

    /// The DHCP leases the network's server has given: (MAC, address,
    /// prefix, host name, client id, expiry in seconds since the epoch, 0
    /// for none), those of `mac` only when it is not empty.
    #[zbus(name = "GetDHCPLeases")]
    async fn get_dhcp_leases(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        mac: String,
        flags: u32,
    ) -> Result<Vec<(String, String, u8, String, String, u64)>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        if flags != 0 {
            return Err(crate::core::CoreError::InvalidFlags(flags).into());
        }
        let leases = self.shared.handle.network_leases(self.uuid).await?;
        Ok(leases
            .into_iter()
            .filter(|l| mac.is_empty() || l.mac.eq_ignore_ascii_case(&mac))
            .map(|l| {
                (
                    l.mac,
                    l.ip.to_string(),
                    l.prefix,
                    l.hostname.unwrap_or_default(),
                    l.client_id.unwrap_or_default(),
                    l.expiry,
                )
            })
            .collect())
    }

    /// Removes the definition; the object goes away (an active network
    /// runs on, transient, until destroyed).
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
    /// (`removed`), `started` (`booted`, also after a daemon restart took
    /// it over), `stopped` (`destroyed`).
    #[zbus(signal)]
    pub(crate) async fn lifecycle(
        emitter: &SignalEmitter<'_>,
        event: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}
