//! Tests of the device-mapper backend.
//!
//! On a host without device-mapper only the refusal can be tested; the
//! rest runs for real in the nested VM (`tests/vm/guest/dm-suite`), which
//! runs this crate's unit-test binary with `LXVIRT_DM_TESTS=1`. Without
//! that variable those tests print why they skip and pass; with it, a
//! missing device-mapper is a failure.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::*;
use crate::storage::{Compression, DevicePolicy, ImportOptions, Store, pack_dir};

#[test]
fn unavailable_with_an_actionable_reason() {
    let dir = tempfile::tempdir().unwrap();
    let dm = DeviceMapper::new(ThinConfig {
        control: dir.path().join("control"),
        ..ThinConfig::default()
    });
    let Availability::Unavailable(reason) = dm.availability() else {
        panic!("available")
    };
    assert!(
        reason.starts_with("device-mapper is absent from this kernel")
            && reason.ends_with("use the overlay backend"),
        "{reason}"
    );
    // Not opened by a store: refused, saying why.
    let err = dm.root_mount(&[], dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("storage backend 'devicemapper' is not available: "),
        "{err}"
    );
}

/// On this machine kind's own kernel (no device-mapper), the default
/// backend says so; in the nested VM, where device-mapper works, this
/// checks the other way round.
#[test]
fn the_host_answer_matches_the_kernel() {
    let works = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .is_ok();
    let availability = DeviceMapper::default().availability();
    if works {
        eprintln!("device-mapper works here: {availability:?}");
    } else {
        let Availability::Unavailable(reason) = availability else {
            panic!("available without /dev/mapper/control")
        };
        assert!(
            reason.contains("device-mapper is absent from this kernel"),
            "{reason}"
        );
        assert!(reason.contains("use the overlay backend"), "{reason}");
    }
}

#[test]
fn sizes_and_file_systems_parse() {
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("20G").unwrap(), 20 << 30);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(parse_size("12X").is_err());
    assert!(parse_size("G").is_err());
    assert!(parse_size("99999999999T").is_err());
    assert_eq!("xfs".parse::<FsType>().unwrap(), FsType::Xfs);
    assert!("btrfs".parse::<FsType>().is_err());
    assert_eq!(pool::metadata_bytes(1 << 30), 16 << 20);
    assert_eq!(pool::metadata_bytes(20 << 30), 80 << 20);
}

#[test]
fn small_sizes_are_refused_with_the_flag_to_change() {
    let dm = DeviceMapper::new(ThinConfig {
        volume_size: 1 << 20,
        ..ThinConfig::default()
    });
    let reason = dm.check_config().unwrap();
    assert!(reason.contains("--dm-volume-size"), "{reason}");
    let dm = DeviceMapper::new(ThinConfig {
        pool: PoolSource::Files {
            dir: None,
            size: 1 << 20,
        },
        ..ThinConfig::default()
    });
    assert!(dm.check_config().unwrap().contains("--dm-pool-size"));
}

// ---- in the nested VM --------------------------------------------------------

/// Whether the device-mapper tests run: only with `LXVIRT_DM_TESTS=1`
/// (the VM suite), where they must.
fn dm_tests() -> bool {
    if std::env::var_os("LXVIRT_DM_TESTS").is_some_and(|v| v == "1") {
        return true;
    }
    eprintln!(
        "SKIPPED: device-mapper tests run in the nested VM (tests/vm/run tests/vm/guest/dm-suite) \
         with LXVIRT_DM_TESTS=1"
    );
    false
}

/// A busybox root file system tarball.
fn busybox_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "dev", "tmp", "opq"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "echo"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/motd"), "base\n").unwrap();
    fs::write(root.join("opq/old"), "old\n").unwrap();
    let path = dir.join("busybox.tar");
    let mut out = fs::File::create(&path).unwrap();
    pack_dir(&root, Compression::None, &mut out).unwrap();
    path
}

/// A layer tarball on the busybox image: a new file, a whiteout, an
/// opaque directory.
fn child_tar(dir: &Path) -> PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("etc/child", b"child\n");
    add("etc/.wh.motd", b"");
    add("opq/.wh..wh..opq", b"");
    add("opq/new", b"new\n");
    let path = dir.join("child.tar");
    fs::write(&path, tar.into_inner().unwrap()).unwrap();
    path
}

