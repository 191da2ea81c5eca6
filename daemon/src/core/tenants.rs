//! The running containers' pid namespaces, so that the D-Bus adapter can
//! tell a caller inside one of lxvirt's own containers (whatever its uid)
//! and apply the container's `<lxvirt:api>` setting.
//!
//! The manager task writes it as containers start and stop; callers'
//! checks read it. A pid namespace is the mark: a process cannot leave
//! its own, and everything it starts stays in it or below it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::domain::ApiAccess;

/// A running container, as a caller's check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub uuid: Uuid,
    pub name: String,
    pub access: ApiAccess,
}

/// Running containers by the inode number of their pid namespace.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_namespace: Arc<RwLock<HashMap<u64, Tenant>>>,
}

impl Tenants {
    /// Records the container whose init runs in pid namespace `namespace`.
    pub fn insert(&self, namespace: u64, tenant: Tenant) {
        self.write().insert(namespace, tenant);
    }

    /// Forgets `uuid`'s namespace (kept if another container has it now:
    /// the kernel reuses the numbers of namespaces that are gone).
    pub fn remove(&self, namespace: u64, uuid: Uuid) {
        let mut map = self.write();
        if map.get(&namespace).is_some_and(|t| t.uuid == uuid) {
            map.remove(&namespace);
        }
    }

    /// The container a process runs in, from its pid namespaces innermost
    /// first (a namespace nested in a container belongs to it).
    pub fn find(&self, namespaces: &[u64]) -> Option<Tenant> {
        let map = self.read();
        namespaces.iter().find_map(|ns| map.get(ns)).cloned()
    }

    /// No container runs.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while holding the lock left a plain map: still usable.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<u64, Tenant>> {
        self.by_namespace.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<u64, Tenant>> {
        self.by_namespace.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Tenant {
        Tenant {
            uuid: Uuid::new_v4(),
            name: name.to_owned(),
            access: ApiAccess::NoAccess,
        }
    }

    #[test]
    fn a_nested_namespace_belongs_to_its_container() {
        let tenants = Tenants::default();
        let web = tenant("web");
        tenants.insert(7, web.clone());
        assert_eq!(tenants.find(&[7]), Some(web.clone()));
        assert_eq!(
            tenants.find(&[99, 7]),
            Some(web.clone()),
            "nested below web"
        );
        assert_eq!(tenants.find(&[99]), None, "another runtime's container");
        assert_eq!(tenants.find(&[]), None, "the daemon's own namespace");
    }

    #[test]
    fn a_reused_number_is_not_forgotten_by_the_old_owner() {
        let tenants = Tenants::default();
        let (old, new) = (tenant("old"), tenant("new"));
        tenants.insert(7, old.clone());
        tenants.insert(7, new.clone());
        tenants.remove(7, old.uuid);
        assert_eq!(tenants.find(&[7]), Some(new.clone()));
        tenants.remove(7, new.uuid);
        assert!(tenants.is_empty());
    }
}
