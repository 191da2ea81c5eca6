//! What domain and network objects share: the summary an object serves,
//! kept current by the event adapter, and what the adapter needs to know
//! of each kind of object to export, update and remove it.

use std::future::Future;
use std::sync::{Arc, RwLock};

use uuid::Uuid;
use zbus::message::Header;
use zbus::object_server::{Interface, SignalEmitter};
use zbus::{Connection, OwnedObjectPath, Variant as Value};

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
    /// The properties that differ between two summaries of one object, by
    /// name, with their new values: one `PropertiesChanged` carries them.
    fn changed_properties(
        old: &Self::Summary,
        new: &Self::Summary,
    ) -> Vec<(&'static str, Value<'static>)>;
    /// Emits the object's `Lifecycle` signal.
    fn lifecycle<'a>(
        emitter: &'a SignalEmitter<'a>,
        event: &'a str,
        detail: &'a str,
    ) -> impl Future<Output = zbus::Result<()>> + Send + 'a;
}

/// The properties that differ between two summaries of one object, by
/// name, with their new values, collected one property at a time.
pub(crate) struct Changes<'s, S> {
    old: &'s S,
    new: &'s S,
    changed: Vec<(&'static str, Value<'static>)>,
}

impl<'s, S> Changes<'s, S> {
    pub(crate) fn new(old: &'s S, new: &'s S) -> Self {
        Changes {
            old,
            new,
            changed: Vec::new(),
        }
    }

    /// Property `name`, whose value `value` reads from a summary.
    pub(crate) fn property<T>(&mut self, name: &'static str, value: impl Fn(&S) -> T)
    where
        T: PartialEq + Into<Value<'static>>,
    {
        let new = value(self.new);
        if value(self.old) != new {
            self.changed.push((name, new.into()));
        }
    }

    pub(crate) fn into_vec(self) -> Vec<(&'static str, Value<'static>)> {
        self.changed
    }
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
