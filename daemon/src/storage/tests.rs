//! Unit tests of the image store on temporary directories. Tests that need
//! root (owners, whiteouts' trusted xattrs) say so and return early.

use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn overlay_backend(dir: &Path) -> Box<dyn Backend> {
    let procfs = dir.join("filesystems");
    fs::write(&procfs, "nodev\toverlay\n").unwrap();
    Box::new(Overlay::new(procfs))
}

fn new_store(dir: &Path) -> Store {
    let (store, report) = Store::open(&dir.join("state"), overlay_backend(dir)).unwrap();
    assert!(report.removed.is_empty());
    store
}

/// A tar entry with any path and type, bypassing the tar crate's checks
/// (for hostile archives).
fn raw_entry(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

fn device(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    major: u32,
    minor: u32,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    tar.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_uid(1000);
    h.set_gid(1000);
    tar.append_data(&mut h, path, data).unwrap();
}

fn dir_entry(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_size(0);
    h.set_mtime(1_500_000_000);
    tar.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn link(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str, hard: bool) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(if hard {
        tar::EntryType::Link
    } else {
        tar::EntryType::Symlink
    });
    h.set_mode(0o777);
    h.set_size(0);
    tar.append_link(&mut h, path, target).unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// A small root file system archive: dirs, files, links, a FIFO, an xattr.
fn rootfs_tar() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    dir_entry(&mut tar, "./", 0o755);
    dir_entry(&mut tar, "bin/", 0o755);
    file(&mut tar, "bin/busybox", b"#!busybox\n", 0o4755);
    link(&mut tar, "bin/sh", "busybox", false);
    link(&mut tar, "bin/abs", "/bin/busybox", false);
    link(&mut tar, "bin/ash", "bin/busybox", true);
    file(
        &mut tar,
        "etc/passwd",
        b"root:x:0:0::/root:/bin/sh\n",
        0o644,
    );
    dir_entry(&mut tar, "etc/ro/", 0o555);
    file(&mut tar, "etc/ro/file", b"x", 0o400);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Fifo);
    h.set_mode(0o600);
    h.set_size(0);
    tar.append_data(&mut h, "run/fifo", std::io::empty())
        .unwrap();
    tar.append_pax_extensions([
        ("SCHILY.xattr.user.lxvirt", &b"yes"[..]),
        ("SCHILY.xattr.trusted.evil", &b"1"[..]),
    ])
    .unwrap();
    file(&mut tar, "etc/tagged", b"t", 0o644);
    tar.into_inner().unwrap()
}

fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    let mut enc = super::compress::Encoder::new(Vec::new(), c).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn import_bytes(
    store: &Store,
    dir: &Path,
    name: Option<&str>,
    parent: Option<&str>,
    bytes: &[u8],
) -> Result<ImportReport> {
    let path = write(dir, &format!("in-{}.tar", rand::random::<u32>()), bytes);
    store.import_tarball(
        &path,
        &ImportOptions {
            name: name.map(str::to_owned),
            parent: parent.map(str::to_owned),
            devices: DevicePolicy::Refuse,
        },
        &mut |_| {},
    )
}

/// Lists what is in the store directories apart from finished images.
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

