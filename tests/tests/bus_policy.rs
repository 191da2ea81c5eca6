//! lxvirt's bus policy file, loaded by a real dbus-daemon: anyone may read,
//! only root (and group lxvirt) may change anything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

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

    // Refused by the bus itself: the policy does not let uid 65534 send DefineXML.
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
        stderr.contains("denied") || stderr.contains("Access"),
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
        (TestBus::start().unwrap(), "denied"),
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
    for (bus, denied) in [
        (TestBus::start().unwrap(), ["denied"; 3]),
        (
            TestBus::start_open().unwrap(),
            [
                "uid 65534 may not define networks",
                "uid 65534 may not undefine networks",
                // busctl prints the error name of a refused Set only.
                "Access denied",
            ],
        ),
    ] {
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
