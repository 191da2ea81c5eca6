//! Entry points of the fuzz targets (`fuzz/`, cargo fuzz) into the
//! daemon's parsers of outside input, with what each must hold. Built
//! only with the `fuzzing` feature; each one takes the fuzzer's bytes and
//! panics on a broken property.

use crate::seccomp::interp::{Call, run};
use crate::seccomp::{Action, PERSONALITIES, Policy};
use crate::security::detect::{
    BaseLabels, parse_lxc_contexts, parse_policy_type, parse_virtual_contexts,
};

/// Every versioned state file lxvirtd reads: corrupt, truncated, hostile
/// or from another version, it is refused with an error or read, never a
/// panic; what is read is written and read back.
pub fn state_files(bytes: &[u8]) {
    use crate::persist::fuzz_round_trip as round_trip;
    round_trip::<crate::core::live::LiveStatus>(bytes);
    round_trip::<crate::core::live::NetworkStatus>(bytes);
    round_trip::<crate::lxc::protocol::ExitRecord>(bytes);
    round_trip::<crate::net::ports::PortRecord>(bytes);
    round_trip::<crate::qemu::disks::Given>(bytes);
    crate::storage::fuzz_state_files(bytes);
    crate::security::userns::fuzz_state_files(bytes);
    crate::qemu::fuzz_state_files(bytes);
}

/// An archive imported into a scratch store, as `ImportTarball` takes
/// one from any caller allowed to import: refused with an error or
/// imported, never a panic; nothing is written outside the store's
/// directory (a canary beside it stays as it was); a refused archive
/// leaves no image and no scratch directory; an imported one is listed
/// with its layer.
pub fn tar_import(bytes: &[u8]) {
    use crate::storage::{DevicePolicy, ImportOptions};

    let _ = scratch_import(|store, top| {
        let archive = top.join("archive");
        std::fs::write(&archive, bytes).unwrap_or_else(|e| panic!("{e}"));
        let options = ImportOptions {
            name: Some("fuzzed".into()),
            parent: None,
            devices: DevicePolicy::Refuse,
        };
        let file = std::fs::File::open(&archive).unwrap_or_else(|e| panic!("{e}"));
        store
            .import_tarball_file(file, &archive, &options, &mut |_| {})
            .map(|report| report.id)
    });
}

/// Between the parts of an [`oci_import`] input.
pub const OCI_PART_SEPARATOR: &[u8] = b"\n--\n";

/// An OCI image layout imported into a scratch store, as `ImportOCI`
/// takes one: with the same properties as [`tar_import`]. The input is up
/// to four parts split by [`OCI_PART_SEPARATOR`]: `index.json`, then three
/// blobs (a manifest, a config, a layer, say), each stored under its own
/// digest. In a part, `@N` stands for the sha256 of a later part N and
/// `#N` for its size, so that the fuzzer reaches past the digest checks.
pub fn oci_import(bytes: &[u8]) {
    let _ = oci_layout_import(bytes);
}

