//! Turns core events into exported objects, PropertiesChanged and
//! lifecycle signals.

use tokio::sync::{mpsc, watch};
use zbus::Connection;

use super::domain::DomainObject;
use super::{Shared, domain_path};
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
                        let emitter = iface.signal_emitter();
                        emit_changes(&object, emitter, &old, &summary).await?;
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
        }
        Ok(())
    }
}

async fn emit_changes(
    object: &DomainObject,
    emitter: &zbus::object_server::SignalEmitter<'static>,
    old: &DomainSummary,
    new: &DomainSummary,
) -> zbus::Result<()> {
    if old.persistent != new.persistent {
        object.persistent_changed(emitter).await?;
    }
    if old.autostart != new.autostart {
        object.autostart_changed(emitter).await?;
    }
    if old.state != new.state {
        object.state_changed(emitter).await?;
    }
    if old.reason != new.reason {
        object.state_reason_changed(emitter).await?;
    }
    if old.init_pid != new.init_pid {
        object.pid_changed(emitter).await?;
    }
    if old.start_time != new.start_time {
        object.start_time_changed(emitter).await?;
    }
    if old.security_label != new.security_label {
        object.security_label_changed(emitter).await?;
    }
    if old.user_namespace != new.user_namespace {
        object.user_namespace_changed(emitter).await?;
    }
    if old.host_ids != new.host_ids {
        object.host_ids_changed(emitter).await?;
    }
    Ok(())
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
