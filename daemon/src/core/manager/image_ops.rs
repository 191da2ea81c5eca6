//! Image operations that need domain state: commit of a domain's
//! writable layer, removal of an image no domain uses.

use uuid::Uuid;

use super::{Internal, Manager, Reply};
use crate::core::lifecycle::Operation;
use crate::core::types::CoreError;
use crate::error_chain::error_chain;
use crate::security::userns;
use crate::storage::{CommitReport, IdShift, ImageId};

impl Manager {
    /// Commits a shut off or paused domain's writable layer as image
    /// `name`. The copy runs off this task; until it is done the domain
    /// cannot start, resume or be undefined (`committing`).
    pub(super) fn commit(&mut self, uuid: Uuid, name: String, reply: Reply<CommitReport>) {
        let store = match self.config.images.get() {
            Ok(store) => store,
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                return;
            }
        };
        let entry = match self
            .entry_mut(uuid)
            .and_then(|e| e.request(Operation::Commit).map(|()| e))
        {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let domain = entry.name().to_owned();
        // The host ids its writable layer holds files in: those of the
        // paused instance, or the block a stopped domain keeps.
        let shift = entry
            .live
            .as_ref()
            .and_then(|live| live.userns)
            .and_then(|u| u.allocated)
            .or_else(|| {
                self.id_ranges
                    .assigned(&uuid)
                    .map(|base| (base, userns::BLOCK))
            })
            .map(|(base, count)| IdShift { base, count });
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            let result = store.commit_from(&domain, &name, shift, &mut |_| {});
            match &result {
                Ok(report) => {
                    tracing::info!(domain = %domain, image = %report.id, name = %name, bytes = report.size, seconds = report.seconds, "committed")
                }
                Err(error) if error.is_refusal() => {
                    tracing::debug!(domain = %domain, name = %name, error = %error, "commit refused")
                }
                Err(error) => {
                    tracing::error!(domain = %domain, name = %name, error = %error_chain(error), "commit failed")
                }
            }
            let result = result.map_err(|source| CoreError::DomainStorage {
                action: format!("cannot commit its writable layer as image '{name}'"),
                domain: domain.clone(),
                source: Box::new(source),
            });
            let _ = internal.send(Internal::Committed {
                uuid,
                result,
                reply,
            });
        });
    }

    /// Removes an image, refused while a domain uses it: with a writable
    /// layer on it (the store knows those) or naming it as its root in a
    /// definition (this task knows those).
    pub(super) fn remove_image(&mut self, reference: String, reply: Reply<Vec<ImageId>>) {
        let store = match self.config.images.get() {
            Ok(store) => store,
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                return;
            }
        };
        let mut users: Vec<(String, String)> = Vec::new();
        for entry in self.domains.values() {
            for def in [Some(&entry.def), entry.live.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(image) = def.root_image() {
                    users.push((entry.name().to_owned(), image.to_owned()));
                }
            }
        }
        tokio::task::spawn_blocking(move || {
            let result = store.resolve(&reference).and_then(|id| {
                let mut also: Vec<String> = users
                    .into_iter()
                    .filter(|(_, image)| store.resolve(image).is_ok_and(|i| i == id))
                    .map(|(domain, _)| domain)
                    .collect();
                also.sort();
                also.dedup();
                store.remove(id.as_str(), &also)
            });
            if let Ok(removed) = &result {
                tracing::info!(image = %reference, removed = removed.len(), "removed an image");
            }
            let _ = reply.send(result.map_err(CoreError::from));
        });
    }
}
