//! lxvirt's bus policy file, loaded by a real dbus-daemon: anyone may call,
//! only root (and group lxvirt, and whom polkit allows) may change
//! anything, which lxvirtd decides for every call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use lxvirt_tests::dbus_fuzz::READ_METHODS;
use lxvirt_tests::{TestBus, TestDaemon, as_nobody, binary, repo_root, shared_tempdir};

fn busctl(address: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec![format!("--address={address}")];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all
}

fn as_nobody_busctl(address: &str, args: &[&str]) -> std::process::Output {
    let args = busctl(address, args);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    as_nobody(std::path::Path::new("/usr/bin/busctl"), &refs).unwrap()
}

#[tokio::test]
async fn unprivileged_callers_may_read_but_not_define() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let example = repo_root().join("xml-schemas/examples/lxc-app-hostroot.xml");
    let xml = std::fs::read_to_string(&example).unwrap();

    // The bus lets uid 65534 send DefineXML; lxvirtd refuses it.
    let out = as_nobody_busctl(
        &bus.address,
        &[
            "call",
            "org.lxvirt.lxvirt1",
            "/org/lxvirt/lxvirt1",
            "org.lxvirt.lxvirt1.Manager",
            "DefineXML",
            "s",
            &xml,
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uid 65534 may not define domains"),
        "{stderr}"
    );

    // Root defines; nobody may list, look up, read properties and XML.
    let root_out =
        lxvirt_tests::lxvirt(&bus.address, &["define", example.to_str().unwrap()]).unwrap();
    assert!(
        root_out.status.success(),
        "{}",
        String::from_utf8_lossy(&root_out.stderr)
    );
    let out = as_nobody_busctl(
        &bus.address,
        &[
            "call",
            "org.lxvirt.lxvirt1",
            "/org/lxvirt/lxvirt1",
            "org.lxvirt.lxvirt1.Manager",
            "ListDomains",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ao 1 "));

    let address = format!("--connect={}", bus.address);
    let lxvirt = binary("lxvirt");
    let out = as_nobody(&lxvirt, &[&address, "list", "--all"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("app-shell"));
    let out = as_nobody(&lxvirt, &[&address, "dumpxml", "app-shell"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Mutations through the CLI: refused, exit status 6, nothing changed.
    let out = as_nobody(&lxvirt, &[&address, "undefine", "app-shell"]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&lxvirt, &[&address, "autostart", "app-shell"]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&lxvirt, &[&address, "define", example.to_str().unwrap()]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.path().join("etc/domains/app-shell.xml").exists());
    assert!(!root.path().join("etc/autostart/app-shell").exists());

    // Nobody may not own the service name either.
    let out = as_nobody(
        std::path::Path::new("/usr/bin/dbus-send"),
        &[
            &format!("--bus={}", bus.address),
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:org.lxvirt.lxvirt1",
            "uint32:4",
        ],
    )
    .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_daemon_checks_callers_itself_on_an_open_bus() {
    let bus = TestBus::start_open().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let example = repo_root().join("xml-schemas/examples/lxc-app-hostroot.xml");
    let xml = std::fs::read_to_string(&example).unwrap();
    let out = as_nobody_busctl(
        &bus.address,
        &[
            "call",
            "org.lxvirt.lxvirt1",
            "/org/lxvirt/lxvirt1",
            "org.lxvirt.lxvirt1.Manager",
            "DefineXML",
            "s",
            &xml,
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uid 65534 may not define domains"),
        "{stderr}"
    );
    assert!(!root.path().join("etc/domains/app-shell.xml").exists());
    // Reading is still fine.
    let out = as_nobody_busctl(
        &bus.address,
        &[
            "call",
            "org.lxvirt.lxvirt1",
            "/org/lxvirt/lxvirt1",
            "org.lxvirt.lxvirt1.Manager",
            "ListDomains",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn images_may_be_listed_by_anyone_and_changed_by_admins_only() {
    for (bus, what) in [
        (TestBus::start().unwrap(), "uid 65534 may not remove images"),
        (
            TestBus::start_open().unwrap(),
            "uid 65534 may not remove images",
        ),
    ] {
        let root = shared_tempdir().unwrap();
        let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
        let images = |member: &str, args: &[&str]| {
            let mut all = vec![
                "call",
                "org.lxvirt.lxvirt1",
                "/org/lxvirt/lxvirt1",
                "org.lxvirt.lxvirt1.Images",
                member,
            ];
            all.extend_from_slice(args);
            as_nobody_busctl(&bus.address, &all)
        };
        let out = images("ListImages", &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = images("Remove", &["s", "busybox"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(what), "{stderr}");
        for (member, args) in [
            ("Tag", &["ss", "a", "b"][..]),
            ("Untag", &["s", "b"][..]),
            ("ImportOCI", &["sa{sv}", "/tmp", "0"][..]),
        ] {
            let out = images(member, args);
            assert!(!out.status.success(), "{member} allowed");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("denied") || stderr.contains("may not"),
                "{member}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn networks_may_be_read_by_anyone_and_changed_by_admins_only() {
    const LAN: &str = "<network><name>lan</name></network>";
    // busctl prints the error name of a refused Set only.
    let denied = [
        "uid 65534 may not define networks",
        "uid 65534 may not undefine networks",
        "Access denied",
    ];
    for bus in [TestBus::start().unwrap(), TestBus::start_open().unwrap()] {
        let root = shared_tempdir().unwrap();
        let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
        let manager = |member: &str, args: &[&str]| {
            let mut all = vec![
                "call",
                "org.lxvirt.lxvirt1",
                "/org/lxvirt/lxvirt1",
                "org.lxvirt.lxvirt1.Manager",
                member,
            ];
            all.extend_from_slice(args);
            busctl(&bus.address, &all)
        };
        // Root defines.
        let out = std::process::Command::new("busctl")
            .args(manager("NetworkDefineXML", &["s", LAN]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.trim().trim_start_matches("o ").trim_matches('"');
        let nobody = |args: Vec<String>| {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            as_nobody(std::path::Path::new("/usr/bin/busctl"), &refs).unwrap()
        };
        let network = |member: &str, args: &[&str]| {
            let mut all = vec![
                "call",
                "org.lxvirt.lxvirt1",
                path,
                "org.lxvirt.lxvirt1.Network",
                member,
            ];
            all.extend_from_slice(args);
            busctl(&bus.address, &all)
        };
        // Nobody lists, looks up and reads.
        for args in [
            manager("ListNetworks", &[]),
            manager("NetworkLookupByName", &["s", "lan"]),
            network("GetXML", &["u", "0"]),
            busctl(
                &bus.address,
                &[
                    "get-property",
                    "org.lxvirt.lxvirt1",
                    path,
                    "org.lxvirt.lxvirt1.Network",
                    "Bridge",
                ],
            ),
        ] {
            let out = nobody(args.clone());
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Nobody cannot define, undefine or mark for autostart.
        let set_autostart = busctl(
            &bus.address,
            &[
                "set-property",
                "org.lxvirt.lxvirt1",
                path,
                "org.lxvirt.lxvirt1.Network",
                "Autostart",
                "b",
                "true",
            ],
        );
        for (args, what) in [
            (manager("NetworkDefineXML", &["s", LAN]), denied[0]),
            (network("Undefine", &[]), denied[1]),
            (set_autostart, denied[2]),
        ] {
            let out = nobody(args.clone());
            assert!(!out.status.success(), "{args:?} allowed");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(what), "{args:?}: {stderr}");
        }
        // The same through the CLI: reading works, changing is exit 6.
        let address = format!("--connect={}", bus.address);
        let lxvirt = binary("lxvirt");
        for args in [&["net-list", "--all"][..], &["net-dumpxml", "lan"][..]] {
            let out = as_nobody(&lxvirt, &[&[address.as_str()][..], args].concat()).unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("lan"));
        }
        for args in [&["net-undefine", "lan"][..], &["net-autostart", "lan"][..]] {
            let out = as_nobody(&lxvirt, &[&[address.as_str()][..], args].concat()).unwrap();
            assert_eq!(
                out.status.code(),
                Some(6),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(root.path().join("etc/networks/lan.xml").exists());
        assert!(!root.path().join("etc/networks/autostart/lan").exists());
    }
}

/// A busctl argument for each D-Bus type of `signature` (empty arrays,
/// zeros, a string); `None` for a descriptor, which busctl cannot pass.
fn busctl_values(signature: &str) -> Option<Vec<String>> {
    let mut values = Vec::new();
    let mut chars = signature.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            's' => values.push("x".to_owned()),
            'o' => values.push("/org/lxvirt/lxvirt1".to_owned()),
            'b' => values.push("false".to_owned()),
            'y' | 'n' | 'q' | 'i' | 'u' | 'x' | 't' | 'd' => values.push("0".to_owned()),
            'v' => values.extend(["s".to_owned(), "x".to_owned()]),
            'h' => return None,
            'a' => {
                // Skip the element type; the array is empty.
                let mut depth = 0;
                while let Some(&next) = chars.peek() {
                    chars.next();
                    match next {
                        '(' | '{' => depth += 1,
                        ')' | '}' => depth -= 1,
                        'a' => continue,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                }
                values.push("0".to_owned());
            }
            other => panic!("type '{other}' of {signature}: add it to busctl_values"),
        }
    }
    Some(values)
}

/// Every method of the committed contract, called by uid 65534 with the
/// bus policy installed: the read methods answer (or fail for their
/// arguments), every other one is refused by lxvirtd, and nothing changed.
/// The bus lets every local user call, so this check is what keeps them
/// out: a new method that forgets it fails here.
#[tokio::test]
async fn every_method_that_changes_something_is_refused_to_other_users() {
    use lxvirtd::domain::xml::parse_str;
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let define = |member: &str, xml: &str| {
        let out = std::process::Command::new("busctl")
            .args(busctl(
                &bus.address,
                &[
                    "call",
                    "org.lxvirt.lxvirt1",
                    "/org/lxvirt/lxvirt1",
                    "org.lxvirt.lxvirt1.Manager",
                    member,
                    "s",
                    xml,
                ],
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout
            .trim()
            .trim_start_matches("o ")
            .trim_matches('"')
            .to_owned()
    };
    let domain = define(
        "DefineXML",
        "<domain type='lxc'><name>app</name><memory unit='MiB'>64</memory><os><type>exe</type><init>/bin/sh</init></os><devices><console type='pty'/></devices></domain>",
    );
    let network = define("NetworkDefineXML", "<network><name>lan</name></network>");
    let definitions = || {
        let mut files: Vec<String> = walk(&root.path().join("etc"));
        files.sort();
        files
    };
    let before = definitions();

    let contract = parse_str(&lxvirt_tests::without_doctype(
        lxvirtd::dbus::INTROSPECTION_XML,
    ))
    .unwrap();
    let (mut refused, mut read) = (0, 0);
    for interface in contract.elements_named("interface") {
        let name = interface.attr("name").unwrap();
        let path = match name {
            "org.lxvirt.lxvirt1.Domain" => domain.as_str(),
            "org.lxvirt.lxvirt1.Network" => network.as_str(),
            "org.lxvirt.lxvirt1.Collection" => continue,
            _ => "/org/lxvirt/lxvirt1",
        };
        for method in interface.elements_named("method") {
            let member = method.attr("name").unwrap();
            let signature: String = method
                .elements_named("arg")
                .filter(|a| a.attr("direction") == Some("in"))
                .map(|a| a.attr("type").unwrap())
                .collect();
            let Some(values) = busctl_values(&signature) else {
                continue;
            };
            let mut args = vec!["call", "org.lxvirt.lxvirt1", path, name, member];
            if !signature.is_empty() {
                args.push(&signature);
            }
            args.extend(values.iter().map(String::as_str));
            let out = as_nobody_busctl(&bus.address, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let full = format!("{name}.{member}");
            if READ_METHODS.contains(&full.as_str()) {
                assert!(!stderr.contains("may not"), "{full} refused: {stderr}");
                read += 1;
            } else {
                assert!(!out.status.success(), "{full} allowed to uid 65534");
                assert!(stderr.contains("uid 65534 may not"), "{full}: {stderr}");
                refused += 1;
            }
        }
    }
    assert_eq!(read, READ_METHODS.len());
    // 23 when written: every Manager, Images, Domain and Network method
    // that changes something, but those that pass descriptors.
    assert!(refused >= 23, "only {refused} methods refused");
    assert_eq!(definitions(), before, "uid 65534 changed a definition");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            let content = std::fs::read(&path).unwrap_or_default();
            files.push(format!("{} {}", path.display(), content.len()));
        }
    }
    files
}
