//! Images and domains on them, through the real daemon, as root: a
//! busybox-static tarball and an OCI layout imported over D-Bus (with
//! progress signals), a domain defined on an image, its writable layer kept
//! across stops, daemon crashes and undefine with the keep flag, removed
//! otherwise; commit into a new image that a second domain starts from;
//! removal refused while a domain or a child uses an image; a transient
//! domain's layer gone when it stops; an unknown image and an unusable
//! backend as typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lxvirt_tests::{DaemonEnv, busybox_root, oci_fixture, root_or_skip};
use lxvirtd::core::UndefineFlags;
use lxvirtd::dbus::proxy::{DomainProxy, ImagesProxy};
use lxvirtd::storage::{Compression, pack_dir};
use zbus::Variant as Value;

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

    /// A busybox-static root packed as a tarball, with `extra_mib` MiB of
    /// incompressible data in /data/blob.
    fn busybox_tarball(&self, name: &str, extra_mib: usize) -> PathBuf {
        let root = self.dir.path().join(format!("src-{name}"));
        busybox_root(&root);
        if extra_mib > 0 {
            let data = lxvirt_tests::incompressible_bytes(extra_mib << 20, 0x2545_f491_4f6c_dd1d);
            fs::write(root.join("data/blob"), data).unwrap();
        }
        let tarball = self.dir.path().join(format!("{name}.tar"));
        pack_dir(
            &root,
            Compression::None,
            &mut fs::File::create(&tarball).unwrap(),
        )
        .unwrap();
        tarball
    }

    async fn images(&self) -> ImagesProxy<'static> {
        ImagesProxy::new(&self.connection).await.unwrap()
    }

    /// Imports a busybox-static root as image `name` over D-Bus.
    async fn import_busybox(&self, name: &str) -> String {
        let tarball = self.busybox_tarball(name, 0);
        let file = fs::File::open(&tarball).unwrap();
        self.images()
            .await
            .import_tarball(
                zbus::Fd::from(&file),
                HashMap::from([("name", Value::from(name))]),
            )
            .await
            .unwrap()
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
    let id = env.import_busybox("busybox").await;
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
    env.import_busybox("busybox").await;
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

#[tokio::test]
async fn commit_makes_an_image_a_second_domain_starts_from() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new(&[]).await;
    let base = env.import_busybox("busybox").await;
    let web = env.define("web", "busybox").await;
    let images = env.images().await;

    // Nothing to commit before the first start; not while running.
    let err = web.commit("too-early", 0).await.unwrap_err();
    assert_eq!(error_of(&err).0, "org.lxvirt.lxvirt1.Error.InvalidState");
    web.start().await.unwrap();
    let (code, _) = env
        .enter(
            &web,
            &[
                "/bin/sh",
                "-c",
                "echo committed > /etc/motd && /bin/busybox rm /bin/hostname",
            ],
        )
        .await;
    assert_eq!(code, 0);
    let err = web.commit("web-v1", 0).await.unwrap_err();
    let (name, message) = error_of(&err);
    assert_eq!(name, "org.lxvirt.lxvirt1.Error.InvalidState", "{message}");
    assert!(message.contains("suspend or stop it first"), "{message}");

    // Paused: allowed, and the domain resumes afterwards.
    web.suspend().await.unwrap();
    let paused_id = web.commit("web-paused", 0).await.unwrap();
    web.resume().await.unwrap();
    web.destroy().await.unwrap();
    let id = web.commit("web-v1", 0).await.unwrap();
    assert_ne!(id, paused_id);
    let info = images.inspect("web-v1").await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.parent.as_str()),
        (id.as_str(), base.as_str())
    );
    assert_eq!(info.source, "commit:web");
    let err = web.commit("web-v2", 1).await.unwrap_err();
    assert_eq!(error_of(&err).0, "org.lxvirt.lxvirt1.Error.InvalidArgument");

    // A second domain on the new image sees the change; the base does not.
    let api = env.define("api", "web-v1").await;
    api.start().await.unwrap();
    let (_, motd) = env.enter(&api, &["/bin/cat", "/etc/motd"]).await;
    assert_eq!(motd, "committed\n");
    let (code, _) = env.enter(&api, &["/bin/ls", "/bin/hostname"]).await;
    assert_ne!(code, 0, "the deletion carried over");
    assert!(!env.layer_dir(&base).join("etc/motd").exists());
    assert!(
        env.layer_dir(&base)
            .join("bin/hostname")
            .symlink_metadata()
            .is_ok()
    );
    let plain = env.define("plain", "busybox").await;
    plain.start().await.unwrap();
    let (code, _) = env.enter(&plain, &["/bin/cat", "/etc/motd"]).await;
    assert_ne!(code, 0);
    plain.destroy().await.unwrap();

    // Removal is refused while used: by a running domain (api on web-v1),
    // by a child image (web-v1 on busybox), by a defined-only domain.
    let err = images.remove("web-v1").await.unwrap_err();
    let (name, message) = error_of(&err);
    assert_eq!(name, "org.lxvirt.lxvirt1.Error.ImageInUse", "{message}");
    assert!(message.contains("api"), "{message}");
    let err = images.remove("busybox").await.unwrap_err();
    assert_eq!(error_of(&err).0, "org.lxvirt.lxvirt1.Error.ImageInUse");
    let idle = env.define("idle", "web-paused").await;
    let err = images.remove("web-paused").await.unwrap_err();
    let (name, message) = error_of(&err);
    assert_eq!(name, "org.lxvirt.lxvirt1.Error.ImageInUse", "{message}");
    assert!(message.contains("idle"), "{message}");
    idle.undefine(0).await.unwrap();
    let removed = images.remove("web-paused").await.unwrap();
    assert_eq!(removed, vec![paused_id.clone()]);
    let err = images.inspect(&paused_id).await.unwrap_err();
    assert_eq!(error_of(&err).0, "org.lxvirt.lxvirt1.Error.NoSuchImage");

    // Tags and the typed list.
    assert_eq!(images.tag("web-v1", "web-latest").await.unwrap(), id);
    let err = images.tag("busybox", "web-latest").await.unwrap_err();
    assert_eq!(error_of(&err).0, "org.lxvirt.lxvirt1.Error.AlreadyExists");
    let list = images.list_images().await.unwrap();
    let v1 = list.iter().find(|i| i.id == id).unwrap();
    assert_eq!(v1.names, vec!["web-latest".to_owned(), "web-v1".to_owned()]);
    assert_eq!(v1.domains, vec!["api".to_owned()]);
    assert_eq!(v1.chain, vec![id.clone(), base.clone()]);
    assert_eq!(images.untag("web-latest").await.unwrap(), id);
}

