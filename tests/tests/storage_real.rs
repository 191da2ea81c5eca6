//! The image store against the real kernel, as root: overlay mounts of
//! imported images, whiteouts honoured by overlayfs, commit of a container's
//! writable layer, a full disk mid-import. Fixtures are built here: a
//! busybox-static root and an OCI layout with correct digests.
//!
//! `cargo test -p lxvirt-tests --test storage_real -- --ignored --nocapture
//! figures` prints the import and commit figures of docs/images.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use lxvirt_tests::{busybox_root, oci_fixture, root_or_skip};
use lxvirtd::storage::{
    Compression, DevicePolicy, ExportOptions, ImportOptions, OciImportOptions, OciProblem, Overlay,
    OverlayMount, RootMount, StorageError, Store, UnsafeEntry, pack_dir,
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

fn open_store(state: &Path) -> Store {
    Store::open(state, Box::new(Overlay::default())).unwrap().0
}

fn overlay(root: RootMount) -> OverlayMount {
    match root {
        RootMount::Overlay(m) => m,
        other => panic!("not an overlay: {other:?}"),
    }
}

/// A mount, undone on drop (also when the test fails).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn mount_overlay(m: &OverlayMount) -> Mounted {
    mount(
        Some("overlay"),
        &m.target,
        Some("overlay"),
        MsFlags::empty(),
        Some(m.options(None).as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay {}: {e}", m.options(None)));
    Mounted(m.target.clone())
}

fn tarball(dir: &Path, name: &str, root: &Path, compression: Compression) -> PathBuf {
    let path = dir.join(format!("{name}{}", compression.suffix()));
    let mut file = fs::File::create(&path).unwrap();
    pack_dir(root, compression, &mut file).unwrap();
    path
}

fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    parent: Option<&str>,
) -> Result<lxvirtd::storage::ImportReport, StorageError> {
    store.import_tarball(
        path,
        &ImportOptions {
            name: name.map(str::to_owned),
            parent: parent.map(str::to_owned),
            devices: DevicePolicy::Refuse,
        },
        &mut |_| {},
    )
}

fn leftovers(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["images", "containers"] {
        for entry in fs::read_dir(state.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out
}

/// Runs a command in `root` with chroot(8).
fn in_root(root: &Path, script: &str) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn busybox_tarballs_import_and_run_from_an_overlay() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    busybox_root(&root);
    let state = tmp.path().join("state");
    let store = open_store(&state);
    let mut ids = Vec::new();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let path = tarball(tmp.path(), "busybox", &root, c);
        ids.push(import(&store, &path, Some("busybox"), None).unwrap().id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "same content, same image"
    );
    let m = overlay(store.prepare("busybox", "bb").unwrap());
    let _mounted = mount_overlay(&m);
    assert_eq!(
        in_root(&m.target, "echo hello > /tmp/x; cat /tmp/x; ls /bin/sh"),
        "hello\n/bin/sh\n"
    );
    // The write went to the writable layer, not to the image.
    assert!(m.upperdir.join("tmp/x").exists());
    assert!(!store.layer_dir(&ids[0]).join("tmp/x").exists());
    assert_eq!(
        store.inspect("busybox").unwrap().domains,
        vec!["bb".to_owned()]
    );
}

#[test]
fn oci_whiteouts_and_opaque_dirs_hold_in_the_mounted_overlay() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = oci_fixture(tmp.path());
    let state = tmp.path().join("state");
    let store = open_store(&state);
    // Two manifests: one must be named.
    let err = store
        .import_oci(&layout, &OciImportOptions::default(), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::Oci {
                problem: OciProblem::NoManifest(_),
                ..
            }
        ),
        "{err}"
    );
    let options = OciImportOptions {
        reference: Some("1.0".into()),
        name: Some("app".into()),
        ..Default::default()
    };
    let report = store.import_oci(&layout, &options, &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 2);
    let info = store.inspect("app").unwrap();
    assert_eq!(info.config.unwrap()["config"]["Entrypoint"][0], "/bin/sh");

    let m = overlay(store.prepare("app", "web").unwrap());
    assert_eq!(m.lowerdir.len(), 2);
    let _mounted = mount_overlay(&m);
    let merged = &m.target;
    assert!(
        !merged.join("etc/gone").exists(),
        "the whiteout deletes the lower file"
    );
    assert!(merged.join("etc/passwd").exists());
    let mut names: Vec<String> = fs::read_dir(merged.join("opt/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["upper"],
        "the opaque dir hides the lower content"
    );
    assert_eq!(
        fs::read_to_string(merged.join("opt/kept")).unwrap(),
        "kept\n"
    );
    assert_eq!(in_root(merged, "cat /etc/motd"), "welcome\n");

    // Remove: refused while a child or a domain uses an image.
    let bottom = report.layers[0].0.clone();
    let err = store.remove(bottom.as_str(), &[]).unwrap_err();
    assert!(
        matches!(&err, StorageError::ImageInUse { children, .. } if children.len() == 1),
        "{err}"
    );
    let err = store.remove("app", &[]).unwrap_err();
    assert!(
        matches!(&err, StorageError::ImageInUse { domains, .. } if domains == &["web".to_owned()]),
        "{err}"
    );
    drop(_mounted);
    store.remove_writable("web").unwrap();
    assert_eq!(store.remove("app", &[]).unwrap().len(), 2);
    assert!(leftovers(&state).is_empty());
}

/// A raw ustar archive entry (no checks: for hostile archives).
fn ustar(out: &mut Vec<u8>, path: &str, kind: u8, link: &str, data: &[u8], dev: (u32, u32)) {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{:0width$o}\0", value, width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(dev.0));
    octal(&mut h[337..345], u64::from(dev.1));
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[test]
fn hostile_tarballs_are_refused_and_the_store_stays_clean() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = open_store(&state);
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    let victim_s = victim.display().to_string();
    /// Path, ustar type flag, link target, device numbers.
    type Entry<'a> = (&'a str, u8, &'a str, (u32, u32));
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        ("absolute", vec![("/tmp/lxvirt-evil", b'0', "", (0, 0))]),
        ("dot-dot", vec![("bin/../../lxvirt-evil", b'0', "", (0, 0))]),
        ("device", vec![("dev/kmem", b'3', "", (1, 2))]),
        (
            "hard link out",
            vec![("shadow", b'1', "/etc/shadow", (0, 0))],
        ),
        (
            "symlink then write",
            vec![
                ("out", b'2', victim_s.as_str(), (0, 0)),
                ("out/pwned", b'0', "", (0, 0)),
            ],
        ),
    ];
    for (what, entries) in cases {
        let mut bytes = Vec::new();
        ustar(&mut bytes, "etc/ok", b'0', "", b"fine\n", (0, 0));
        for (path, kind, link, dev) in entries {
            ustar(&mut bytes, path, kind, link, b"x", dev);
        }
        bytes.extend_from_slice(&[0u8; 1024]);
        let path = tmp.path().join(format!("{}.tar", what.replace(' ', "-")));
        fs::write(&path, &bytes).unwrap();
        let err = import(&store, &path, Some("evil"), None).unwrap_err();
        let StorageError::UnsafeEntry { reason, .. } = &err else {
            panic!("{what}: {err}")
        };
        let expected = match what {
            "absolute" => matches!(reason, UnsafeEntry::AbsolutePath),
            "dot-dot" => matches!(reason, UnsafeEntry::ParentComponent),
            "device" => matches!(
                reason,
                UnsafeEntry::DeviceNode {
                    major: 1,
                    minor: 2,
                    ..
                }
            ),
            "hard link out" => matches!(reason, UnsafeEntry::LinkEscapes { .. }),
            _ => matches!(reason, UnsafeEntry::ThroughSymlink),
        };
        assert!(expected, "{what}: {err}");
        assert!(leftovers(&state).is_empty(), "{what}");
        assert!(store.list().unwrap().is_empty(), "{what}");
    }
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    assert!(!Path::new("/tmp/lxvirt-evil").exists() && !tmp.path().join("lxvirt-evil").exists());
}