fn import(store: &Store, tarball: &Path, name: &str, parent: Option<&str>) -> ImageId {
    store
        .import_tarball(
            tarball,
            &ImportOptions {
                name: Some(name.to_owned()),
                parent: parent.map(str::to_owned),
                devices: DevicePolicy::Refuse,
            },
            &mut |_| {},
        )
        .unwrap()
        .id
}

fn small_config(fs: FsType) -> ThinConfig {
    ThinConfig {
        pool: PoolSource::Files {
            dir: None,
            size: 1 << 30,
        },
        // xfs's smallest file system is 300 MiB.
        volume_size: 320 << 20,
        fs,
        // As the daemon does under SELinux.
        mount_context: selinux_context()
            .map(|_| "system_u:object_r:svirt_sandbox_file_t:s0".to_owned()),
        ..ThinConfig::default()
    }
}

fn open(state: &Path, config: &ThinConfig) -> (Store, Arc<DeviceMapper>) {
    let dm = Arc::new(DeviceMapper::new(config.clone()));
    assert_eq!(dm.availability(), Availability::Available);
    let (store, _) = Store::open(state, Box::new(dm.clone())).unwrap();
    (store, dm)
}

/// The container's root, mounted as the container setup mounts it (only
/// `context=` as data, when SELinux is on), unmounted on drop.
struct Root(PathBuf);

impl Root {
    fn mount(root: &RootMount, at: &Path, context: Option<&str>) -> Root {
        let RootMount::Block(block) = root else {
            panic!("not a block device: {root:?}")
        };
        fs::create_dir_all(at).unwrap();
        mount(
            Some(&block.device),
            at,
            Some(block.fs_type.as_str()),
            MsFlags::empty(),
            Some(
                BlockMount {
                    data: String::new(),
                    ..block.clone()
                }
                .options(context)
                .as_str(),
            ),
        )
        .unwrap_or_else(|e| panic!("mount {} on {}: {e}", block.device.display(), at.display()));
        Root(at.to_owned())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::empty());
    }
}

fn device_of(root: &RootMount) -> PathBuf {
    match root {
        RootMount::Block(b) => b.device.clone(),
        other => panic!("not a block device: {other:?}"),
    }
}

/// An SELinux context to mount with, when the kernel has a policy loaded.
fn selinux_context() -> Option<String> {
    let enforce = Path::new("/sys/fs/selinux/enforce");
    enforce
        .exists()
        .then(|| "system_u:object_r:svirt_sandbox_file_t:s0:c11,c12".to_owned())
        .filter(|_| fs::read_to_string("/sys/fs/selinux/policyvers").is_ok())
}

fn label(path: &Path) -> String {
    let raw = crate::storage::sys::lgetxattr(path, std::ffi::OsStr::new("security.selinux"))
        .unwrap()
        .unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .to_owned()
}

#[test]
fn vm_ext4_images_containers_commit_remove_restart() {
    if dm_tests() {
        images_containers_commit_remove_restart(FsType::Ext4);
    }
}

#[test]
fn vm_xfs_images_containers_commit_remove_restart() {
    if dm_tests() {
        images_containers_commit_remove_restart(FsType::Xfs);
    }
}

