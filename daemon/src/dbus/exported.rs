//! What domain and network objects share: the summary an object serves,
//! kept current by the event adapter, and what the adapter needs to know
//! of each kind of object to export, update and remove it.

use std::future::Future;
use std::sync::{Arc, RwLock};

use uuid::Uuid;
use zbus::message::Header;
use zbus::object_server::{Interface, SignalEmitter};
use zbus::{Connection, OwnedObjectPath, Variant as Value};

use super::object_manager::Registered;
use super::{Error, Shared};
use crate::core::{CoreError, Seq};

/// The summary an object serves, shared with the event adapter. A plain
/// lock held only to copy or replace it: the adapter must never need the
/// object's own (async) lock for writing, which a method call in progress
/// holds for reading while it waits for the adapter.
#[derive(Debug)]
pub(crate) struct SharedSummary<S>(Arc<RwLock<S>>);

impl<S> Clone for SharedSummary<S> {
    fn clone(&self) -> Self {
        SharedSummary(Arc::clone(&self.0))
    }
}

impl<S: Clone> SharedSummary<S> {
    pub(crate) fn new(summary: S) -> Self {
        SharedSummary(Arc::new(RwLock::new(summary)))
    }

    /// A copy of the current summary.
    pub(crate) fn get(&self) -> S {
        // A poisoned lock still holds a complete summary (writers only
        // assign whole values or single fields).
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What `read` makes of the current summary, without copying it.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&S) -> T) -> T {
        match self.0.read() {
            Ok(guard) => read(&guard),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Changes the summary in place.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut S) -> T) -> T {
        match self.0.write() {
            Ok(mut guard) => change(&mut guard),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    /// Replaces the summary; returns the old one.
    pub(crate) fn replace(&self, summary: S) -> S {
        self.update(|current| std::mem::replace(current, summary))
    }
}

/// An object the adapter exports, one per domain or network.
pub(crate) trait Exported: Interface + Sized {
    type Summary: Clone + Send + Sync + 'static;
    /// Its D-Bus interface, for `PropertiesChanged`.
    const INTERFACE: &'static str;

    fn path(uuid: Uuid) -> OwnedObjectPath;
    fn uuid_of(summary: &Self::Summary) -> Uuid;
    fn new(summary: Self::Summary, shared: Shared) -> Self;
    fn shared_summary(&self) -> SharedSummary<Self::Summary>;
    /// The object as the object manager lists it.
    fn registered(summary: SharedSummary<Self::Summary>) -> Registered;
    /// Every property of the object, by name, with its value: the values
    /// its getters return, for `GetManagedObjects` and `PropertiesChanged`.
    fn properties(summary: &Self::Summary) -> Vec<(&'static str, Value<'_>)>;

    /// The properties that differ between two summaries of one object, by
    /// name, with their new values: one `PropertiesChanged` carries them.
    fn changed_properties(
        old: &Self::Summary,
        new: &Self::Summary,
    ) -> Vec<(&'static str, Value<'static>)> {
        Self::properties(new)
            .into_iter()
            .zip(Self::properties(old))
            .filter(|((_, new), (_, old))| new != old)
            // No property holds a descriptor, the one value that cannot be copied.
            .filter_map(|((name, new), _)| Some((name, Value::from(new.try_to_owned().ok()?))))
            .collect()
    }
    /// Emits the object's `Lifecycle` signal.
    fn lifecycle<'a>(
        emitter: &'a SignalEmitter<'a>,
        event: &'a str,
        detail: &'a str,
    ) -> impl Future<Output = zbus::Result<()>> + Send + 'a;
}

/// A property setter's call to the core: checks the caller (when the call
/// came over a bus), and runs `call`. The setter then updates its own copy
/// of the summary: zbus emits `PropertiesChanged` for a setter, and the
/// adapter, seeing no difference, stays quiet. (Waiting for the adapter
/// here would deadlock: it needs the object mutably.)
pub(crate) async fn set_property(
    shared: &Shared,
    connection: &Connection,
    header: Option<Header<'_>>,
    action: &str,
    call: impl Future<Output = Result<Seq, CoreError>>,
) -> zbus::fdo::Result<()> {
    if let Some(header) = &header {
        shared.authorizer.check(connection, header, action).await?;
    }
    call.await.map_err(Error::from)?;
    Ok(())
}
