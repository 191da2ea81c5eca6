//! Domains on images, through the real daemon, as root: a busybox-static
//! image, a domain defined on it, its writable layer kept across stops,
//! daemon crashes and undefine with the keep flag, removed otherwise; a
//! transient domain's layer gone when it stops; an unknown image and an
//! unusable backend as typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lxvirt_tests::{DaemonEnv, busybox_root, root_or_skip};
use lxvirtd::core::UndefineFlags;
use lxvirtd::dbus::proxy::DomainProxy;
use lxvirtd::storage::{Compression, ImportOptions, Overlay, Store, pack_dir};

/// A daemon on a private bus; its image store in `DIR/lib/storage`.
struct Env(DaemonEnv);

impl std::ops::Deref for Env {
    type Target = DaemonEnv;
    fn deref(&self) -> &DaemonEnv {
        &self.0
    }
}

impl Env {
    async fn new(extra: &[&str]) -> Env {
        Env(DaemonEnv::start(extra).await.unwrap())
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("lib/storage")
    }

    /// The writable layer directory of `domain`.
    fn layer(&self, domain: &str) -> PathBuf {
        self.store_dir().join("containers").join(domain)
    }

    /// Imports a busybox-static root as image `name` (through the store
    /// library, beside the daemon: the store's changes are renames).
    fn import_busybox(&self, name: &str) -> String {
        let root = self.dir.path().join(format!("src-{name}"));
        busybox_root(&root);
        let tarball = self.dir.path().join(format!("{name}.tar"));
        pack_dir(
            &root,
            Compression::None,
            &mut fs::File::create(&tarball).unwrap(),
        )
        .unwrap();
        let (store, _) = Store::open(&self.store_dir(), Box::new(Overlay::default())).unwrap();
        let report = store
            .import_tarball(
                &tarball,
                &ImportOptions {
                    name: Some(name.to_owned()),
                    ..ImportOptions::default()
                },
                &mut |_| {},
            )
            .unwrap();
        report.id.to_string()
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.store_dir().join("images").join(id).join("layer")
    }

    async fn define(&self, name: &str, image: &str) -> DomainProxy<'static> {
        let path = self
            .manager()
            .await
            .unwrap()
            .define_xml(&image_xml(name, image))
            .await
            .unwrap();
        self.domain(path).await.unwrap()
    }

    async fn enter(&self, domain: &DomainProxy<'_>, argv: &[&str]) -> (i32, String) {
        lxvirt_tests::enter_capture(domain, argv).await.unwrap()
    }
}

/// A container whose root is image `image`, idling as init.
fn image_xml(name: &str, image: &str) -> String {
    format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>64</memory>\
         <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg>\
         <initarg>while :; do sleep 1; done</initarg></os>\
         <devices><filesystem type='volume'><source pool='images' volume='{image}'/>\
         <target dir='/'/></filesystem><console type='pty'/></devices></domain>"
    )
}