#[test]
fn tarball_import_unpacks_everything_in_every_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let plain = rootfs_tar();
    let mut ids = Vec::new();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let report =
            import_bytes(&store, tmp.path(), Some("base"), None, &compress(&plain, c)).unwrap();
        ids.push(report.id.clone());
        assert_eq!(report.stats.diff_id, super::id::sha256_hex(&plain));
        assert_eq!(
            report.layers[0].1,
            c != Compression::None,
            "second import finds the image"
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "same content, same id");
    let layer = store.layer_dir(&ids[0]);
    assert_eq!(fs::read(layer.join("bin/busybox")).unwrap(), b"#!busybox\n");
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_link(layer.join("bin/abs")).unwrap(),
        Path::new("/bin/busybox")
    );
    let busybox = fs::metadata(layer.join("bin/busybox")).unwrap();
    assert_eq!(
        busybox.ino(),
        fs::metadata(layer.join("bin/ash")).unwrap().ino()
    );
    assert_eq!(busybox.mtime(), 1_600_000_000);
    assert_eq!(
        fs::metadata(layer.join("etc/ro"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o555
    );
    assert_eq!(
        fs::metadata(layer.join("etc/ro")).unwrap().mtime(),
        1_500_000_000
    );
    assert!(
        fs::symlink_metadata(layer.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    let tagged = layer.join("etc/tagged");
    assert_eq!(
        super::sys::lgetxattr(&tagged, "user.lxvirt".as_ref())
            .unwrap()
            .as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        super::sys::lgetxattr(&tagged, "trusted.evil".as_ref()).unwrap(),
        None
    );
    if is_root() {
        assert_eq!(
            busybox.permissions().mode() & 0o7777,
            0o4755,
            "setuid kept after chown"
        );
        assert_eq!((busybox.uid(), busybox.gid()), (1000, 1000));
    }
    let info = store.inspect("base").unwrap();
    assert_eq!(info.names, vec!["base".to_owned()]);
    assert_eq!(info.size, 10 + 26 + 1 + 1);
    assert_eq!(info.chain, vec![ids[0].clone()]);
    assert!(leftovers(&tmp.path().join("state")).is_empty());
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_s = outside.display().to_string();

    type Build = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
    type Case = (&'static str, Build, fn(&UnsafeEntry) -> bool);
    let cases: Vec<Case> = vec![
        (
            "absolute path",
            Box::new(|t| raw_entry(t, "/etc/evil", tar::EntryType::Regular, "", b"x")),
            |r| *r == UnsafeEntry::AbsolutePath,
        ),
        (
            "dot-dot",
            Box::new(|t| raw_entry(t, "a/../../evil", tar::EntryType::Regular, "", b"x")),
            |r| *r == UnsafeEntry::ParentComponent,
        ),
        (
            "char device",
            Box::new(|t| device(t, "dev/mem", tar::EntryType::Char, 1, 1)),
            |r| {
                matches!(
                    r,
                    UnsafeEntry::DeviceNode {
                        block: false,
                        major: 1,
                        minor: 1
                    }
                )
            },
        ),
        (
            "block device",
            Box::new(|t| device(t, "dev/sda", tar::EntryType::Block, 8, 0)),
            |r| matches!(r, UnsafeEntry::DeviceNode { block: true, .. }),
        ),
        (
            "hard link out",
            Box::new(|t| raw_entry(t, "passwd", tar::EntryType::Link, "/etc/passwd", b"")),
            |r| matches!(r, UnsafeEntry::LinkEscapes { .. }),
        ),
        (
            "hard link up",
            Box::new(|t| raw_entry(t, "x/p", tar::EntryType::Link, "../../etc/passwd", b"")),
            |r| matches!(r, UnsafeEntry::LinkEscapes { .. }),
        ),
        (
            "hard link missing",
            Box::new(|t| raw_entry(t, "p", tar::EntryType::Link, "nothere", b"")),
            |r| matches!(r, UnsafeEntry::LinkTargetMissing { .. }),
        ),
        (
            "symlink up",
            Box::new(|t| raw_entry(t, "a/up", tar::EntryType::Symlink, "../../etc", b"")),
            |r| matches!(r, UnsafeEntry::LinkEscapes { .. }),
        ),
        (
            "write through symlink",
            Box::new(move |t| {
                raw_entry(t, "escape", tar::EntryType::Symlink, &outside_s, b"");
                raw_entry(t, "escape/pwned", tar::EntryType::Regular, "", b"x");
            }),
            |r| *r == UnsafeEntry::ThroughSymlink,
        ),
        (
            "write through relative symlink",
            Box::new(|t| {
                dir_entry(t, "real/", 0o755);
                raw_entry(t, "alias", tar::EntryType::Symlink, "real", b"");
                raw_entry(t, "alias/file", tar::EntryType::Regular, "", b"x");
            }),
            |r| *r == UnsafeEntry::ThroughSymlink,
        ),
    ];
    for (what, build, expected) in cases {
        let mut tar = tar::Builder::new(Vec::new());
        file(&mut tar, "ok", b"fine", 0o644);
        build(&mut tar);
        let bytes = tar.into_inner().unwrap();
        match import_bytes(&store, tmp.path(), Some("evil"), None, &bytes) {
            Err(StorageError::UnsafeEntry { reason, .. }) => {
                assert!(expected(&reason), "{what}: {reason}")
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(leftovers(&tmp.path().join("state")).is_empty(), "{what}");
        assert!(store.list().unwrap().is_empty(), "{what}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{what}");
    }

    // Device nodes can be skipped instead.
    let mut tar = tar::Builder::new(Vec::new());
    device(&mut tar, "dev/null", tar::EntryType::Char, 1, 3);
    file(&mut tar, "etc/hostname", b"x\n", 0o644);
    let path = write(tmp.path(), "devs.tar", &tar.into_inner().unwrap());
    let report = store
        .import_tarball(
            &path,
            &ImportOptions {
                devices: DevicePolicy::Skip,
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(report.stats.skipped_devices, 1);
    assert!(!store.layer_dir(&report.id).join("dev/null").exists());

    // Not a tar, and an unsupported compression.
    let err = import_bytes(
        &store,
        tmp.path(),
        None,
        None,
        &[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::UnsupportedCompression { format: "xz", .. }
        ),
        "{err}"
    );
    let err = import_bytes(
        &store,
        tmp.path(),
        None,
        None,
        &compress(b"garbage that is no tar at all", Compression::Gzip),
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::BadArchive { .. }), "{err}");
    let mut truncated = compress(&rootfs_tar(), Compression::Zstd);
    truncated.truncate(truncated.len() / 2);
    let err = import_bytes(&store, tmp.path(), None, None, &truncated).unwrap_err();
    assert!(matches!(err, StorageError::BadArchive { .. }), "{err}");
    assert!(leftovers(&tmp.path().join("state")).is_empty());
}

#[test]
fn whiteouts_become_overlay_whiteouts_on_a_parent() {
    if !is_root() {
        println!("skipped: needs root (trusted.overlay xattrs)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let base = import_bytes(&store, tmp.path(), Some("base"), None, &rootfs_tar())
        .unwrap()
        .id;
    let mut tar = tar::Builder::new(Vec::new());
    file(&mut tar, "etc/.wh.passwd", b"", 0o644);
    dir_entry(&mut tar, "etc/ro/", 0o755);
    file(&mut tar, "etc/ro/.wh..wh..opq", b"", 0o644);
    file(&mut tar, "etc/ro/new", b"new", 0o644);
    device(&mut tar, "bin/sh", tar::EntryType::Char, 0, 0);
    let layer_tar = tar.into_inner().unwrap();
    let child = import_bytes(&store, tmp.path(), Some("child"), Some("base"), &layer_tar).unwrap();
    assert_eq!(child.stats.whiteouts, 3);
    assert_eq!(child.id, ImageId::chain(Some(&base), &child.stats.diff_id));
    let layer = store.layer_dir(&child.id);
    for gone in ["etc/passwd", "bin/sh"] {
        let st = fs::symlink_metadata(layer.join(gone)).unwrap();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()),
            "{gone}"
        );
        assert_eq!(st.rdev(), 0);
    }
    assert_eq!(
        super::sys::lgetxattr(&layer.join("etc/ro"), "trusted.overlay.opaque".as_ref())
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!layer.join("etc/ro/.wh..wh..opq").exists());

    // The same layer as a platform image drops its whiteouts.
    let platform = import_bytes(&store, tmp.path(), None, None, &layer_tar).unwrap();
    assert!(!store.layer_dir(&platform.id).join("etc/passwd").exists());

    // Flattened export applies them; a layer export gives them back as .wh.
    let mut out = Vec::new();
    store
        .export("child", ExportOptions::default(), &mut out, &mut |_| {})
        .unwrap();
    let names = tar_names(&out);
    assert!(!names.contains(&"etc/passwd".to_owned()), "{names:?}");
    assert!(!names.contains(&"bin/sh".to_owned()), "{names:?}");
    assert!(names.contains(&"bin/busybox".to_owned()), "{names:?}");
    assert!(names.contains(&"etc/ro/new".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"etc/ro/file".to_owned()),
        "opaque dir hides the lower content: {names:?}"
    );
    let mut out = Vec::new();
    store
        .export(
            "child",
            ExportOptions {
                layer_only: true,
                compression: Compression::Gzip,
            },
            &mut out,
            &mut |_| {},
        )
        .unwrap();
    let names = tar_names(&out);
    for expected in [
        "etc/.wh.passwd",
        "etc/ro/.wh..wh..opq",
        "bin/.wh.sh",
        "etc/ro/new",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected} in {names:?}"
        );
    }
    // … which imports on the same parent as the same layer content.
    let again = import_bytes(&store, tmp.path(), None, Some("base"), &out).unwrap();
    let reimported = store.layer_dir(&again.id);
    assert!(
        fs::symlink_metadata(reimported.join("etc/passwd"))
            .unwrap()
            .rdev()
            == 0
    );
    assert_eq!(fs::read(reimported.join("etc/ro/new")).unwrap(), b"new");
}

/// The entry names of a (possibly compressed) tar, without `./` and `/`.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    let (_, reader) = super::compress::decoder(std::io::BufReader::new(bytes))
        .unwrap()
        .unwrap();
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            p.trim_start_matches("./").trim_end_matches('/').to_owned()
        })
        .collect()
}

#[test]
fn export_round_trip_keeps_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let first = import_bytes(&store, tmp.path(), Some("base"), None, &rootfs_tar()).unwrap();
    for c in [Compression::None, Compression::Zstd] {
        let mut out = Vec::new();
        let stats = store
            .export(
                "base",
                ExportOptions {
                    layer_only: false,
                    compression: c,
                },
                &mut out,
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(stats.size, first.stats.size);
        // Re-import: same tree, same export (exports are reproducible).
        let back = import_bytes(&store, tmp.path(), None, None, &out).unwrap();
        let mut out2 = Vec::new();
        let stats2 = store
            .export(
                back.id.as_str(),
                ExportOptions::default(),
                &mut out2,
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(stats2.diff_id, back.stats.diff_id);
        assert_eq!(stats.diff_id, stats2.diff_id);
        let layer = store.layer_dir(&back.id);
        assert_eq!(
            fs::read_link(layer.join("bin/abs")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::metadata(layer.join("bin/busybox")).unwrap().ino(),
            fs::metadata(layer.join("bin/ash")).unwrap().ino()
        );
        assert_eq!(
            super::sys::lgetxattr(&layer.join("etc/tagged"), "user.lxvirt".as_ref())
                .unwrap()
                .as_deref(),
            Some(&b"yes"[..])
        );
    }
}

#[test]
fn tags_remove_and_open_cleanup() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = new_store(tmp.path());
    let base = import_bytes(&store, tmp.path(), Some("base"), None, &rootfs_tar())
        .unwrap()
        .id;
    let mut tar = tar::Builder::new(Vec::new());
    file(&mut tar, "etc/motd", b"hello\n", 0o644);
    let layer = tar.into_inner().unwrap();
    let mid = import_bytes(&store, tmp.path(), None, Some("base"), &layer)
        .unwrap()
        .id;
    let mut tar = tar::Builder::new(Vec::new());
    file(&mut tar, "etc/issue", b"top\n", 0o644);
    let top = import_bytes(
        &store,
        tmp.path(),
        Some("top"),
        Some(mid.as_str()),
        &tar.into_inner().unwrap(),
    )
    .unwrap()
    .id;

    // Names: resolve by name, full id, prefix; a taken name is refused.
    assert_eq!(store.resolve(&base.as_str()[..8]).unwrap(), base);
    assert_eq!(store.resolve(&format!("sha256:{base}")).unwrap(), base);
    assert!(matches!(
        store.resolve("nope"),
        Err(StorageError::NoSuchImage(_))
    ));
    assert!(matches!(
        store.tag("top", "base"),
        Err(StorageError::TagExists { .. })
    ));
    assert!(matches!(
        store.tag("top", "a/b"),
        Err(StorageError::InvalidName { .. })
    ));
    store.tag("top", "latest").unwrap();
    store.tag("top", "latest").unwrap();
    assert_eq!(
        store.inspect("latest").unwrap().names,
        vec!["latest".to_owned(), "top".to_owned()]
    );
    assert_eq!(store.untag("latest").unwrap(), top);
    assert!(matches!(
        store.untag("latest"),
        Err(StorageError::NoSuchImage(_))
    ));
    // A re-import under a name taken by other content is refused, cleanly.
    let err = import_bytes(&store, tmp.path(), Some("top"), None, &layer).unwrap_err();
    assert!(matches!(err, StorageError::TagExists { .. }), "{err}");
    assert!(leftovers(&state).is_empty());

    let info = store.inspect("top").unwrap();
    assert_eq!(info.chain, vec![top.clone(), mid.clone(), base.clone()]);
    assert_eq!(info.total_size, store.inspect("base").unwrap().size + 6 + 4);
    assert_eq!(store.inspect("base").unwrap().children, vec![mid.clone()]);

    // In use: a child, a writable layer, a definition.
    let err = store.remove("base", &[]).unwrap_err();
    assert!(
        matches!(&err, StorageError::ImageInUse { children, .. } if *children == vec![mid.clone()]),
        "{err}"
    );
    store.prepare("top", "web").unwrap();
    let err = store.remove("top", &[]).unwrap_err();
    assert!(
        matches!(&err, StorageError::ImageInUse { domains, .. } if *domains == vec!["web".to_owned()]),
        "{err}"
    );
    assert!(err.to_string().contains("by domain(s) web"), "{err}");
    assert!(store.inspect("top").unwrap().domains == vec!["web".to_owned()]);
    assert!(store.remove_writable("web").unwrap());
    assert!(!store.remove_writable("web").unwrap());
    let err = store.remove("top", &["db".to_owned()]).unwrap_err();
    assert!(
        matches!(&err, StorageError::ImageInUse { domains, .. } if *domains == vec!["db".to_owned()])
    );

    // Removing the top takes the unnamed middle layer with it, not the base.
    assert_eq!(
        store.remove("top", &[]).unwrap(),
        vec![top.clone(), mid.clone()]
    );
    assert_eq!(
        store
            .list()
            .unwrap()
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>(),
        vec![base.clone()]
    );
    drop(store);

    // A crash mid-import leaves a .tmp-* dir; open removes and reports it.
    fs::create_dir_all(state.join("images/.tmp-import-dead/layer/etc")).unwrap();
    fs::create_dir_all(state.join("containers/.tmp-web-dead/upper")).unwrap();
    let (store, report) = Store::open(&state, overlay_backend(tmp.path())).unwrap();
    assert_eq!(report.removed.len(), 2);
    assert!(leftovers(&state).is_empty());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn writable_layers_prepare_commit_and_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = new_store(tmp.path());
    let base = import_bytes(&store, tmp.path(), Some("base"), None, &rootfs_tar())
        .unwrap()
        .id;
    let RootMount::Overlay(mount) = store.prepare("base", "web").unwrap() else {
        panic!("not an overlay")
    };
    assert_eq!(mount.lowerdir, vec![store.layer_dir(&base)]);
    assert_eq!(mount.upperdir, state.join("containers/web/upper"));
    assert!(mount.workdir.is_dir() && mount.target.is_dir());
    // Again: the same layer, its content kept.
    fs::write(mount.upperdir.join("kept"), b"1").unwrap();
    let RootMount::Overlay(again) = store.prepare(base.as_str(), "web").unwrap() else {
        panic!("not an overlay")
    };
    assert_eq!(again, mount);
    assert!(again.upperdir.join("kept").exists());
    assert!(matches!(
        store.prepare("base", "../x"),
        Err(StorageError::InvalidDomain { .. })
    ));
    assert!(matches!(
        store.commit("nobody", "x", &mut |_| {}),
        Err(StorageError::NoWritableLayer(_))
    ));

    // Changes as overlay writes them: files, a symlink, a hard link pair.
    let upper = &mount.upperdir;
    fs::create_dir_all(upper.join("srv/data")).unwrap();
    fs::write(upper.join("srv/data/a"), vec![1u8; 100_000]).unwrap();
    fs::hard_link(upper.join("srv/data/a"), upper.join("srv/data/b")).unwrap();
    symlink("/srv/data/a", upper.join("srv/link")).unwrap();
    fs::set_permissions(upper.join("srv/data"), fs::Permissions::from_mode(0o750)).unwrap();
    if is_root() {
        nix::sys::stat::mknod(
            &upper.join("kept-gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::create_dir(upper.join("etc")).unwrap();
        super::sys::fsetxattr(
            std::os::fd::AsFd::as_fd(&fs::File::open(upper.join("etc")).unwrap()),
            "trusted.overlay.opaque".as_ref(),
            b"y",
        )
        .unwrap();
        super::sys::fsetxattr(
            std::os::fd::AsFd::as_fd(&fs::File::open(upper.join("srv")).unwrap()),
            "trusted.overlay.origin".as_ref(),
            b"\x00\xfb",
        )
        .unwrap();
    }
    let mut seen = 0;
    let report = store
        .commit("web", "web-snap", &mut |p| seen = p.done)
        .unwrap();
    assert_eq!(report.parent, base);
    assert_eq!(report.size, 100_000 + 1);
    assert_eq!(seen, report.size);
    let info = store.inspect("web-snap").unwrap();
    assert_eq!(info.chain, vec![report.id.clone(), base.clone()]);
    assert_eq!(
        info.source,
        Source::Commit {
            domain: "web".into()
        }
    );
    let layer = store.layer_dir(&report.id);
    assert_eq!(fs::read(layer.join("srv/data/b")).unwrap().len(), 100_000);
    assert_eq!(
        fs::metadata(layer.join("srv/data/a")).unwrap().ino(),
        fs::metadata(layer.join("srv/data/b")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(layer.join("srv/link")).unwrap(),
        Path::new("/srv/data/a")
    );
    assert_eq!(
        fs::metadata(layer.join("srv/data"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    if is_root() {
        assert_eq!(
            fs::symlink_metadata(layer.join("kept-gone"))
                .unwrap()
                .rdev(),
            0
        );
        assert_eq!(
            super::sys::lgetxattr(&layer.join("etc"), "trusted.overlay.opaque".as_ref())
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            super::sys::lgetxattr(&layer.join("srv"), "trusted.overlay.origin".as_ref()).unwrap(),
            None
        );
        // metacopy or redirect in the upper dir: refused, nothing left.
        super::sys::fsetxattr(
            std::os::fd::AsFd::as_fd(&fs::File::open(upper.join("srv")).unwrap()),
            "trusted.overlay.redirect".as_ref(),
            b"/old",
        )
        .unwrap();
        let err = store.commit("web", "web-bad", &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, StorageError::UnsupportedOverlay { .. }),
            "{err}"
        );
        assert!(leftovers(&state).is_empty());
    }
    // The committed name is taken now; the domain still sits on the base.
    assert!(matches!(
        store.commit("web", "web-snap", &mut |_| {}),
        Err(StorageError::TagExists { .. })
    ));
    let err = store.prepare("web-snap", "web").unwrap_err();
    assert!(
        matches!(err, StorageError::WritableLayerMismatch { .. }),
        "{err}"
    );
    // A container on the committed image sees both layers.
    let RootMount::Overlay(db) = store.prepare("web-snap", "db").unwrap() else {
        panic!("not an overlay")
    };
    assert_eq!(db.lowerdir, vec![layer.clone(), store.layer_dir(&base)]);
}

#[test]
fn unavailable_backend_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dm = DeviceMapper::new(crate::storage::thin::ThinConfig {
        control: tmp.path().join("no-control"),
        ..Default::default()
    });
    let err = Store::open(&tmp.path().join("state"), Box::new(dm)).unwrap_err();
    assert!(
        matches!(err, StorageError::BackendUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("use the overlay backend"), "{err}");
}

#[test]
fn state_files_of_another_version_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let id = import_bytes(&store, tmp.path(), Some("base"), None, &rootfs_tar())
        .unwrap()
        .id;
    let path = tmp
        .path()
        .join("state/images")
        .join(id.as_str())
        .join("meta.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 2");
    fs::write(&path, text).unwrap();
    let err = store.inspect("base").unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::State(crate::persist::PersistError::Newer {
                found: 2,
                supported: 1,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn progress_is_reported_in_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let mut tar = tar::Builder::new(Vec::new());
    let big: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    file(&mut tar, "big", &big, 0o644);
    let bytes = tar.into_inner().unwrap();
    let path = write(tmp.path(), "big.tar", &bytes);
    let mut reports = Vec::new();
    store
        .import_tarball(&path, &ImportOptions::default(), &mut |p| reports.push(p))
        .unwrap();
    assert!(reports.len() >= 2, "{reports:?}");
    let last = reports.last().unwrap();
    assert_eq!(
        (last.done, last.total),
        (bytes.len() as u64, bytes.len() as u64)
    );
    assert!(reports.windows(2).all(|w| w[0].done < w[1].done));
    let _ = Cursor::new(Vec::<u8>::new());
}

/// The copy buffer grows with the files met: each file's content comes
/// out whole whatever the sizes before it (empty, small, one over the
/// largest buffer, small again).
#[test]
fn files_of_every_size_come_out_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let sizes = [0usize, 1, 5_000, 300_000, 700_001, 10, 0];
    let content = |n: usize, seed: u32| -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    };
    let mut tar = tar::Builder::new(Vec::new());
    for (i, size) in sizes.iter().enumerate() {
        file(&mut tar, &format!("f{i}"), &content(*size, i as u32), 0o644);
    }
    let path = write(tmp.path(), "sizes.tar", &tar.into_inner().unwrap());
    let report = store
        .import_tarball(&path, &ImportOptions::default(), &mut |_| {})
        .unwrap();
    let layer = store.layer_dir(&report.id);
    for (i, size) in sizes.iter().enumerate() {
        let found = fs::read(layer.join(format!("f{i}"))).unwrap();
        assert!(
            found == content(*size, i as u32),
            "f{i}: {} bytes of {size}",
            found.len()
        );
    }
}

/// Writes an OCI image layout with `layers` (uncompressed tars, bottom
/// first, stored with `compression`) under the name `reference`.
fn oci_layout(
    dir: &Path,
    layers: &[Vec<u8>],
    compression: Compression,
    reference: &str,
) -> PathBuf {
    use super::id::sha256_hex;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| -> (String, u64) {
        let digest = sha256_hex(bytes);
        fs::write(blobs.join(&digest), bytes).unwrap();
        (format!("sha256:{digest}"), bytes.len() as u64)
    };
    let media = match compression {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(layer)));
        let (digest, size) = blob(&compress(layer, compression));
        descriptors.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = blob(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    });
    let (manifest_digest, manifest_size) = blob(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(
        dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    dir.to_owned()
}

fn oci_layers() -> Vec<Vec<u8>> {
    let mut top = tar::Builder::new(Vec::new());
    file(&mut top, "etc/.wh.passwd", b"", 0o644);
    dir_entry(&mut top, "etc/ro/", 0o755);
    file(&mut top, "etc/ro/.wh..wh..opq", b"", 0o644);
    file(&mut top, "etc/ro/fresh", b"fresh", 0o644);
    file(&mut top, "etc/motd", b"from the top layer\n", 0o644);
    vec![rootfs_tar(), top.into_inner().unwrap()]
}

#[test]
fn oci_import_makes_a_chain_and_verifies_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let layout = oci_layout(
        &tmp.path().join("oci"),
        &oci_layers(),
        Compression::Gzip,
        "v1",
    );
    let options = OciImportOptions {
        name: Some("app".into()),
        ..Default::default()
    };
    let report = store.import_oci(&layout, &options, &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 2);
    assert!(report.layers.iter().all(|(_, present)| !present));
    let info = store.inspect("app").unwrap();
    assert_eq!(info.chain.len(), 2);
    assert_eq!(info.chain[1], report.layers[0].0);
    assert_eq!(info.config.as_ref().unwrap()["config"]["Cmd"][0], "/bin/sh");
    assert!(matches!(&info.source, Source::Oci { layer, .. } if layer.starts_with("sha256:")));
    // The bottom layer's id is its diff_id: the same as the tarball import.
    let bottom = store.inspect(report.layers[0].0.as_str()).unwrap();
    assert_eq!(bottom.id.as_str(), bottom.diff_id.as_deref().unwrap());
    assert!(bottom.config.is_none());
    if is_root() {
        let top = store.layer_dir(&report.id);
        assert_eq!(
            fs::symlink_metadata(top.join("etc/passwd")).unwrap().rdev(),
            0
        );
        assert!(
            super::sys::lgetxattr(&top.join("etc/ro"), "trusted.overlay.opaque".as_ref())
                .unwrap()
                .is_some()
        );
    }
    // Again, by name: everything is reused.
    let again = store
        .import_oci(
            &layout,
            &OciImportOptions {
                reference: Some("v1".into()),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert!(again.layers.iter().all(|(_, present)| *present));
    assert_eq!(again.id, report.id);
    let err = store
        .import_oci(
            &layout,
            &OciImportOptions {
                reference: Some("v2".into()),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Oci { problem: OciProblem::NoManifest(m), .. } if m.contains("names: v1")),
        "{err}"
    );
    // Removing the top removes the whole unnamed chain.
    assert_eq!(store.remove("app", &[]).unwrap().len(), 2);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn corrupt_oci_layouts_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = new_store(tmp.path());
    let fresh = |name: &str| {
        oci_layout(
            &tmp.path().join(name),
            &oci_layers(),
            Compression::Zstd,
            "v1",
        )
    };
    let blob_of = |layout: &Path, index: usize| -> PathBuf {
        let index_json: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index_json["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", "");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(digest)).unwrap())
                .unwrap();
        let layer = manifest["layers"][index]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", "");
        layout.join("blobs/sha256").join(layer)
    };
    let import =
        |layout: &Path| store.import_oci(layout, &OciImportOptions::default(), &mut |_| {});

    // A flipped byte in the top layer: digest mismatch, bottom not installed.
    let layout = fresh("flipped");
    let blob = blob_of(&layout, 1);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let err = import(&layout).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::Oci {
                problem: OciProblem::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("is corrupt"), "{err}");

    // Truncated: size mismatch.
    let layout = fresh("short");
    let blob = blob_of(&layout, 0);
    let bytes = fs::read(&blob).unwrap();
    fs::write(&blob, &bytes[..bytes.len() - 1]).unwrap();
    let err = import(&layout).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::Oci {
                problem: OciProblem::SizeMismatch { .. },
                ..
            }
        ),
        "{err}"
    );

    // Missing blob; a blob replaced by a symlink to a file outside.
    let layout = fresh("missing");
    fs::remove_file(blob_of(&layout, 1)).unwrap();
    let err = import(&layout).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::Oci {
                problem: OciProblem::Missing(_),
                ..
            }
        ),
        "{err}"
    );
    let layout = fresh("symlinked");
    let blob = blob_of(&layout, 0);
    let outside = tmp.path().join("outside-blob");
    fs::rename(&blob, &outside).unwrap();
    symlink(&outside, &blob).unwrap();
    let err = import(&layout).unwrap_err();
    assert!(
        matches!(&err, StorageError::Oci { problem: OciProblem::Malformed(m), .. } if m.contains("symbolic link")),
        "{err}"
    );

    // A config whose diff_id does not match the layer (digests all right).
    let mut layers = oci_layers();
    let real_top = layers[1].clone();
    let mut fake = tar::Builder::new(Vec::new());
    file(&mut fake, "fake", b"the config's idea of the layer", 0o644);
    layers[1] = fake.into_inner().unwrap();
    let layout = oci_layout(&tmp.path().join("diffid"), &layers, Compression::None, "v1");
    // Swap the top blob for other (valid, hashed) content under the same
    // descriptor: rewrite the manifest so the digests match but diff_ids lie.
    let blob = blob_of(&layout, 1);
    fs::write(&blob, &real_top).unwrap();
    let digest = super::id::sha256_hex(&real_top);
    let new_blob = layout.join("blobs/sha256").join(&digest);
    fs::rename(&blob, &new_blob).unwrap();
    let index_json: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_path = layout.join("blobs/sha256").join(
        index_json["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", ""),
    );
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    manifest["layers"][1]["digest"] = format!("sha256:{digest}").into();
    manifest["layers"][1]["size"] = real_top.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = super::id::sha256_hex(&manifest_bytes);
    fs::write(
        layout.join("blobs/sha256").join(&manifest_digest),
        &manifest_bytes,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{manifest_digest}"), "size": manifest_bytes.len()}]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let err = import(&layout).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::Oci {
                problem: OciProblem::DiffIdMismatch { .. },
                ..
            }
        ),
        "{err}"
    );

    // Not a layout at all.
    let err = import(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Oci { problem: OciProblem::Missing(m), .. } if m == "oci-layout"),
        "{err}"
    );

    assert!(leftovers(&state).is_empty());
    assert!(
        store.list().unwrap().is_empty(),
        "nothing installed: {:?}",
        store.list().unwrap()
    );
}
