//! `org.lxvirt.lxvirt1.Domain`: one object per domain.
//!
//! Properties are served from a summary the event adapter keeps current;
//! methods go to the core.

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::{Shared, error::Error};
use crate::core::{DomainSummary, XmlFlags};

/// A domain's object.
#[derive(Debug)]
pub struct DomainObject {
    summary: DomainSummary,
    shared: Shared,
}

impl DomainObject {
    pub(crate) fn new(summary: DomainSummary, shared: Shared) -> Self {
        DomainObject { summary, shared }
    }

    pub(crate) fn summary(&self) -> &DomainSummary {
        &self.summary
    }

    pub(crate) fn set_summary(&mut self, summary: DomainSummary) {
        self.summary = summary;
    }
}

#[interface(name = "org.lxvirt.lxvirt1.Domain")]
impl DomainObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.summary.name.clone()
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    fn uuid(&self) -> String {
        self.summary.uuid.to_string()
    }

    /// The driver: `lxc`, `kvm` or `qemu`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn type_(&self) -> String {
        self.summary.domain_type.as_str().to_owned()
    }

    #[zbus(property)]
    fn persistent(&self) -> bool {
        self.summary.persistent
    }

    #[zbus(property)]
    fn autostart(&self) -> bool {
        self.summary.autostart
    }

    #[zbus(property)]
    async fn set_autostart(
        &mut self,
        enabled: bool,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> zbus::fdo::Result<()> {
        if let Some(header) = &header {
            self.shared
                .authorizer
                .check(connection, header, "change autostart")
                .await?;
        }
        self.shared
            .handle
            .set_autostart(self.summary.uuid, enabled)
            .await
            .map_err(Error::from)?;
        // zbus emits PropertiesChanged for a setter; updating this copy now
        // lets the adapter see no difference and stay quiet. (Waiting for
        // the adapter here would deadlock: it needs this object mutably.)
        self.summary.autostart = enabled;
        Ok(())
    }

    /// `shutoff`, `running`, `paused` or `crashed`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.summary.state.as_str().to_owned()
    }

    /// Why the domain is in its state (`booted`, `shutdown`, `destroyed`, …).
    #[zbus(property)]
    fn state_reason(&self) -> String {
        self.summary.reason.as_str().to_owned()
    }

    /// The domain's XML; flags: 1 = secure, 2 = inactive (the persistent definition).
    #[zbus(name = "GetXML")]
    async fn get_xml(&self, flags: u32) -> Result<String, Error> {
        Ok(self
            .shared
            .handle
            .get_xml(self.summary.uuid, XmlFlags(flags))
            .await?)
    }

    /// Starts the domain.
    async fn start(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.shared
            .authorizer
            .check(connection, &header, "start domains")
            .await?;
        let seq = self.shared.handle.start(self.summary.uuid).await?;
        self.shared.published(seq).await;
        Ok(())
    }

    /// Removes the persistent definition; a running domain becomes transient.
    async fn undefine(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        self.shared
            .authorizer
            .check(connection, &header, "undefine domains")
            .await?;
        let seq = self.shared.handle.undefine(self.summary.uuid).await?;
        self.shared.published(seq).await;
        Ok(())
    }

    /// A lifecycle event: `defined` (`added`, `updated`), `undefined` (`removed`), …
    #[zbus(signal)]
    pub(crate) async fn lifecycle(
        emitter: &SignalEmitter<'_>,
        event: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}