fn error_of(error: &zbus::Error) -> (String, String) {
    match error {
        zbus::Error::MethodError(name, message, _) => {
            (name.to_string(), message.clone().unwrap_or_default())
        }
        other => (format!("other:{other}"), String::new()),
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[tokio::test]
async fn an_image_domain_keeps_its_writable_layer_until_undefined() {
    if !root_or_skip() {
        return;
    }
    let mut env = Env::new(&[]).await;
    let id = env.import_busybox("busybox");
    let web = env.define("web", "busybox").await;
    web.start().await.unwrap();
    let (code, _) = env
        .enter(&web, &["/bin/sh", "-c", "echo hello > /root/note"])
        .await;
    assert_eq!(code, 0);
    // The change is in the domain's layer, not in the image.
    assert!(env.layer("web").join("upper/root/note").is_file());
    assert!(!exists(&env.layer_dir(&id).join("root/note")));

    // Stop and start: the layer is the same.
    web.destroy().await.unwrap();
    web.start().await.unwrap();
    let (code, out) = env.enter(&web, &["/bin/cat", "/root/note"]).await;
    assert_eq!((code, out.as_str()), (0, "hello\n"));

    // A daemon crash: the container runs on, its layer stays.
    env.0.crash_and_restart().await.unwrap();
    let web = env
        .domain(
            env.manager()
                .await
                .unwrap()
                .lookup_by_name("web")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(web.state().await.unwrap(), "running");
    let (code, out) = env.enter(&web, &["/bin/cat", "/root/note"]).await;
    assert_eq!((code, out.as_str()), (0, "hello\n"));
    web.destroy().await.unwrap();

    // Undefine keeping the layer: defined again, the domain finds its files.
    web.undefine(UndefineFlags::KEEP_WRITABLE_LAYER)
        .await
        .unwrap();
    assert!(env.layer("web").join("upper/root/note").is_file());
    let web = env.define("web", "busybox").await;
    web.start().await.unwrap();
    let (_, out) = env.enter(&web, &["/bin/cat", "/root/note"]).await;
    assert_eq!(out, "hello\n");
    web.destroy().await.unwrap();

    // Unknown flags are refused; a plain undefine removes the layer.
    let err = web.undefine(1).await.unwrap_err();
    assert_eq!(
        error_of(&err).0,
        "org.lxvirt.lxvirt1.Error.InvalidArgument",
        "{err}"
    );
    web.undefine(0).await.unwrap();
    let layer = env.layer("web");
    eventually("the writable layer to go", || !exists(&layer)).await;
    assert!(env.layer_dir(&id).join("bin/busybox").is_file());
}

#[tokio::test]
async fn a_transient_image_domain_loses_its_layer_when_it_stops() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new(&[]).await;
    env.import_busybox("busybox");
    let path = env
        .manager()
        .await
        .unwrap()
        .create_xml(&image_xml("temp", "busybox"))
        .await
        .unwrap();
    let temp = env.domain(path).await.unwrap();
    let (code, _) = env.enter(&temp, &["/bin/touch", "/scratch/x"]).await;
    assert_eq!(code, 0);
    assert!(env.layer("temp").join("upper/scratch/x").exists());
    temp.destroy().await.unwrap();
    let layer = env.layer("temp");
    eventually("the transient layer to go", || !exists(&layer)).await;
}

#[tokio::test]
async fn an_unknown_image_is_accepted_at_define_and_refused_at_start() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new(&[]).await;
    let ghost = env.define("ghost", "no-such-image").await;
    let err = ghost.start().await.unwrap_err();
    let (name, message) = error_of(&err);
    assert_eq!(name, "org.lxvirt.lxvirt1.Error.NoSuchImage", "{message}");
    for needle in ["'ghost'", "'no-such-image'", "lxvirt image list"] {
        assert!(message.contains(needle), "{message:?} lacks {needle}");
    }
    assert_eq!(ghost.state().await.unwrap(), "shutoff");
    assert!(!exists(&env.layer("ghost")));
}

#[tokio::test]
async fn an_unusable_backend_fails_image_domains_only() {
    if !root_or_skip() {
        return;
    }
    // This host has no device-mapper (docs/images.md); in a VM with it the
    // thin backend may work, and this test has nothing to show.
    let env = Env::new(&["--storage-backend=devicemapper"]).await;
    let caps = env
        .manager()
        .await
        .unwrap()
        .get_capabilities()
        .await
        .unwrap();
    if caps.contains("<storage backend='devicemapper' available='yes'") {
        println!("skipped: the devicemapper backend works on this host");
        return;
    }
    assert!(
        caps.contains("<storage backend='devicemapper' available='no' reason='"),
        "{caps}"
    );
    assert!(
        caps.contains("<backend name='overlay' available='yes'/>"),
        "{caps}"
    );
    let web = env.define("web", "busybox").await;
    let err = web.start().await.unwrap_err();
    let (name, message) = error_of(&err);
    assert_eq!(
        name, "org.lxvirt.lxvirt1.Error.StorageUnavailable",
        "{message}"
    );
    assert!(message.contains("'devicemapper'"), "{message}");
    assert!(message.contains("--storage-backend"), "{message}");
}