#[tokio::test]
async fn a_large_import_reports_progress_and_exports_round_trip() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new(&[]).await;
    let images = env.images().await;
    let tarball = env.busybox_tarball("big", 24);
    let mut progress = images.receive_progress().await.unwrap();
    let file = fs::File::open(&tarball).unwrap();
    let id = images
        .import_tarball(
            zbus::Fd::from(&file),
            HashMap::from([
                ("name", Value::from("big")),
                ("token", Value::from("t-42")),
                ("source", Value::from(tarball.to_str().unwrap())),
            ]),
        )
        .await
        .unwrap();
    let total = fs::metadata(&tarball).unwrap().len();
    let mut seen = Vec::new();
    while let Ok(Some(signal)) = tokio::time::timeout(Duration::from_secs(5), progress.next()).await
    {
        let args = signal.args().unwrap();
        assert_eq!(*args.token(), "t-42");
        assert_eq!(*args.phase(), "unpack 1/1");
        assert_eq!(*args.total(), total);
        seen.push(*args.done());
        if *args.done() == total {
            break;
        }
    }
    assert!(seen.len() >= 2, "progress steps: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&total));
    let info = images.inspect("big").await.unwrap();
    assert_eq!(info.source, format!("tarball:{}", tarball.display()));

    // Export (gzip) and import again: the same content is the same image.
    let exported = env.dir.path().join("big-export.tar.gz");
    let out = fs::File::create(&exported).unwrap();
    images
        .export(
            "big",
            zbus::Fd::from(&out),
            HashMap::from([("compression", Value::from("gzip"))]),
        )
        .await
        .unwrap();
    drop(out);
    images.untag("big").await.unwrap();
    let file = fs::File::open(&exported).unwrap();
    let again = images
        .import_tarball(zbus::Fd::from(&file), HashMap::new())
        .await
        .unwrap();
    assert_eq!(again, id);
    let err = images
        .import_tarball(
            zbus::Fd::from(&file),
            HashMap::from([("colour", Value::from("red"))]),
        )
        .await
        .unwrap_err();
    assert_eq!(error_of(&err).0, "org.lxvirt.lxvirt1.Error.InvalidArgument");
}

