//! The `lxvirt` CLI against a real daemon, and its offline commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;

use lxvirt_tests::{
    TestBus, TestDaemon, example_files, lxvirt, network_example_files, repo_root, shared_tempdir,
};

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn define_list_info_dumpxml_autostart_undefine() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let a = bus.address.as_str();
    for file in example_files() {
        let out = lxvirt(a, &["define", file.to_str().unwrap()]).unwrap();
        assert!(out.status.success(), "{}: {:?}", file.display(), text(&out));
    }
    let out = lxvirt(a, &["list", "--all"]).unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.lines().next().unwrap().contains("Name"));
    for name in ["app-shell", "sys1", "everything", "vm-direct"] {
        assert!(stdout.contains(name), "{name} missing from\n{stdout}");
    }
    // Without --all only active domains are listed: none yet.
    let (stdout, _) = text(&lxvirt(a, &["list"]).unwrap());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // --name: the names alone, one a line, for scripts.
    let (stdout, _) = text(&lxvirt(a, &["list", "--all", "--name"]).unwrap());
    let names: Vec<&str> = stdout.lines().collect();
    assert_eq!(names.len(), example_files().len(), "{stdout}");
    assert!(
        names.contains(&"sys1") && !stdout.contains("Name"),
        "{stdout}"
    );
    let (stdout, _) = text(&lxvirt(a, &["list", "--name"]).unwrap());
    assert_eq!(stdout, "");

    let out = lxvirt(a, &["--output", "json", "list", "--all"]).unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), example_files().len());
    assert_eq!(rows[0]["state"], "shutoff");

    let out = lxvirt(a, &["-o", "json", "dominfo", "sys1"]).unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], "sys1");
    assert_eq!(info["type"], "lxc");
    // By uuid too.
    let uuid = info["uuid"].as_str().unwrap().to_owned();
    let (stdout, _) = text(&lxvirt(a, &["dominfo", &uuid]).unwrap());
    assert!(stdout.contains("sys1"), "{stdout}");
    // virsh's one-answer commands, for scripts.
    assert_eq!(
        text(&lxvirt(a, &["domuuid", "sys1"]).unwrap()).0,
        format!("{uuid}\n")
    );
    assert_eq!(text(&lxvirt(a, &["domname", &uuid]).unwrap()).0, "sys1\n");
    assert_eq!(
        text(&lxvirt(a, &["domstate", "sys1"]).unwrap()).0,
        "shutoff\n"
    );
    let (reason, _) = text(&lxvirt(a, &["domstate", "--reason", &uuid]).unwrap());
    assert!(
        reason.starts_with("shutoff (") && reason.ends_with(")\n"),
        "{reason}"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &lxvirt(a, &["-o", "json", "domstate", "sys1"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(state["state"], "shutoff");
    for args in [
        &["domstate", "nosuch"][..],
        &["domuuid", "nosuch"],
        &["domname", "00000000-0000-0000-0000-000000000001"],
        &["start", "nosuch"],
        &["destroy", "00000000-0000-0000-0000-000000000001"],
        &["shutdown", "nosuch"],
    ] {
        let out = lxvirt(a, args).unwrap();
        assert_eq!(out.status.code(), Some(5), "{args:?}: {:?}", text(&out));
    }

    let out = lxvirt(a, &["dumpxml", "sys1"]).unwrap();
    let dumped = root.path().join("sys1.xml");
    fs::write(&dumped, &out.stdout).unwrap();
    let out = lxvirt(a, &["define", dumped.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        lxvirt(a, &["dumpxml", "sys1"]).unwrap().stdout,
        fs::read(&dumped).unwrap()
    );

    let out = lxvirt(a, &["autostart", "sys1"]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(
        &lxvirt(a, &["-o", "json", "dominfo", "sys1"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(info["autostart"], true);
    assert!(
        lxvirt(a, &["autostart", "--disable", "sys1"])
            .unwrap()
            .status
            .success()
    );

    // A kvm domain where KVM cannot run a stock guest (this machine
    // kind): refused with the reason, before its network is looked at.
    if lxvirtd::qemu::host::kvm_unavailable(&lxvirtd::host::HostPaths::default()).is_some() {
        let out = lxvirt(a, &["start", "vm-direct"]).unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out).1.contains("KVM is not usable on this host"),
            "{:?}",
            text(&out)
        );
    }

    let out = lxvirt(a, &["undefine", "sys1"]).unwrap();
    assert!(out.status.success());
    let out = lxvirt(a, &["dominfo", "sys1"]).unwrap();
    assert_eq!(out.status.code(), Some(5));
    let (_, stderr) = text(&out);
    assert_eq!(stderr.lines().count(), 1, "one-line errors: {stderr}");

    let out = lxvirt(a, &["capabilities"]).unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.contains("<cgroups layout="), "{stdout}");
    assert!(stdout.contains("model='selinux'"), "{stdout}");
    assert!(
        stdout.contains("<domain type='lxc' available='yes'/>"),
        "{stdout}"
    );
}

#[test]
fn validate_names_file_line_and_problem() {
    let dir = shared_tempdir().unwrap();
    let broken = dir.path().join("broken.xml");
    fs::write(
        &broken,
        "<domain type='lxc'>\n  <name>b</name>\n  <memory>1024</memory>\n  <os>\n    <type>exe</type>\n  </os>\n</domain>\n",
    )
    .unwrap();
    let good = repo_root().join("xml-schemas/examples/lxc-app-hostroot.xml");
    // No daemon or bus needed: point at a bus that does not exist.
    let out = lxvirt(
        "unix:path=/nonexistent",
        &["validate", good.to_str().unwrap(), broken.to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!("{}: valid", good.display())),
        "{stdout}"
    );
    let expected = format!("{}:4:", broken.display());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&expected) && l.contains("init")),
        "{stdout}"
    );

    // Semantic errors (not expressible in the schema) are found too.
    fs::write(
        &broken,
        fs::read_to_string(repo_root().join("xml-schemas/examples/lxc-system-rootdir.xml"))
            .unwrap()
            .replace("<uid start='0'", "<uid start='5'"),
    )
    .unwrap();
    let out = lxvirt(
        "unix:path=/nonexistent",
        &["validate", broken.to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));

    for file in example_files() {
        let out = lxvirt(
            "unix:path=/nonexistent",
            &["validate", file.to_str().unwrap()],
        )
        .unwrap();
        assert!(out.status.success(), "{:?}", text(&out));
    }
}

#[test]
fn validate_tells_networks_from_domains() {
    let dir = shared_tempdir().unwrap();
    let offline = |files: &[&std::path::Path]| {
        let mut args = vec!["validate"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        lxvirt("unix:path=/nonexistent", &args).unwrap()
    };
    // Both kinds in one call, each judged by its own schema and parser.
    let networks = network_example_files();
    assert!(
        networks.len() >= 4,
        "network examples missing: {networks:?}"
    );
    let domain = repo_root().join("xml-schemas/examples/lxc-app-hostroot.xml");
    let mut all: Vec<&std::path::Path> = networks.iter().map(|p| p.as_path()).collect();
    all.push(&domain);
    let out = offline(&all);
    assert!(out.status.success(), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(": valid")).count(),
        all.len(),
        "{stdout}"
    );

    // A schema violation of a network, with its line.
    let broken = dir.path().join("net.xml");
    fs::write(
        &broken,
        "<network>\n  <name>n</name>\n  <forward mode='route'>\n    <nat/>\n  </forward>\n</network>\n",
    )
    .unwrap();
    let out = offline(&[&broken]);
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    assert!(
        stdout.starts_with(&format!("{}:4:5: /network/forward:", broken.display())),
        "{stdout}"
    );

    // A semantic error (not expressible in the schema).
    fs::write(
        &broken,
        fs::read_to_string(repo_root().join("xml-schemas/examples/network-default.xml"))
            .unwrap()
            .replace("end='10.213.0.254'", "end='10.213.1.254'"),
    )
    .unwrap();
    let out = offline(&[&broken]);
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("outside the subnet 10.213.0.0/24"),
        "{stdout}"
    );

    // Neither kind.
    fs::write(&broken, "<container/>\n").unwrap();
    let out = offline(&[&broken]);
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("lxvirt reads <domain> and <network> documents"),
        "{stdout}"
    );
}