/// [`oci_import`], with the import's result (`None`: no scratch directory).
fn oci_layout_import(bytes: &[u8]) -> Option<crate::storage::Result<crate::storage::ImageId>> {
    use crate::storage::{DevicePolicy, OciImportOptions, sha256_hex};

    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut rest = bytes;
    while parts.len() < 3 {
        let Some(at) = rest
            .windows(OCI_PART_SEPARATOR.len())
            .position(|w| w == OCI_PART_SEPARATOR)
        else {
            break;
        };
        parts.push(rest[..at].to_vec());
        rest = &rest[at + OCI_PART_SEPARATOR.len()..];
    }
    parts.push(rest.to_vec());
    // Resolved from the last part to the first: a part's tokens name the
    // parts after it (the index names the manifest, which names the config
    // and the layer), whose final bytes are known by then.
    let mut resolved: Vec<Vec<u8>> = vec![Vec::new(); parts.len()];
    let mut digests: Vec<String> = vec![String::new(); parts.len()];
    for n in (0..parts.len()).rev() {
        let part = &parts[n];
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            let later = part
                .get(i + 1)
                .and_then(|d| (*d as char).to_digit(10))
                .map(|m| m as usize)
                .filter(|m| *m > n && *m < parts.len());
            match (part[i], later) {
                (b'@', Some(m)) => out.extend_from_slice(digests[m].as_bytes()),
                (b'#', Some(m)) => out.extend_from_slice(resolved[m].len().to_string().as_bytes()),
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        digests[n] = sha256_hex(&out);
        resolved[n] = out;
    }
    scratch_import(|store, top| {
        let layout = top.join("layout");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for (n, part) in resolved.iter().enumerate() {
            let path = if n == 0 {
                layout.join("index.json")
            } else {
                blobs.join(&digests[n])
            };
            std::fs::write(path, part).unwrap_or_else(|e| panic!("{e}"));
        }
        let options = OciImportOptions {
            reference: None,
            name: Some("fuzzed".into()),
            devices: DevicePolicy::Refuse,
        };
        store
            .import_oci(&layout, &options, &mut |_| {})
            .map(|report| report.id)
    })
}

/// Runs `import` against a scratch store beside a canary directory and
/// checks what [`tar_import`] promises: nothing written beside the store,
/// nothing left of a refused import, an imported image listed with its
/// layer. `import` gets the store and the scratch directory, where it may
/// put its input first.
fn scratch_import(
    import: impl FnOnce(
        &crate::storage::Store,
        &std::path::Path,
    ) -> crate::storage::Result<crate::storage::ImageId>,
) -> Option<crate::storage::Result<crate::storage::ImageId>> {
    use std::fs;

    use crate::storage::{Overlay, Store};

    let Ok(scratch) = tempfile::tempdir() else {
        return None;
    };
    let top = scratch.path();
    let canary = top.join("outside");
    fs::create_dir(&canary).unwrap_or_else(|e| panic!("{e}"));
    fs::write(canary.join("file"), "canary").unwrap_or_else(|e| panic!("{e}"));
    let filesystems = top.join("filesystems");
    fs::write(&filesystems, "nodev\toverlay\n").unwrap_or_else(|e| panic!("{e}"));
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let (store, _) = Store::open(&top.join("state"), Box::new(Overlay::new(filesystems)))
        .unwrap_or_else(|e| panic!("a scratch store: {e}"));
    let input = tempfile::tempdir_in(top).unwrap_or_else(|e| panic!("{e}"));
    let before = listing(top);
    let imported = import(&store, input.path());
    assert_eq!(listing(top), before, "an import wrote beside the store");
    assert_eq!(
        listing(&canary),
        ["file"],
        "an import wrote into the canary"
    );
    assert_eq!(
        fs::read_to_string(canary.join("file")).ok().as_deref(),
        Some("canary"),
        "an import changed a file outside the store"
    );
    let images = store
        .list()
        .unwrap_or_else(|e| panic!("the store after an import: {e}"));
    let on_disk = listing(&top.join("state/images"));
    match &imported {
        Ok(id) => {
            assert!(
                images.iter().any(|i| i.id == *id),
                "an imported image is not listed"
            );
            for image in &images {
                let layer = top
                    .join("state/images")
                    .join(image.id.as_str())
                    .join("layer");
                assert!(
                    layer.is_dir(),
                    "image {} is listed without its layer",
                    image.id
                );
            }
        }
        Err(_) => {
            assert!(images.is_empty(), "a refused import left an image");
            assert!(
                on_disk
                    .iter()
                    .all(|n| !n.to_string_lossy().starts_with(".tmp")),
                "a refused import left scratch work: {on_disk:?}"
            );
        }
    }
    Some(imported)
}

/// A message between the daemon and a monitor, as either side decodes
/// it: any bytes give a message or an error.
pub fn monitor_messages(bytes: &[u8]) {
    use crate::lxc::protocol::{LaunchReport, Reply, Request};
    let _ = serde_json::from_slice::<Request>(bytes);
    let _ = serde_json::from_slice::<Reply>(bytes);
    let _ = serde_json::from_slice::<LaunchReport>(bytes);
    if let Ok(request) = serde_json::from_slice::<Request>(bytes) {
        let written = serde_json::to_vec(&request).unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<Request>(&written).ok(),
            Some(request),
            "a request read and written does not read back"
        );
    }
}

