//! The D-Bus adapter: decodes calls, sends commands to the core, maps the
//! results, and turns core events into objects and signals.
//!
//! Bus name `org.lxvirt.lxvirt1`; the manager at `/org/lxvirt/lxvirt1` with
//! `org.lxvirt.lxvirt1.Manager` and `org.freedesktop.DBus.ObjectManager`;
//! one object per domain at `/org/lxvirt/lxvirt1/domain/_<uuid>` with
//! `org.lxvirt.lxvirt1.Domain`; one object per network at
//! `/org/lxvirt/lxvirt1/network/_<uuid>` with `org.lxvirt.lxvirt1.Network`.
//! The contract is committed in
//! `daemon/data/org.lxvirt.lxvirt1.xml`; the `lxvirt_api` crate holds it
//! with the names, errors and client proxies.

mod auth;
mod domain;
mod error;
mod events;
mod exported;
mod images;
mod introspect;
mod manager;
mod network;
mod object_manager;
mod options;
mod peer_socket;
pub mod private;

use tokio::sync::{mpsc, watch};

pub use auth::Authorizer;
pub use domain::DomainObject;
pub use error::Error;
use exported::Exported;
pub use images::ImagesObject;
/// The contract's names, paths and types, from `lxvirt_api` (name that
/// crate in new code; these keep the daemon's old paths working).
pub use lxvirt_api::{
    BUS_NAME, DOMAIN_INTERFACE, DOMAIN_PATH_PREFIX, IMAGES_INTERFACE, INTROSPECTION_XML,
    ImageRecord, MANAGER_INTERFACE, MANAGER_PATH, NETWORK_INTERFACE, domain_path, network_path,
    proxy, uuid_from_path,
};
pub use manager::ManagerObject;
pub use network::NetworkObject;
use object_manager::{ObjectManager, Registry};

use crate::core::{
    CoreError, DomainSummary, Event, ImageStore, ManagerHandle, NetworkSummary, Seq,
};

/// State shared by every exported object.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub handle: ManagerHandle,
    pub authorizer: Authorizer,
    /// Sequence number of the last core event the adapter has published.
    pub published: watch::Receiver<Seq>,
    /// The objects the object manager lists.
    pub registry: Registry,
}

impl Shared {
    /// Waits until the adapter has published event `seq`, so that objects
    /// and signals a reply refers to exist before the client gets it.
    pub async fn published(&self, seq: Seq) {
        let mut rx = self.published.clone();
        // An error means the adapter ended: the daemon is going down.
        let _ = rx.wait_for(|s| *s >= seq).await;
    }

    /// A reading call or property: checks that the caller may read
    /// (`header` is `None` when the daemon reads its own properties).
    pub async fn may_read(
        &self,
        connection: &zbus::Connection,
        header: Option<&zbus::message::Header<'_>>,
    ) -> Result<(), Error> {
        self.authorizer.check_read(connection, header).await
    }

    /// A mutating call: checks the caller (`action` names what it may not
    /// do), runs `call` on the core, and answers once the events it caused
    /// are published.
    pub async fn mutate<T>(
        &self,
        connection: &zbus::Connection,
        header: &zbus::message::Header<'_>,
        action: &str,
        call: impl Future<Output = Result<(T, Seq), CoreError>>,
    ) -> Result<T, Error> {
        self.authorizer.check(connection, header, action).await?;
        let (value, seq) = call.await?;
        self.published(seq).await;
        Ok(value)
    }
}

/// What the manager object serves besides the core: the host's
/// capabilities and the daemon's `ShutdownAll` defaults.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    pub capabilities_xml: String,
    pub host_shutdown: crate::core::host_shutdown::HostShutdownPolicy,
}

/// The domains and networks the manager holds when the adapter starts.
#[derive(Debug, Default)]
pub struct Initial {
    pub domains: Vec<DomainSummary>,
    pub networks: Vec<NetworkSummary>,
}

/// The adapter at work: the task applying core events, and what the
/// private socket serves.
#[derive(Debug)]
pub struct Serving {
    pub adapter: tokio::task::JoinHandle<()>,
    served: private::Served,
}

impl Serving {
    /// Serves the manager on `listener` too (see [`private`]), until the
    /// returned task is aborted.
    pub fn serve_private(&self, listener: tokio::net::UnixListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(private::accept(listener, self.served.clone()))
    }
}

/// Exports the manager and the initial domains and networks on
/// `connection`, then applies core events until the event channel closes.
pub async fn serve(
    connection: &zbus::Connection,
    handle: ManagerHandle,
    authorizer: Authorizer,
    initial: Initial,
    settings: ManagerSettings,
    images: ImageStore,
    events: mpsc::UnboundedReceiver<Event>,
) -> zbus::Result<Serving> {
    let (published_tx, published) = watch::channel(0);
    let shared = Shared {
        handle,
        authorizer,
        published,
        registry: Registry::default(),
    };
    let server = connection.object_server();
    introspect::install(server, &shared.registry).await?;
    // Domains and networks first, then the ObjectManager: it announces
    // them all at once.
    for summary in initial.domains {
        export::<DomainObject>(server, &shared, summary).await?;
    }
    for summary in initial.networks {
        export::<NetworkObject>(server, &shared, summary).await?;
    }
    let served = private::Served {
        shared: shared.clone(),
        settings: settings.clone(),
        images: images.clone(),
    };
    server
        .at(MANAGER_PATH, ManagerObject::new(shared.clone(), settings))
        .await?;
    server
        .at(MANAGER_PATH, ImagesObject::new(shared.clone(), images))
        .await?;
    server
        .at(
            MANAGER_PATH,
            ObjectManager::new(shared.registry.clone(), shared.authorizer.clone()),
        )
        .await?;
    let adapter = events::Adapter::new(connection.clone(), shared, published_tx);
    Ok(Serving {
        adapter: tokio::spawn(adapter.run(events)),
        served,
    })
}

/// Exports an object for `summary` and lists it in the object manager
/// (listed first: see `Registry`).
pub(crate) async fn export<O: Exported>(
    server: &zbus::ObjectServer,
    shared: &Shared,
    summary: O::Summary,
) -> zbus::Result<()> {
    let path = O::path(O::uuid_of(&summary));
    let object = O::new(summary, shared.clone());
    shared
        .registry
        .insert(path.clone(), O::registered(object.shared_summary()));
    if let Err(error) = server.at(&path, object).await {
        shared.registry.remove(&path);
        return Err(error);
    }
    Ok(())
}