/// The whole life of images and containers on thin volumes: several
/// volumes of one origin mounted at once (xfs needs their UUIDs told
/// apart), commit, remove, restart and reboot of the pool.
fn images_containers_commit_remove_restart(fs_type: FsType) {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = small_config(fs_type);
    let (store, dm) = open(&state, &config);

    // Import: the layers are directories as with overlay; no volume yet.
    let base = import(&store, &busybox_tar(tmp.path()), "busybox", None);
    let child = import(&store, &child_tar(tmp.path()), "child", Some("busybox"));
    assert_eq!(dm.image_volume(&base), None);

    // A container on the child image: a volume per image of the chain,
    // one for the container, all thin devices of the pool.
    let web = store.prepare("child", "web").unwrap();
    let base_vol = dm.image_volume(&base).expect("the base image has a volume");
    let child_vol = dm
        .image_volume(&child)
        .expect("the child image has a volume");
    let web_vol = dm.container_volume("web").expect("web has a volume");
    assert!(base_vol < child_vol && child_vol < web_vol);
    for id in [base_vol, child_vol, web_vol] {
        assert!(dm.thin_device_exists(id).unwrap(), "thin device {id}");
    }
    let context = selinux_context();
    {
        let root = Root::mount(&web, &tmp.path().join("web"), context.as_deref());
        // The child layer applied on its parent's snapshot.
        assert_eq!(
            fs::read_to_string(root.path("etc/child")).unwrap(),
            "child\n"
        );
        assert!(!root.path("etc/motd").exists(), "the whiteout deleted motd");
        assert!(!root.path("opq/old").exists(), "the opaque dir hid old");
        assert_eq!(fs::read_to_string(root.path("opq/new")).unwrap(), "new\n");
        assert!(root.path("bin/busybox").exists());
        if let Some(context) = &context {
            assert_eq!(&label(&root.path("etc/passwd")), context);
        }
        // The container runs from it, and writes in it.
        let out = Command::new("chroot")
            .arg(&root.0)
            .args([
                "/bin/sh",
                "-c",
                "echo hello > /hello && rm /etc/child && cat /hello",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{out:?}");
        fs::create_dir(root.path("data")).unwrap();
        fs::write(root.path("data/file"), "data\n").unwrap();

        // Remove refused while mounted, nothing changed.
        let err = store.remove_writable("web").unwrap_err();
        assert!(err.to_string().contains("stop the container"), "{err}");
        assert_eq!(dm.container_volume("web"), Some(web_vol));
    }

    // Commit: a snapshot of web's volume; its layer holds the changes.
    let report = store.commit("web", "web-snap", &mut |_| {}).unwrap();
    let snap_vol = dm
        .image_volume(&report.id)
        .expect("the commit has a volume");
    let layer = store.layer_dir(&report.id);
    assert_eq!(fs::read_to_string(layer.join("hello")).unwrap(), "hello\n");
    assert_eq!(
        fs::read_to_string(layer.join("data/file")).unwrap(),
        "data\n"
    );
    let wh = nix::sys::stat::lstat(&layer.join("etc/child")).unwrap();
    assert!(
        crate::storage::copy::is_whiteout(&wh),
        "etc/child is a whiteout"
    );
    assert!(
        !layer.join("bin").exists(),
        "unchanged files are not in the layer"
    );
    // Export of the committed image: the merged tree from the layers.
    let mut out = Vec::new();
    store
        .export("web-snap", Default::default(), &mut out, &mut |_| {})
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&out[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("data/file")), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("etc/child")), "{names:?}");

    // The committed image has the change, its parent does not.
    let snap_root = store.prepare("web-snap", "third").unwrap();
    let parent_root = store.prepare("child", "other").unwrap();
    {
        let a = Root::mount(&snap_root, &tmp.path().join("third"), None);
        let b = Root::mount(&parent_root, &tmp.path().join("other"), None);
        assert_eq!(fs::read_to_string(a.path("data/file")).unwrap(), "data\n");
        assert!(!a.path("etc/child").exists());
        assert!(!b.path("data").exists() && !b.path("hello").exists());
        assert!(b.path("etc/child").exists());
    }

    // Remove: refused while a writable layer uses the image; removing the
    // layer frees its thin device, then the image's goes too.
    let third_vol = dm.container_volume("third").unwrap();
    assert!(matches!(
        store.remove("web-snap", &[]),
        Err(StorageError::ImageInUse { .. })
    ));
    assert!(dm.thin_device_exists(snap_vol).unwrap());
    assert!(store.remove_writable("third").unwrap());
    assert!(!dm.thin_device_exists(third_vol).unwrap());
    assert_eq!(dm.container_volume("third"), None);
    store.remove("web-snap", &[]).unwrap();
    assert!(!dm.thin_device_exists(snap_vol).unwrap());
    assert_eq!(dm.image_volume(&report.id), None);

    // Restart of the daemon: the pool is reopened, the volumes found.
    let web_dev = device_of(&web);
    drop(store);
    drop(dm);
    let (store, dm) = open(&state, &config);
    assert_eq!(dm.container_volume("web"), Some(web_vol));
    let again = store.prepare("child", "web").unwrap();
    assert_eq!(device_of(&again), web_dev, "the same thin device");
    {
        let root = Root::mount(&again, &tmp.path().join("web"), None);
        assert_eq!(fs::read_to_string(root.path("hello")).unwrap(), "hello\n");
    }

    // Reboot: every device gone from the kernel, the pool files and the
    // state kept; the pool comes back from them with the same ids.
    dm.deactivate().unwrap();
    drop(store);
    drop(dm);
    let (store, dm) = open(&state, &config);
    let again = store.prepare("child", "web").unwrap();
    assert_eq!(dm.container_volume("web"), Some(web_vol));
    assert_eq!(dm.image_volume(&child), Some(child_vol));
    {
        let root = Root::mount(&again, &tmp.path().join("web"), None);
        assert_eq!(
            fs::read_to_string(root.path("data/file")).unwrap(),
            "data\n"
        );
    }
    let (used, total) = dm.pool_usage().unwrap();
    eprintln!("pool: {used} of {total} 64 KiB blocks used");
    assert!(used > 0 && used < total);

    // Leave the kernel as found: the loop devices detach with the pool.
    dm.deactivate().unwrap();
}