#[tokio::test]
async fn net_define_list_info_dumpxml_autostart_undefine() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let a = bus.address.as_str();
    let files = network_example_files();
    assert!(files.len() >= 2, "network examples missing: {files:?}");
    for file in &files {
        let out = lxvirt(a, &["net-define", file.to_str().unwrap()]).unwrap();
        assert!(out.status.success(), "{}: {:?}", file.display(), text(&out));
        assert!(text(&out).0.starts_with("Network '"), "{:?}", text(&out));
    }
    // Networks cannot start yet: every one is inactive, so only --all
    // lists them.
    let (stdout, _) = text(&lxvirt(a, &["net-list"]).unwrap());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let (stdout, _) = text(&lxvirt(a, &["net-list", "--all"]).unwrap());
    let header = stdout.lines().next().unwrap();
    for column in ["Name", "State", "Autostart", "Persistent", "Bridge"] {
        assert!(header.contains(column), "{header}");
    }
    assert_eq!(stdout.lines().count(), files.len() + 1, "{stdout}");
    assert!(stdout.contains("inactive"), "{stdout}");
    // Networks are not domains.
    let (stdout, _) = text(&lxvirt(a, &["list", "--all"]).unwrap());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    let out = lxvirt(a, &["-o", "json", "net-list", "--all"]).unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), files.len());
    let name = rows[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(rows[0]["state"], "inactive");

    let out = lxvirt(a, &["-o", "json", "net-info", &name]).unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], name.as_str());
    assert!(!info["bridge"].as_str().unwrap().is_empty());
    // By uuid too.
    let uuid = info["uuid"].as_str().unwrap().to_owned();
    let (stdout, _) = text(&lxvirt(a, &["net-info", &uuid]).unwrap());
    assert!(
        stdout.contains(&format!("Name:           {name}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("Active:         no\n"), "{stdout}");

    // define → dumpxml → define is a fixed point.
    let out = lxvirt(a, &["net-dumpxml", &name]).unwrap();
    let dumped = root.path().join("net.xml");
    fs::write(&dumped, &out.stdout).unwrap();
    let out = lxvirt(a, &["net-define", dumped.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        lxvirt(a, &["net-dumpxml", &name]).unwrap().stdout,
        fs::read(&dumped).unwrap()
    );

    let out = lxvirt(a, &["net-autostart", &name]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        root.path()
            .join(format!("etc/networks/autostart/{name}"))
            .exists()
    );
    let out = lxvirt(a, &["-o", "json", "net-info", &name]).unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["autostart"], true);
    let out = lxvirt(a, &["net-autostart", "--disable", &name]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        !root
            .path()
            .join(format!("etc/networks/autostart/{name}"))
            .exists()
    );

    // The same file again under another name clashes on bridge or subnet.
    let clash = fs::read_to_string(&dumped)
        .unwrap()
        .replace(&format!("<name>{name}</name>"), "<name>clash</name>")
        .replace(&format!("<uuid>{uuid}</uuid>"), "");
    let clash_file = root.path().join("clash.xml");
    fs::write(&clash_file, clash).unwrap();
    let out = lxvirt(a, &["net-define", clash_file.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("'clash'") && stderr.contains(&format!("'{name}'")),
        "{stderr}"
    );

    // Exit codes as for domains: 4 bad XML, 5 no such network.
    let bad = root.path().join("bad.xml");
    fs::write(&bad, "<network><name>x</nam").unwrap();
    let out = lxvirt(a, &["net-define", bad.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));
    for args in [
        &["net-info", "nope"][..],
        &["net-dumpxml", "nope"][..],
        &["net-undefine", "nope"][..],
        &["net-autostart", "nope"][..],
    ] {
        let out = lxvirt(a, args).unwrap();
        assert_eq!(out.status.code(), Some(5), "{args:?}: {:?}", text(&out));
        assert!(text(&out).1.contains("net-list"), "{:?}", text(&out));
    }

    let out = lxvirt(a, &["net-undefine", &name]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        text(&out).0,
        format!("Network '{name}' has been undefined\n")
    );
    let (stdout, _) = text(&lxvirt(a, &["net-list", "--all"]).unwrap());
    assert_eq!(stdout.lines().count(), files.len(), "{stdout}");
}

#[test]
fn unreachable_bus_is_exit_3_with_advice() {
    let out = lxvirt("unix:path=/nonexistent/bus", &["list"]).unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).1.contains("cannot connect"), "{:?}", text(&out));
}

#[test]
fn completions_and_man_page_are_generated() {
    // The scripts call lxvirt back for the words.
    let out = lxvirt("unix:path=/nonexistent", &["completions", "bash"]).unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("-F _clap_complete_lxvirt lxvirt"),
        "{script}"
    );
    assert!(script.contains("COMPLETE=\"bash\""), "{script}");
    let out = lxvirt("unix:path=/nonexistent", &["completions", "fish"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("COMPLETE=fish lxvirt --"));
    let out = lxvirt("unix:path=/nonexistent", &["man"]).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH lxvirt"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("net\\-list"));
}

/// What `lxvirt` offers bash for the last of `words` (the command line
/// being typed), on the bus at `address`.
fn completions(address: &str, words: &[&str]) -> Vec<String> {
    let index = words.len().to_string();
    let out = std::process::Command::new(lxvirt_tests::binary("lxvirt"))
        .arg("--")
        .arg("lxvirt")
        .args(words)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", &index)
        .env("_CLAP_IFS", "\n")
        .env("LXVIRT_BUS_ADDRESS", address)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn completion_offers_commands_options_and_the_daemons_names() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let a = bus.address.as_str();
    define_sleeper(a, root.path(), "alpha");
    define_sleeper(a, root.path(), "albert");
    define_sleeper(a, root.path(), "beta");
    assert!(completions(a, &["sta"]).contains(&"start".to_owned()));
    // The names first (then the options, as clap offers them on nothing).
    assert_eq!(
        completions(a, &["start", ""])[..3],
        ["albert", "alpha", "beta"]
    );
    assert_eq!(completions(a, &["dominfo", "al"]), ["albert", "alpha"]);
    assert!(completions(a, &["shutdown", "--"]).contains(&"--mode".to_owned()));
    // No daemon: no names, and no error in the shell's face.
    let offline = completions("unix:path=/nonexistent", &["start", ""]);
    assert!(offline.iter().all(|w| w.starts_with('-')), "{offline:?}");
}

/// `lxvirt` with an environment of the test's (the editor).
fn lxvirt_with_env(address: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(lxvirt_tests::binary("lxvirt"));
    command
        .arg(format!("--connect={address}"))
        .args(args)
        .env_remove("VISUAL")
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// Defines a sleeper container `name` on `dir`/rootfs.
fn define_sleeper(address: &str, dir: &std::path::Path, name: &str) {
    let xml = dir.join(format!("{name}.xml"));
    fs::write(&xml, lxvirt_tests::sleeper_xml(name, &dir.join("rootfs"))).unwrap();
    let out = lxvirt(address, &["define", xml.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
}

/// `YYYY-MM-DD HH:MM:SS` at the start of `text`.
fn starts_with_utc_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 19
        && bytes[..19].iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b' ',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test]
async fn version_reports_client_and_daemon() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let out = lxvirt(&bus.address, &["version"]).unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!("lxvirt (client): {version}\nlxvirtd (daemon): {version}\n")
    );
    let out = lxvirt(&bus.address, &["-o", "json", "version"]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["daemon"], version);
    // No daemon: the client's version, and exit status 3 with the reason.
    let out = lxvirt("unix:path=/nonexistent/bus", &["version"]).unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stdout, format!("lxvirt (client): {version}\n"));
    assert!(stderr.contains("/nonexistent/bus"), "{stderr}");
}

