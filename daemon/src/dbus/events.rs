//! Turns core events into exported objects, PropertiesChanged and
//! lifecycle signals.

use tokio::sync::{mpsc, watch};
use zbus::Connection;

use std::borrow::Cow;
use std::collections::HashMap;

use super::domain::{DomainObject, changed_properties};
use super::{DOMAIN_INTERFACE, Shared, domain_path};
use crate::core::{DomainSummary, Event, EventKind, Lifecycle, Seq};

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
                tracing::warn!(%error, seq, "cannot publish a domain event on D-Bus");
            }
            self.published.send_replace(seq);
        }
    }

    async fn apply(&self, event: Event) -> zbus::Result<()> {
        let server = self.connection.object_server();
        match event.kind {
            EventKind::Changed { summary, lifecycle } => {
                let path = domain_path(summary.uuid);
                match server.interface::<_, DomainObject>(&path).await {
                    Ok(iface) => {
                        let object = iface.get().await;
                        let shared = object.shared_summary();
                        let old = {
                            let mut guard = match shared.write() {
                                Ok(guard) => guard,
                                Err(poisoned) => poisoned.into_inner(),
                            };
                            std::mem::replace(&mut *guard, summary.clone())
                        };
                        emit_changes(iface.signal_emitter(), &old, &summary).await?;
                    }
                    Err(_) => {
                        server
                            .at(&path, DomainObject::new(summary, self.shared.clone()))
                            .await?;
                    }
                }
                if let Some(lifecycle) = lifecycle {
                    emit_lifecycle(&self.connection, &path, lifecycle).await?;
                }
            }
            EventKind::Removed { uuid, lifecycle } => {
                let path = domain_path(uuid);
                emit_lifecycle(&self.connection, &path, lifecycle).await?;
                server.remove::<DomainObject, _>(&path).await?;
            }
            // Networks are not exported on the bus yet.
            EventKind::NetworkChanged { .. } | EventKind::NetworkRemoved { .. } => {}
        }
        Ok(())
    }
}

/// One `PropertiesChanged` with every property that changed, as clients
/// expect of one transition (zbus's per-property helpers send one each).
async fn emit_changes(
    emitter: &zbus::object_server::SignalEmitter<'static>,
    old: &DomainSummary,
    new: &DomainSummary,
) -> zbus::Result<()> {
    let changed = changed_properties(old, new);
    if changed.is_empty() {
        return Ok(());
    }
    let changed: HashMap<&str, zbus::Variant<'_>> = changed.into_iter().collect();
    let interface = zbus::names::InterfaceName::from_static_str_unchecked(DOMAIN_INTERFACE);
    zbus::fdo::Properties::properties_changed(emitter, interface, changed, Cow::Borrowed(&[])).await
}

async fn emit_lifecycle(
    connection: &Connection,
    path: &zbus::OwnedObjectPath,
    lifecycle: Lifecycle,
) -> zbus::Result<()> {
    let (event, detail) = lifecycle.names();
    let emitter = zbus::object_server::SignalEmitter::new(connection, path.as_ref())?;
    DomainObject::lifecycle(&emitter, event, detail).await
}