/// `--dm-pool-device`: the pool on a whole block device (here a loop
/// device the test attaches), created, used, taken down and reopened.
#[test]
fn vm_pool_on_a_block_device() {
    if !dm_tests() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("disk");
    fs::File::create(&backing)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let (disk, handle) = loopdev::attach(&backing).unwrap();
    let config = ThinConfig {
        pool: PoolSource::Device(disk.clone()),
        ..small_config(FsType::Ext4)
    };
    let state = tmp.path().join("state");
    let (store, dm) = open(&state, &config);
    import(&store, &busybox_tar(tmp.path()), "busybox", None);
    let root = store.prepare("busybox", "web").unwrap();
    let id = dm.container_volume("web").unwrap();
    {
        let r = Root::mount(&root, &tmp.path().join("web"), None);
        fs::write(r.path("mark"), "on the device\n").unwrap();
    }
    dm.deactivate().unwrap();
    drop(store);
    drop(dm);
    // Reopened from the device's metadata, not recreated.
    let (store, dm) = open(&state, &config);
    let root = store.prepare("busybox", "web").unwrap();
    assert_eq!(dm.container_volume("web"), Some(id));
    {
        let r = Root::mount(&root, &tmp.path().join("web"), None);
        assert_eq!(
            fs::read_to_string(r.path("mark")).unwrap(),
            "on the device\n"
        );
    }
    dm.deactivate().unwrap();
    drop(handle);
}

#[test]
fn vm_timings() {
    if !dm_tests() || std::env::var_os("LXVIRT_DM_FIGURES").is_none_or(|v| v.is_empty()) {
        eprintln!("SKIPPED: figures only with LXVIRT_DM_TESTS=1 LXVIRT_DM_FIGURES=1");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (store, dm) = open(&state, &small_config(FsType::Ext4));
    import(&store, &busybox_tar(tmp.path()), "busybox", None);
    let t = std::time::Instant::now();
    store.prepare("busybox", "first").unwrap();
    eprintln!(
        "FIGURE first container (pool, image volume + mkfs + fill, snapshot): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for i in 0..10 {
        let t = std::time::Instant::now();
        let root = store.prepare("busybox", &format!("c{i}")).unwrap();
        let snap = t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        let r = Root::mount(&root, &tmp.path().join(format!("c{i}")), None);
        let out = Command::new("chroot")
            .arg(&r.0)
            .args(["/bin/sh", "-c", "true"])
            .status()
            .unwrap();
        assert!(out.success());
        let start = t.elapsed().as_secs_f64() * 1e3;
        times.push((snap, start));
    }
    let mut snaps: Vec<f64> = times.iter().map(|t| t.0).collect();
    let mut starts: Vec<f64> = times.iter().map(|t| t.1).collect();
    snaps.sort_by(f64::total_cmp);
    starts.sort_by(f64::total_cmp);
    eprintln!(
        "FIGURE snapshot per container (prepare): median {:.1} ms, min {:.1}, max {:.1}",
        snaps[5], snaps[0], snaps[9]
    );
    eprintln!(
        "FIGURE mount + chroot /bin/true from the snapshot: median {:.1} ms, min {:.1}, max {:.1}",
        starts[5], starts[0], starts[9]
    );
    dm.deactivate().unwrap();
}
