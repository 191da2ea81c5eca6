//! Turns core events into exported objects, PropertiesChanged and
//! lifecycle signals.

use tokio::sync::{mpsc, watch};
use zbus::Connection;

use std::borrow::Cow;
use std::collections::HashMap;

use uuid::Uuid;

use super::Shared;
use super::domain::DomainObject;
use super::exported::Exported;
use super::network::NetworkObject;
use crate::core::{Event, EventKind, Lifecycle, Seq};

pub(crate) struct Adapter {
    connection: Connection,
    shared: Shared,
    published: watch::Sender<Seq>,
}

impl Adapter {
    pub(crate) fn new(
        connection: Connection,
        shared: Shared,
        published: watch::Sender<Seq>,
    ) -> Self {
        Adapter {
            connection,
            shared,
            published,
        }
    }

    pub(crate) async fn run(self, mut events: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.recv().await {
            let seq = event.seq;
            if let Err(error) = self.apply(event).await {
                // The bus connection is failing; clients will notice too.
                tracing::warn!(%error, seq, "cannot publish a core event on D-Bus");
            }
            self.published.send_replace(seq);
        }
    }

    async fn apply(&self, event: Event) -> zbus::Result<()> {
        match event.kind {
            EventKind::Changed { summary, lifecycle } => {
                self.changed::<DomainObject>(summary, lifecycle).await
            }
            EventKind::Removed { uuid, lifecycle } => {
                self.removed::<DomainObject>(uuid, lifecycle).await
            }
            EventKind::NetworkChanged { summary, lifecycle } => {
                self.changed::<NetworkObject>(summary, lifecycle).await
            }
            EventKind::NetworkRemoved { uuid, lifecycle } => {
                self.removed::<NetworkObject>(uuid, lifecycle).await
            }
        }
    }

    /// Exports the object, or updates its summary and emits one
    /// `PropertiesChanged`; then the lifecycle signal, if any.
    async fn changed<O: Exported>(
        &self,
        summary: O::Summary,
        lifecycle: Option<Lifecycle>,
    ) -> zbus::Result<()> {
        let server = self.connection.object_server();
        let path = O::path(O::uuid_of(&summary));
        match server.interface::<_, O>(&path).await {
            Ok(iface) => {
                let shared = iface.get().await.shared_summary();
                let old = shared.replace(summary.clone());
                let changed = O::changed_properties(&old, &summary);
                emit_changes(iface.signal_emitter(), O::INTERFACE, changed).await?;
            }
            Err(_) => super::export::<O>(server, &self.shared, summary).await?,
        }
        if let Some(lifecycle) = lifecycle {
            emit_lifecycle::<O>(&self.connection, &path, lifecycle).await?;
        }
        Ok(())
    }

    /// Emits the lifecycle signal, then removes the object.
    async fn removed<O: Exported>(&self, uuid: Uuid, lifecycle: Lifecycle) -> zbus::Result<()> {
        let path = O::path(uuid);
        emit_lifecycle::<O>(&self.connection, &path, lifecycle).await?;
        self.shared.registry.remove(&path);
        self.connection
            .object_server()
            .remove::<O, _>(&path)
            .await?;
        Ok(())
    }
}

/// One `PropertiesChanged` with every property that changed, as clients
/// expect of one transition (zbus's per-property helpers send one each).
async fn emit_changes(
    emitter: &zbus::object_server::SignalEmitter<'static>,
    interface: &'static str,
    changed: Vec<(&'static str, zbus::Variant<'static>)>,
) -> zbus::Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let changed: HashMap<&str, zbus::Variant<'_>> = changed.into_iter().collect();
    let interface = zbus::names::InterfaceName::from_static_str_unchecked(interface);
    zbus::fdo::Properties::properties_changed(emitter, interface, changed, Cow::Borrowed(&[])).await
}

async fn emit_lifecycle<O: Exported>(
    connection: &Connection,
    path: &zbus::OwnedObjectPath,
    lifecycle: Lifecycle,
) -> zbus::Result<()> {
    let (event, detail) = lifecycle.names();
    let emitter = zbus::object_server::SignalEmitter::new(connection, path.as_ref())?;
    O::lifecycle(&emitter, event, detail).await
}
