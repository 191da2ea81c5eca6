//! `org.lxvirt.lxvirt1.Images`, on the manager's object.
//!
//! On `/org/lxvirt/lxvirt1` beside `Manager` rather than on an object of
//! its own: the image store is one per daemon, as the manager is, and an
//! object below the ObjectManager would be listed among the domains to
//! every client enumerating them.
//!
//! The store's work (unpacking, copying, packing) runs on blocking threads
//! (`spawn_blocking`), never on the D-Bus executor or the manager task, and
//! holds no lock the rest of the daemon needs. Remove and Commit go to the
//! manager, which knows the domains that use an image and the lifecycle.
//! Long operations report `Progress` signals, tagged with the client's
//! `token` option, before they reply.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use lxvirt_api::ImageRecord;
use tokio::sync::mpsc;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};
use zbus::{OwnedFd as DbusFd, OwnedVariant as OwnedValue};

use super::error::storage_while;
use super::options::Options;
use super::{MANAGER_PATH, Shared, error::Error};
use crate::core::ImageStore;
use crate::storage::{
    Compression, DevicePolicy, ExportOptions, ImageInfo, ImportOptions, OciImportOptions, Phase,
    Progress, Source, StorageError, Store,
};

impl From<ImageInfo> for ImageRecord {
    fn from(info: ImageInfo) -> Self {
        let ids = |v: Vec<crate::storage::ImageId>| v.into_iter().map(|i| i.to_string()).collect();
        ImageRecord {
            id: info.id.to_string(),
            names: info.names,
            parent: info.parent.map(|p| p.to_string()).unwrap_or_default(),
            chain: ids(info.chain),
            created: info.created,
            size: info.size,
            total_size: info.total_size,
            children: ids(info.children),
            domains: info.domains,
            source: match info.source {
                Source::Tarball { path } => format!("tarball:{}", path.display()),
                Source::Oci { layout, .. } => format!("oci:{}", layout.display()),
                Source::Commit { domain } => format!("commit:{domain}"),
            },
        }
    }
}

/// The images interface.
#[derive(Debug)]
pub struct ImagesObject {
    shared: Shared,
    images: ImageStore,
}

impl ImagesObject {
    pub(crate) fn new(shared: Shared, images: ImageStore) -> Self {
        ImagesObject { shared, images }
    }

    /// The store, for a caller allowed to `action` (admins).
    async fn admin(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &str,
    ) -> Result<std::sync::Arc<Store>, Error> {
        self.shared
            .authorizer
            .check(connection, header, action)
            .await?;
        self.store()
    }

    fn store(&self) -> Result<std::sync::Arc<Store>, Error> {
        self.images
            .get()
            .map_err(|why| Error::StorageUnavailable(why.to_string()))
    }

    /// Runs `work` on a blocking thread with a progress callback whose
    /// reports become `Progress` signals with `token`; they are all sent
    /// before this returns.
    async fn run<T: Send + 'static>(
        connection: &Connection,
        token: String,
        what: String,
        work: impl FnOnce(&mut dyn FnMut(Progress)) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
        let job = tokio::task::spawn_blocking(move || {
            work(&mut |progress| {
                let _ = tx.send(progress);
            })
        });
        let emitter = SignalEmitter::new(connection, MANAGER_PATH)?;
        while let Some(progress) = rx.recv().await {
            // A client gone or a full bus queue must not fail the import.
            let _ = ImagesObject::progress(
                &emitter,
                &token,
                &phase_name(progress.phase),
                progress.done,
                progress.total,
            )
            .await;
        }
        job.await
            .map_err(|e| Error::Failed(format!("{what}: the image job failed: {e}")))?
            .map_err(|e| storage_while(&what, &e))
    }

    /// Runs quick store work (metadata) on a blocking thread.
    async fn blocking<T: Send + 'static>(
        work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Failed(format!("the image job failed: {e}")))?
            .map_err(Error::from)
    }
}

fn phase_name(phase: Phase) -> String {
    match phase {
        Phase::Verify => "verify".to_owned(),
        Phase::Unpack { layer, layers } => format!("unpack {layer}/{layers}"),
        Phase::Copy => "copy".to_owned(),
        Phase::Export => "export".to_owned(),
    }
}

fn compression(name: Option<&str>) -> Result<Compression, Error> {
    match name {
        None | Some("none") => Ok(Compression::None),
        Some("gzip") => Ok(Compression::Gzip),
        Some("zstd") => Ok(Compression::Zstd),
        Some(other) => Err(Error::InvalidArgument(format!(
            "compression '{other}' is not known; use none, gzip or zstd"
        ))),
    }
}