#[tokio::test]
async fn edit_redefines_keeps_a_refused_edit_and_leaves_the_definition() {
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let a = bus.address.as_str();
    define_sleeper(a, root.path(), "ed");
    let dump = || lxvirt(a, &["dumpxml", "--inactive", "ed"]).unwrap().stdout;
    let before = dump();

    // Unchanged: nothing defined.
    let out = lxvirt_with_env(a, &["edit", "ed"], &[("EDITOR", "true")]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, "Domain 'ed' XML configuration not changed.\n");

    // A change, made by a scripted editor, is defined.
    let editor = root.path().join("editor");
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i -E \"s|<memory unit='KiB'>[0-9]+</memory>|<memory unit='MiB'>128</memory>|\" \"$1\"\n",
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = lxvirt_with_env(a, &["edit", "ed"], &[("EDITOR", editor.to_str().unwrap())]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, "Domain 'ed' XML configuration edited.\n");
    let after = String::from_utf8(dump()).unwrap();
    assert!(
        after.contains("<memory unit='KiB'>131072</memory>"),
        "{after}"
    );

    // Invalid XML: refused, the definition unchanged, the edit kept.
    let edited = dump();
    let out = lxvirt_with_env(
        a,
        &["edit", "ed"],
        &[(
            "VISUAL",
            "sh -c 'echo \"<domain type=lxc><name>ed\" > \"$1\"' sh",
        )],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(dump(), edited);
    let kept = stderr
        .split("your edit is kept in ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no kept file named in {stderr}"));
    assert!(
        fs::read_to_string(kept)
            .unwrap()
            .starts_with("<domain type=lxc><name>ed")
    );
    fs::remove_file(kept).unwrap();

    // A failing editor defines nothing.
    let out = lxvirt_with_env(a, &["edit", "ed"], &[("EDITOR", "false")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("the editor (false) failed"),
        "{:?}",
        text(&out)
    );
    assert_ne!(before, dump());
    assert_eq!(dump(), edited);
}

#[tokio::test]
async fn event_prints_lifecycle_events_and_dominfo_a_start_date() {
    if !lxvirt_tests::root_or_skip() {
        return;
    }
    let bus = TestBus::start().unwrap();
    let root = shared_tempdir().unwrap();
    lxvirt_tests::busybox_root(&root.path().join("rootfs"));
    let _daemon = TestDaemon::start(&bus, root.path()).await.unwrap();
    let a = bus.address.as_str();
    define_sleeper(a, root.path(), "ev");

    // Nothing happens within the timeout: the loop says so.
    let out = lxvirt(a, &["event", "--domain", "ev", "--timeout", "1"]).unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, "event loop timed out\nevents received: 0\n");

    let mut child = std::process::Command::new(lxvirt_tests::binary("lxvirt"))
        .args([&format!("--connect={a}"), "event", "--loop", "--timestamp"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_line = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap()
    };
    // Subscribed once an event of the probe domain arrives: define it
    // until one does.
    let mut first = None;
    for _ in 0..100 {
        define_sleeper(a, root.path(), "probe");
        if let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(100)) {
            first = Some(line);
            break;
        }
    }
    let first = first.expect("no event of the probe domain within 10 s");
    assert!(first.contains("for domain 'probe': Defined"), "{first}");
    while lines.try_recv().is_ok() {}

    assert!(lxvirt(a, &["start", "ev"]).unwrap().status.success());
    let started = next_line();
    assert!(starts_with_utc_time(&started), "{started}");
    assert!(
        started.ends_with(" UTC: event 'lifecycle' for domain 'ev': Started Booted"),
        "{started}"
    );
    let (state, _) = text(&lxvirt(a, &["domstate", "--reason", "ev"]).unwrap());
    assert_eq!(state, "running (booted)\n");
    let (info, _) = text(&lxvirt(a, &["dominfo", "ev"]).unwrap());
    let started_at = info
        .lines()
        .find_map(|l| l.strip_prefix("Started:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no Started line in\n{info}"));
    assert!(
        starts_with_utc_time(started_at)
            && started_at.contains(" UTC (")
            && started_at.ends_with(" s ago)"),
        "{started_at}"
    );
    assert!(lxvirt(a, &["destroy", "ev"]).unwrap().status.success());
    let stopped = next_line();
    assert!(
        stopped.ends_with("event 'lifecycle' for domain 'ev': Stopped Destroyed"),
        "{stopped}"
    );
    // By UUID, the messages name the domain.
    let (uuid, _) = text(&lxvirt(a, &["domuuid", "ev"]).unwrap());
    let uuid = uuid.trim();
    let out = lxvirt(a, &["start", uuid]).unwrap();
    assert_eq!(text(&out).0, "Domain 'ev' started\n", "{:?}", text(&out));
    let _ = next_line();
    let out = lxvirt(a, &["destroy", uuid]).unwrap();
    assert_eq!(text(&out).0, "Domain 'ev' destroyed\n", "{:?}", text(&out));
    let _ = next_line();
    // Refused by state, the message names it too.
    let out = lxvirt(a, &["destroy", "ev"]).unwrap();
    assert_eq!(out.status.code(), Some(7), "{:?}", text(&out));
    assert!(text(&out).1.contains("'ev'"), "{:?}", text(&out));

    // Ctrl-C ends the loop with the count.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(next_line(), "event loop interrupted");
    let count = next_line();
    let received: u32 = count
        .strip_prefix("events received: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(received >= 3, "{count}");
    assert!(child.wait().unwrap().success());
}
