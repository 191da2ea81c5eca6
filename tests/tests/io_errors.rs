//! I/O errors under the configuration and state directories: the device
//! they are on (device-mapper over a loop file, ext4) switched to the
//! `error` target under a running daemon. A define, a redefine, an
//! undefine, an import and a commit fail naming what failed and why; the
//! daemon keeps serving (lists, reads, a running container stopped and
//! started again); once the device is healthy again (fsck, mount, a new
//! daemon) every answered definition is whole, nothing refused is half
//! there, the image store is consistent and the domains start.
//!
//! Needs root and device-mapper, which the development host's kernel
//! lacks: it runs in the nested VM (`tests/vm/guest/faults-suite`, with
//! `LXVIRT_DM_TESTS=1`, where a skip is a failure) and skips elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use lxvirt_tests::{DaemonEnv, TestDaemon, busybox_root_and_tarball, root_or_skip, sleeper_xml};
use lxvirtd::dbus::proxy::ImagesProxy;
use zbus::Variant as Value;

/// `GetXML`'s flag for the persistent definition (a running domain's live
/// XML has its labels and id block besides).
const INACTIVE: u32 = 2;

/// Whether the test runs: with `LXVIRT_DM_TESTS=1` it must.
fn dm_tests() -> bool {
    if std::env::var_os("LXVIRT_DM_TESTS").is_some_and(|v| v == "1") {
        return true;
    }
    println!(
        "skipped: I/O errors are injected with device-mapper, in the nested VM \
         (tests/vm/run tests/vm/guest/faults-suite) with LXVIRT_DM_TESTS=1"
    );
    false
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An ext4 file system on a device-mapper device over a loop file, whose
/// table can be switched between the loop device and the `error` target.
struct FlakyDisk {
    name: String,
    loop_device: String,
    sectors: u64,
    mount: PathBuf,
    binds: Vec<PathBuf>,
}

impl FlakyDisk {
    fn new(image: &Path, mount: &Path) -> FlakyDisk {
        let bytes: u64 = 256 << 20;
        fs::File::create(image).unwrap().set_len(bytes).unwrap();
        let loop_device = run("losetup", &["-f", "--show", image.to_str().unwrap()]);
        let name = format!("lxvirt-eio-{}", std::process::id());
        let disk = FlakyDisk {
            name,
            loop_device,
            sectors: bytes / 512,
            mount: mount.to_owned(),
            binds: Vec::new(),
        };
        run(
            "dmsetup",
            &["create", &disk.name, "--table", &disk.healthy_table()],
        );
        run("mkfs.ext4", &["-q", "-F", &disk.device()]);
        disk.mount_fs();
        disk
    }

    fn device(&self) -> String {
        format!("/dev/mapper/{}", self.name)
    }

    fn healthy_table(&self) -> String {
        format!("0 {} linear {} 0", self.sectors, self.loop_device)
    }

    fn mount_fs(&self) {
        fs::create_dir_all(&self.mount).unwrap();
        run("mount", &[&self.device(), self.mount.to_str().unwrap()]);
    }

    /// Bind-mounts `sub` of the file system on `target`.
    fn bind(&mut self, sub: &str, target: &Path) {
        let source = self.mount.join(sub);
        fs::create_dir_all(&source).unwrap();
        fs::create_dir_all(target).unwrap();
        run(
            "mount",
            &["--bind", source.to_str().unwrap(), target.to_str().unwrap()],
        );
        self.binds.push(target.to_owned());
    }

    fn load(&self, table: &str) {
        run("dmsetup", &["suspend", "--nolockfs", &self.name]);
        run("dmsetup", &["load", &self.name, "--table", table]);
        run("dmsetup", &["resume", &self.name]);
    }

    /// Every read and write of the device fails with EIO from now on.
    fn fail(&self) {
        self.load(&format!("0 {} error", self.sectors));
    }

    /// The device works again; the file system, which saw the errors, is
    /// unmounted, checked and repaired (`e2fsck -fy`) and mounted again,
    /// with its bind mounts.
    fn heal(&self) {
        for bind in self.binds.iter().rev() {
            let _ = nix::mount::umount2(bind, nix::mount::MntFlags::MNT_DETACH);
        }
        nix::mount::umount(&self.mount).expect("the failed file system unmounts");
        self.load(&self.healthy_table());
        // 0: clean, 1: errors corrected; anything else is not usable.
        let status = Command::new("e2fsck")
            .args(["-fy", &self.device()])
            .output()
            .unwrap();
        let code = status.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 1,
            "e2fsck: {code}: {}",
            String::from_utf8_lossy(&status.stdout)
        );
        println!("e2fsck after the errors: exit {code}");
        self.mount_fs();
        for bind in &self.binds {
            let sub = bind.file_name().unwrap().to_str().unwrap();
            run(
                "mount",
                &[
                    "--bind",
                    self.mount.join(sub).to_str().unwrap(),
                    bind.to_str().unwrap(),
                ],
            );
        }
    }
}

impl Drop for FlakyDisk {
    fn drop(&mut self) {
        for bind in self.binds.iter().rev() {
            let _ = nix::mount::umount2(bind, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        let _ = Command::new("dmsetup")
            .args(["remove", "--retry", &self.name])
            .env("DM_DISABLE_UDEV", "1")
            .status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_device])
            .status();
    }
}

/// The error a user reads names `what` and says the device failed.
fn assert_io_error(error: &str, what: &str) {
    println!("refused on a failing disk: {error}");
    assert!(error.contains(what), "the error names {what}: {error}");
    let lower = error.to_lowercase();
    assert!(
        lower.contains("input/output error") || lower.contains("read-only file system"),
        "the error says the device failed: {error}"
    );
}