#[interface(name = "org.lxvirt.lxvirt1.Images")]
impl ImagesObject {
    /// Imports a root-filesystem tarball (plain, gzip or zstd) read from
    /// `tarball` (a file or a pipe). Options: `name` (s), `parent` (s: the
    /// image it is a layer of), `source` (s: recorded as where it came
    /// from), `token` (s: tags the Progress signals). Returns the image id.
    async fn import_tarball(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        tarball: DbusFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, Error> {
        let store = self.admin(connection, &header, "import images").await?;
        let options = Options::new(options, &["name", "parent", "source", "token"])?;
        let import = ImportOptions {
            name: options.string("name")?,
            parent: options.string("parent")?,
            devices: DevicePolicy::Refuse,
        };
        let source = PathBuf::from(
            options
                .string("source")?
                .unwrap_or_else(|| "(descriptor)".into()),
        );
        let what = match &import.name {
            Some(name) => format!("cannot import image '{name}'"),
            None => "cannot import the tarball".to_owned(),
        };
        let file = File::from(std::os::fd::OwnedFd::from(tarball));
        let report = Self::run(connection, options.token()?, what, move |progress| {
            store.import_tarball_file(file, &source, &import, progress)
        })
        .await?;
        Ok(report.id.to_string())
    }

    /// Imports an OCI image layout directory (a path on the daemon's
    /// host). Options: `reference` (s: the manifest's ref.name annotation,
    /// needed when the index has several), `name` (s), `token` (s).
    /// Returns the top image's id.
    #[zbus(name = "ImportOCI")]
    async fn import_oci(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        layout: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, Error> {
        let store = self.admin(connection, &header, "import images").await?;
        let options = Options::new(options, &["reference", "name", "token"])?;
        let import = OciImportOptions {
            reference: options.string("reference")?,
            name: options.string("name")?,
            devices: DevicePolicy::Refuse,
        };
        let what = match &import.name {
            Some(name) => format!("cannot import the OCI layout {layout} as image '{name}'"),
            None => format!("cannot import the OCI layout {layout}"),
        };
        let layout = PathBuf::from(layout);
        let report = Self::run(connection, options.token()?, what, move |progress| {
            store.import_oci(&layout, &import, progress)
        })
        .await?;
        Ok(report.id.to_string())
    }

    /// Every image, sorted by id.
    async fn list_images(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<ImageRecord>, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let store = self.store()?;
        let infos = Self::blocking(move || store.list()).await?;
        Ok(infos.into_iter().map(ImageRecord::from).collect())
    }

    /// One image, by name, id or unique id prefix.
    async fn inspect(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        reference: String,
    ) -> Result<ImageRecord, Error> {
        self.shared.may_read(connection, Some(&header)).await?;
        let store = self.store()?;
        Self::blocking(move || store.inspect(&reference))
            .await
            .map(ImageRecord::from)
    }

    /// Removes an image; refused (`ImageInUse`, naming them) while a
    /// domain uses it (running, stopped with a writable layer, or defined
    /// with it as its root) or a child image stacks on it. Its unnamed
    /// ancestors go too. Returns the ids removed.
    async fn remove(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        reference: String,
    ) -> Result<Vec<String>, Error> {
        self.shared
            .authorizer
            .check(connection, &header, "remove images")
            .await?;
        let removed = self.shared.handle.remove_image(reference).await?;
        Ok(removed.into_iter().map(|id| id.to_string()).collect())
    }

    /// Names an image `name` (idempotent; refused when it names another).
    async fn tag(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        reference: String,
        name: String,
    ) -> Result<String, Error> {
        let store = self.admin(connection, &header, "tag images").await?;
        let id = Self::blocking(move || store.tag(&reference, &name)).await?;
        Ok(id.to_string())
    }

    /// Removes the name `name`; returns the id of the image it named.
    async fn untag(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        name: String,
    ) -> Result<String, Error> {
        let store = self.admin(connection, &header, "untag images").await?;
        let id = Self::blocking(move || store.untag(&name)).await?;
        Ok(id.to_string())
    }

    /// Writes an image as a tarball to `out`: the merged tree of its chain
    /// (imports as a platform image), or with `layer_only` (b) its own
    /// layer with whiteouts as `.wh.` entries. Options: `layer_only`,
    /// `compression` (s: none, gzip, zstd), `token`. Returns the bytes of
    /// the uncompressed tar stream.
    async fn export(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        reference: String,
        out: DbusFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<u64, Error> {
        // Reading an image is not a change, but an export can write
        // gigabytes through the daemon: admins only, like imports.
        let store = self.admin(connection, &header, "export images").await?;
        let options = Options::new(options, &["layer_only", "compression", "token"])?;
        let export = ExportOptions {
            layer_only: options.boolean("layer_only")?,
            compression: compression(options.string("compression")?.as_deref())?,
        };
        let what = format!("cannot export image '{reference}'");
        let mut file = File::from(std::os::fd::OwnedFd::from(out));
        let stats = Self::run(connection, options.token()?, what, move |progress| {
            store.export(&reference, export, &mut file, progress)
        })
        .await?;
        Ok(stats.tar_bytes)
    }

    /// Progress of a long operation: the caller's `token`, the phase
    /// (`verify`, `unpack N/M`, `export`), bytes done and the total (0
    /// when unknown, as for a pipe).
    #[zbus(signal)]
    pub(crate) async fn progress(
        emitter: &SignalEmitter<'_>,
        token: &str,
        phase: &str,
        done: u64,
        total: u64,
    ) -> zbus::Result<()>;
}