#[tokio::test]
async fn an_oci_layout_imports_and_starts() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new(&[]).await;
    let images = env.images().await;
    let layout = oci_fixture(env.dir.path());
    let err = images
        .import_oci(layout.to_str().unwrap(), HashMap::new())
        .await
        .unwrap_err();
    let (name, message) = error_of(&err);
    assert_eq!(
        name, "org.lxvirt.lxvirt1.Error.InvalidArgument",
        "{message}"
    );
    assert!(message.contains("1.0"), "{message}");
    let id = images
        .import_oci(
            layout.to_str().unwrap(),
            HashMap::from([
                ("reference", Value::from("1.0")),
                ("name", Value::from("app")),
            ]),
        )
        .await
        .unwrap();
    let info = images.inspect("app").await.unwrap();
    assert_eq!((info.id, info.chain.len()), (id, 2));
    let app = env.define("app", "app").await;
    app.start().await.unwrap();
    let (_, out) = env
        .enter(
            &app,
            &["/bin/sh", "-c", "cat /etc/motd; ls /opt/dir; ls /etc/gone"],
        )
        .await;
    assert_eq!(out, "welcome\nupper\n");
}

/// Runs `lxvirt ARGS` with `stdin` (a file) against the env's daemon.
fn cli(env: &Env, args: &[&str], stdin: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new(lxvirt_tests::binary("lxvirt"));
    command
        .arg(format!("--connect={}", env.daemon.bus_address))
        .args(args);
    command.stdin(match stdin {
        Some(path) => std::process::Stdio::from(fs::File::open(path).unwrap()),
        None => std::process::Stdio::null(),
    });
    command.output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_cli_manages_images_and_commits() {
    if !root_or_skip() {
        return;
    }
    let env = Env::new(&[]).await;
    let big = env.busybox_tarball("big", 12);
    let big = big.to_str().unwrap();

    // A file, with progress lines on a stderr that is not a terminal.
    let out = cli(&env, &["image", "import", big, "--name", "busybox"], None);
    let stdout = ok(&out);
    assert!(stdout.starts_with("Image 'busybox' imported: "), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unpack 1/1: 100% ("), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr}");
    // stdin, as JSON: the same content is the same image.
    let json: serde_json::Value = serde_json::from_str(&ok(&cli(
        &env,
        &["-o", "json", "image", "import", "-", "--name", "again"],
        Some(Path::new(big)),
    )))
    .unwrap();
    let id = json["id"].as_str().unwrap().to_owned();

    let list = ok(&cli(&env, &["image", "list"], None));
    assert!(list.starts_with(" ID "), "{list}");
    assert!(list.contains("again,busybox"), "{list}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&cli(&env, &["-o", "json", "image", "list"], None))).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["names"], serde_json::json!(["again", "busybox"]));
    let inspect = ok(&cli(&env, &["image", "inspect", &id[..12]], None));
    assert!(
        inspect.contains(&format!("Source:     tarball:{big}")),
        "{inspect}"
    );
    ok(&cli(&env, &["image", "untag", "again"], None));
    ok(&cli(&env, &["image", "tag", "busybox", "bb"], None));

    // Export, layer only, zstd: imports as the same layer.
    let exported = env.dir.path().join("bb.tar.zst");
    let exported = exported.to_str().unwrap();
    ok(&cli(
        &env,
        &[
            "image",
            "export",
            "bb",
            exported,
            "--layer-only",
            "--compression",
            "zstd",
        ],
        None,
    ));
    let again = ok(&cli(&env, &["image", "import", exported], None));
    assert!(again.ends_with(&format!("{id}\n")), "{again}");

    // A domain on it, committed by the CLI; the exit codes of misuse.
    let web = env.define("web", "bb").await;
    web.start().await.unwrap();
    let out = cli(&env, &["commit", "web", "web-v1"], None);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    web.destroy().await.unwrap();
    let committed = ok(&cli(&env, &["commit", "web", "web-v1"], None));
    assert!(
        committed.starts_with("Domain 'web' committed as image 'web-v1': "),
        "{committed}"
    );
    let out = cli(&env, &["image", "rm", "bb"], None);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("web"));
    let out = cli(&env, &["image", "inspect", "nothing-here"], None);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    web.undefine(0).await.unwrap();
    let removed = ok(&cli(&env, &["image", "rm", "web-v1"], None));
    assert!(removed.starts_with("Removed image "), "{removed}");
}