/// SELinux's configuration files lxvirtd reads: `lxc_contexts`, the
/// virtual domain and image contexts, `/etc/selinux/config`. Whatever the
/// text, each label comes out a context, or the default.
pub fn selinux_config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let defaults = BaseLabels::default();
    let base = parse_lxc_contexts(text, &defaults);
    for label in [&base.process, &base.file, &base.content] {
        assert!(crate::domain::is_context(label), "not a context: {label:?}");
    }
    let (split_at, _) = text.char_indices().nth(text.len() / 2).unwrap_or((0, ' '));
    let (domain, image) = text.split_at(split_at);
    let (vm, tcg) = parse_virtual_contexts(domain, image);
    for label in [&vm.process, &vm.file, &vm.content, &tcg] {
        assert!(crate::domain::is_context(label), "not a context: {label:?}");
    }
    if let Some(policy) = parse_policy_type(text) {
        assert!(!policy.is_empty() && !policy.contains('/'), "{policy:?}");
    }
}

/// The seccomp compiler: for a policy of random additions, the program
/// the interpreter runs gives, for random calls, what the policy says
/// (checked against the policy's own table, not the program's shape).
pub fn seccomp(bytes: &[u8]) {
    let mut words = bytes
        .chunks(4)
        .map(|c| c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)));
    let Some(head) = words.next() else {
        return;
    };
    let deny_mount = head & 1 == 1;
    let additions = ((head >> 1) % 48) as usize;
    let names: Vec<String> = words
        .by_ref()
        .take(additions)
        .filter_map(|w| crate::seccomp::syscall_name(w % 512))
        .map(str::to_owned)
        .collect();
    let policy =
        Policy::new(deny_mount, &names).unwrap_or_else(|e| panic!("known names refused: {e}"));
    let program = policy
        .program()
        .unwrap_or_else(|e| panic!("a policy does not compile: {e}"));
    let rules = policy.rules();
    let native = crate::seccomp::native_audit_arch();
    let personality = libc::SYS_personality as u32;
    while let (Some(nr), Some(arg)) = (words.next(), words.next()) {
        let arch = if nr & 0x8000_0000 != 0 && nr & 1 == 1 {
            nr.rotate_left(7)
        } else {
            native
        };
        let nr = if nr & 0x4000 != 0 { nr } else { nr % 512 };
        let mut call = Call::native(nr);
        call.arch = arch;
        call.args[0] = u64::from(arg) | (u64::from(nr) << 32);
        let expected = if arch != native {
            Action::KillProcess
        } else if crate::seccomp::x32_syscall_bit().is_some_and(|bit| nr >= bit) {
            Action::Errno(libc::ENOSYS as u16)
        } else if let Some(action) = rules.get(&nr) {
            *action
        } else if nr == personality && !PERSONALITIES.contains(&arg) {
            Action::Errno(libc::EPERM as u16)
        } else {
            Action::Allow
        };
        assert_eq!(
            run(&program, call),
            expected,
            "syscall {nr}, arch {arch:#x}, arg {arg:#x}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The layout the target builds from its input is one the store takes:
    /// the fuzzer starts past the digest checks, not stuck before them.
    #[test]
    fn the_oci_target_imports_its_valid_seeds_and_refuses_its_broken_ones() {
        for name in ["valid", "gzip-layer", "whiteouts"] {
            let result = oci_layout_import(&seed("oci_import", name)).expect("a scratch directory");
            assert!(result.is_ok(), "{name}: {result:?}");
        }
        for name in [
            "wrong-digest",
            "diff-id-mismatch",
            "path-in-digest",
            "escape",
        ] {
            let result = oci_layout_import(&seed("oci_import", name)).expect("a scratch directory");
            assert!(result.is_err(), "{name} was imported");
        }
    }
}