#[test]
fn commit_of_a_mounted_writable_layer_and_export_round_trip() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = oci_fixture(tmp.path());
    let state = tmp.path().join("state");
    let store = open_store(&state);
    let options = OciImportOptions {
        reference: Some("1.0".into()),
        name: Some("app".into()),
        ..Default::default()
    };
    let app = store.import_oci(&layout, &options, &mut |_| {}).unwrap().id;

    // Change the container's files through the mounted overlay.
    let m = overlay(store.prepare("app", "web").unwrap());
    {
        let _mounted = mount_overlay(&m);
        in_root(
            &m.target,
            "busybox rm /etc/passwd && busybox rm -r /opt/dir && busybox mkdir /opt/dir \
             && echo new > /opt/dir/only && busybox head -c 307200 /bin/busybox > /srv.img \
             && busybox ln -s /srv.img /srv.link && busybox chmod 600 /srv.img \
             && busybox chown 1000:1000 /srv.img",
        );
    }
    assert!(
        fs::symlink_metadata(m.upperdir.join("etc/passwd"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let report = store.commit("web", "web-v2", &mut |_| {}).unwrap();
    assert_eq!(report.parent, app);
    assert!(report.size >= 300 * 1024);

    // A new container on the committed image sees the changes.
    let m2 = overlay(store.prepare("web-v2", "web2").unwrap());
    assert_eq!(m2.lowerdir.len(), 3);
    let _mounted = mount_overlay(&m2);
    let merged = &m2.target;
    assert!(
        !merged.join("etc/passwd").exists(),
        "the deletion carried over"
    );
    let names: Vec<_> = fs::read_dir(merged.join("opt/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["only"], "the opaque directory carried over");
    let img = fs::metadata(merged.join("srv.img")).unwrap();
    assert_eq!(
        (img.len(), img.mode() & 0o7777, img.uid()),
        (300 * 1024, 0o600, 1000)
    );
    assert_eq!(
        fs::read_link(merged.join("srv.link")).unwrap(),
        Path::new("/srv.img")
    );

    // Export flattened, import as a platform image: the same tree.
    let exported = tmp.path().join("web-v2.tar.zst");
    let mut out = fs::File::create(&exported).unwrap();
    store
        .export(
            "web-v2",
            ExportOptions {
                layer_only: false,
                compression: Compression::Zstd,
            },
            &mut out,
            &mut |_| {},
        )
        .unwrap();
    out.flush().unwrap();
    let flat = import(&store, &exported, Some("web-flat"), None).unwrap();
    let flat_layer = store.layer_dir(&flat.id);
    assert_eq!(tree(&flat_layer), tree(merged));
    // A layer-only export imports on the same parent as the same layer.
    let mut layer_tar = Vec::new();
    store
        .export(
            "web-v2",
            ExportOptions {
                layer_only: true,
                compression: Compression::None,
            },
            &mut layer_tar,
            &mut |_| {},
        )
        .unwrap();
    let path = tmp.path().join("layer.tar");
    fs::write(&path, &layer_tar).unwrap();
    let again = import(&store, &path, None, Some("app")).unwrap();
    assert_eq!(
        again.stats.whiteouts, 2,
        "a .wh. for passwd and an opaque marker"
    );
    assert!(
        fs::symlink_metadata(store.layer_dir(&again.id).join("etc/passwd"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

/// Path, type, mode, owner, size and link target of every entry below `root`.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let link = fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let size = if meta.is_file() { meta.len() } else { 0 };
            out.push(format!(
                "{rel} {:o} {}:{} {size} {link}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            ));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn a_full_disk_mid_import_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _mounted = Mounted(state.clone());
    let root = tmp.path().join("rootfs");
    busybox_root(&root); // ~2 MB: does not fit
    let path = tarball(tmp.path(), "busybox", &root, Compression::Gzip);
    let store = open_store(&state);
    let err = import(&store, &path, Some("busybox"), None).unwrap_err();
    assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(leftovers(&state).is_empty());
    assert!(store.list().unwrap().is_empty());
    // The space is back: a small image fits.
    let small = tmp.path().join("small");
    fs::create_dir_all(small.join("etc")).unwrap();
    fs::write(small.join("etc/hostname"), "small\n").unwrap();
    let path = tarball(tmp.path(), "small", &small, Compression::None);
    import(&store, &path, Some("small"), None).unwrap();
}

/// Figures for docs/images.md: import throughput of a ~100 MB tarball and
/// commit time against the size of the change.
#[test]
#[ignore = "figures: run with --ignored --nocapture"]
fn figures() {
    if !root_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let state = tmp.path().join("state");
    let store = open_store(&state);
    // 100 files of 1 MiB of incompressible-ish data, plus busybox.
    let root = tmp.path().join("rootfs");
    busybox_root(&root);
    fs::create_dir_all(root.join("data")).unwrap();
    for i in 0..100 {
        let chunk = lxvirt_tests::incompressible_bytes(1 << 20, 0x9e37_79b9_7f4a_7c15 + i);
        fs::write(root.join(format!("data/f{i:03}")), chunk).unwrap();
    }
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let path = tarball(tmp.path(), "big", &root, c);
        let size = fs::metadata(&path).unwrap().len();
        let _ = Command::new("sh")
            .args(["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"])
            .status();
        let started = Instant::now();
        let report = import(&store, &path, None, None).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "import {:<8} {:>6.1} MB file, {:>6.1} MB unpacked: {:.2} s, {:.0} MB/s of tar",
            format!("{c:?}"),
            size as f64 / 1e6,
            report.stats.tar_bytes as f64 / 1e6,
            secs,
            report.stats.tar_bytes as f64 / 1e6 / secs
        );
        store.remove(report.id.as_str(), &[]).unwrap();
    }
    let small = tmp.path().join("small");
    busybox_root(&small);
    let id = import(
        &store,
        &tarball(tmp.path(), "small", &small, Compression::None),
        Some("bb"),
        None,
    )
    .unwrap()
    .id;
    for mb in [1usize, 10, 100] {
        let domain = format!("c{mb}");
        let m = overlay(store.prepare("bb", &domain).unwrap());
        {
            let _mounted = mount_overlay(&m);
            for i in 0..mb {
                fs::write(m.target.join(format!("tmp/f{i}")), vec![i as u8; 1 << 20]).unwrap();
            }
        }
        let _ = Command::new("sync").status();
        let started = Instant::now();
        let report = store
            .commit(&domain, &format!("snap{mb}"), &mut |_| {})
            .unwrap();
        println!(
            "commit {mb:>3} MiB change ({} files): {:.3} s",
            mb,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(report.parent, id);
    }
}