#[tokio::test]
async fn io_errors_fail_changes_cleanly_and_the_daemon_keeps_serving() {
    if !root_or_skip() || !dm_tests() {
        return;
    }
    let dir = lxvirt_tests::shared_tempdir().unwrap();
    let (rootfs, tarball) = busybox_root_and_tarball(dir.path());
    let mut disk = FlakyDisk::new(&dir.path().join("disk.img"), &dir.path().join("disk"));
    disk.bind("etc", &dir.path().join("etc"));
    disk.bind("lib", &dir.path().join("lib"));
    let mut env = DaemonEnv::start_in(dir, &[]).await.unwrap();
    let manager = env.manager().await.unwrap();
    let images = ImagesProxy::new(&env.connection).await.unwrap();
    let import = |name: &'static str| {
        let images = images.clone();
        let file = fs::File::open(&tarball).unwrap();
        async move {
            images
                .import_tarball(
                    zbus::Fd::from(&file),
                    HashMap::from([("name", Value::from(name))]),
                )
                .await
        }
    };
    import("eio-base").await.unwrap();
    let running = env
        .domain(
            manager
                .define_xml(&sleeper_xml("eio-running", &rootfs))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    running.start().await.unwrap();
    let from_image = env
        .domain(
            manager
                .define_xml(
                    "<domain type='lxc'><name>eio-image</name><memory unit='MiB'>32</memory>\
                     <os><type>exe</type><init>/bin/sleep</init><initarg>100000</initarg></os>\
                     <devices><filesystem type='volume'><source pool='images' volume='eio-base'/>\
                     <target dir='/'/></filesystem><console type='pty'/></devices></domain>",
                )
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    from_image.start().await.unwrap();
    from_image.destroy().await.unwrap();
    let running_xml = running.get_xml(INACTIVE).await.unwrap();
    let image_xml = from_image.get_xml(INACTIVE).await.unwrap();
    nix::unistd::sync();

    disk.fail();
    let error = manager
        .define_xml(&sleeper_xml("eio-new", &rootfs))
        .await
        .unwrap_err()
        .to_string();
    assert_io_error(&error, "eio-new");
    let changed = running_xml.replacen("</uuid>", "</uuid><description>changed</description>", 1);
    let error = manager.define_xml(&changed).await.unwrap_err().to_string();
    assert_io_error(&error, "eio-running");
    assert_eq!(running.get_xml(INACTIVE).await.unwrap(), running_xml);
    let error = import("eio-import").await.unwrap_err().to_string();
    assert_io_error(&error, "eio-import");
    let error = from_image
        .commit("eio-commit", 0)
        .await
        .unwrap_err()
        .to_string();
    assert_io_error(&error, "eio-image");
    let undefine = from_image.undefine(0).await;
    println!("an undefine on a failing disk: {undefine:?}");
    let undefined = match &undefine {
        Ok(()) => true,
        Err(error) => {
            assert_io_error(&error.to_string(), "eio-image");
            false
        }
    };

    // Still serving: lists and reads, and a container whose root is
    // elsewhere stops and starts again.
    let listed = images.list_images().await.unwrap();
    assert!(
        listed.iter().all(|i| !i
            .names
            .iter()
            .any(|n| n == "eio-import" || n == "eio-commit")),
        "a failed import or commit is listed: {listed:?}"
    );
    assert!(manager.lookup_by_name("eio-new").await.is_err());
    assert_eq!(running.state().await.unwrap(), "running");
    running.destroy().await.unwrap();
    running.start().await.unwrap();
    assert_eq!(running.state().await.unwrap(), "running");
    running.destroy().await.unwrap();

    // Healthy again: what was answered is whole, what was refused absent.
    env.daemon.kill().unwrap();
    disk.heal();
    env.daemon = TestDaemon::start(&env.bus, env.dir.path()).await.unwrap();
    let manager = env.manager().await.unwrap();
    let running = env
        .domain(manager.lookup_by_name("eio-running").await.unwrap())
        .await
        .unwrap();
    assert_eq!(running.get_xml(INACTIVE).await.unwrap(), running_xml);
    assert!(manager.lookup_by_name("eio-new").await.is_err());
    let domains = env.dir.path().join("etc/domains");
    for entry in fs::read_dir(&domains).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name == "eio-running.xml" || name == "eio-image.xml",
            "{name} left in {}",
            domains.display()
        );
    }
    let listed = ImagesProxy::new(&env.connection)
        .await
        .unwrap()
        .list_images()
        .await
        .unwrap();
    let names: Vec<&String> = listed.iter().flat_map(|i| &i.names).collect();
    assert_eq!(names, ["eio-base"], "images after the errors: {listed:?}");
    for image in &listed {
        let layer = env
            .dir
            .path()
            .join("lib/storage/images")
            .join(&image.id)
            .join("layer");
        assert!(layer.is_dir(), "{} without its layer", image.id);
    }
    match manager.lookup_by_name("eio-image").await {
        Ok(path) => {
            let from_image = env.domain(path).await.unwrap();
            if !undefined {
                assert_eq!(from_image.get_xml(INACTIVE).await.unwrap(), image_xml);
            }
            from_image
                .start()
                .await
                .expect("its writable layer is usable");
            from_image.destroy().await.unwrap();
        }
        Err(error) => assert!(undefined, "eio-image is gone: {error}"),
    }
    running.start().await.unwrap();
    running.destroy().await.unwrap();
    drop(env);
    drop(disk);
}
